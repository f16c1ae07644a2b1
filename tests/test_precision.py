"""Precision on every device students use (issue: Colab on a T4). The precision follows the compute capability,
never `torch.cuda.is_bf16_supported()` (true on a T4, where bf16 is only emulated); PRECISION forces it. The
fp16 path's gradient scaler skips an overflowed step without leaving SGD's momentum uninitialised. Checkpoints
resume across precisions, hold tensors and plain data only, and are set aside, never raised, when they do not fit.
The GPU half of these checks (`-m cuda`) runs the fp16 path on a real GPU with PRECISION="fp16"."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import helpers as H
from cifar10_resnet.store import ResultsStore
from conftest import RunsCode, a_recipe, interrupt_after_two_epochs, tiny_net

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen compute capability on a machine without one, as PyTorch reports it on a T4:
    is_bf16_supported() answers True there (since torch 2.3 it only checks that a bf16 tensor can be made)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)

    def gpu(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        return torch.device("cuda")

    return gpu


def test_a_t4_trains_in_fp16_with_a_gradient_scaler_on_the_eager_step(fake_gpu):
    engine = H.Engine.for_device(fake_gpu((7, 5)))
    assert engine.amp_dtype == torch.float16 and engine.precision == "float16"
    assert engine.why == "compute capability 7.5"
    assert engine.scaler().is_enabled()
    use_graph, path = engine.graph_plan()
    assert not use_graph and path == "eager (fp16 needs a gradient scaler, whose inf checks are not graph-safe)"


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0)])
def test_ampere_and_newer_train_in_bf16_with_the_cuda_graph(fake_gpu, capability):
    engine = H.Engine.for_device(fake_gpu(capability))
    assert engine.amp_dtype == torch.bfloat16 and not engine.scaler().is_enabled()
    assert engine.graph_plan() == (True, "cuda-graph")


def test_precision_parameter_forces_the_path(fake_gpu):
    h200 = fake_gpu((9, 0))
    forced = H.Engine.for_device(h200, precision="fp16")  # a T4's path, exercised on any CUDA GPU
    assert forced.amp_dtype == torch.float16 and forced.scaler().is_enabled()
    assert forced.why == "PRECISION='fp16'" and not forced.graph_plan()[0]
    fp32 = H.Engine.for_device(h200, precision="fp32")
    assert fp32.amp_dtype is None and fp32.precision == "float32" and not fp32.scaler().is_enabled()
    assert fp32.graph_plan() == (False, "eager (fp32: the graph is captured for bf16 only)")
    with pytest.warns(UserWarning, match="emulated"):
        H.Engine.for_device(fake_gpu((7, 5)), precision="bf16")
    with pytest.raises(ValueError, match="PRECISION"):
        H.Engine.for_device("cpu", precision="float16")


def test_the_cpu_trains_in_fp32():
    engine = H.Engine.for_device("cpu")
    assert engine.amp_dtype is None and engine.precision == "float32" and engine.why == "no CUDA device"


# --- a step skipped by the gradient scaler ------------------------------------------------------------------

class Gain(nn.Module):
    """Multiplies the logits by `gain`: infinity makes the loss and every gradient non-finite (an overflow)."""

    gain = 1.0

    def forward(self, x):
        return x * self.gain


def small_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10), Gain())


def fp16_steps(make_optimizer, overflow_first: bool, monkeypatch, device: str = "cpu") -> list[torch.Tensor]:
    """The project's fp16 step (the engine's autocast and scaler) on a fixed batch: with `overflow_first`, an
    overflowed step, then a normal one; otherwise the normal one alone. Memory that PyTorch leaves
    uninitialised (`empty_like`) is filled with NaN here, so that any read of it shows in the weights."""
    torch.manual_seed(0)
    model = small_net()
    engine = H.Engine.for_device(device, precision="fp16")
    engine.prepare(model)
    step = H.EagerStep(model, make_optimizer(engine, model), engine.scaler(), engine, a_recipe())
    scaler = step.scaler
    assert scaler.is_enabled()
    images = torch.randn(16, 3, 32, 32).to(device, memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (16,)).to(device)
    empty_like = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda t, *a, **k: empty_like(t, *a, **k).fill_(math.nan))
    if overflow_first:
        model[-1].gain = math.inf
        loss, _ = step(images, labels)
        assert not torch.isfinite(loss) and scaler.get_scale() < 2.0 ** 16  # skipped, the scale halved
        model[-1].gain = 1.0
    step(images, labels)
    monkeypatch.setattr(torch, "empty_like", empty_like)
    return [p.detach().float().cpu() for p in model.parameters()]


OPTIMIZERS = {
    "engine.optimizer": lambda engine, model: engine.optimizer(model.parameters(), lr=0.1, momentum=0.9,
                                                               nesterov=True, weight_decay=5e-4),
    # the fused kernel that CUDA uses, here on the CPU: it made its buffers with empty_like on its first step
    "fused sgd": lambda engine, model: H.sgd(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                             weight_decay=5e-4, fused=True),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_an_overflowed_first_step_leaves_the_weights_as_if_it_never_happened(name, monkeypatch):
    skipped = fp16_steps(OPTIMIZERS[name], True, monkeypatch)
    straight = fp16_steps(OPTIMIZERS[name], False, monkeypatch)
    assert all(torch.isfinite(w).all() for w in skipped)
    assert all(torch.equal(a, b) for a, b in zip(skipped, straight))


def test_momentum_buffers_exist_as_zeros_before_the_first_step():
    model = small_net()
    optimizer = H.Engine.for_device("cpu").optimizer(model.parameters(), lr=0.1, momentum=0.9)
    buffers = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert len(buffers) == len(list(model.parameters())) and all(not b.any() for b in buffers)


# --- checkpoints across precisions ----------------------------------------------------------------------------

CONFIG = {"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "cosine", "seed": 0}


def interrupted_run(store, tiny, precision, build=tiny_net) -> Path:
    """Two epochs of a three-epoch run in `precision`; returns its checkpoint."""
    return interrupt_after_two_epochs(build, CONFIG, tiny, H.Engine.for_device("cpu", precision=precision), store)


@pytest.mark.parametrize("before, after", [("bf16", "fp16"), ("fp16", "fp32")])
def test_a_checkpoint_resumes_in_another_precision(tiny, tmp_path, capsys, before, after):
    store = ResultsStore(tmp_path)
    checkpoint = interrupted_run(store, tiny, before)
    state = torch.load(checkpoint, weights_only=True)  # tensors and plain data only
    assert state["precision"] == H.Engine.for_device("cpu", precision=before).precision
    assert bool(state["scaler"]) == (before == "fp16")
    summary = H.run_experiment("m", CONFIG, tiny_net, tiny, H.Engine.for_device("cpu", precision=after), store)
    out = capsys.readouterr().out
    assert "resumed from" in out and "after epoch 2" in out
    written, now = (H.Engine.for_device("cpu", precision=p).precision for p in (before, after))
    assert f"(written in {written}, continuing in {now}" in out
    assert ("the gradient scaler starts fresh" in out) == (after == "fp16")
    assert summary["epochs_completed"] == 3 and not summary["diverged"] and summary["precision"] == now


def test_a_checkpoint_of_another_model_is_set_aside_and_the_run_starts_afresh(tiny, tmp_path):
    straight = ResultsStore(tmp_path / "straight")
    H.run_experiment("m", CONFIG, tiny_net, tiny, H.Engine.for_device("cpu"), straight)
    store = ResultsStore(tmp_path / "other")
    wider = lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),  # noqa: E731
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    checkpoint = interrupted_run(store, tiny, "fp32", build=wider)
    with pytest.warns(UserWarning, match="checkpoint does not fit this run"):
        summary = H.run_experiment("m", CONFIG, tiny_net, tiny, H.Engine.for_device("cpu"), store)
    assert checkpoint.with_name(checkpoint.name + ".corrupt").exists()
    assert summary["epochs_completed"] == 3
    a, b = straight.history("m"), store.history("m")
    assert a["train_loss"].tolist() == pytest.approx(b["train_loss"].tolist(), rel=1e-5)  # afresh: the same run


def test_a_checkpoint_that_would_run_code_is_never_unpickled(tiny, tmp_path):
    store = ResultsStore(tmp_path / "results")
    checkpoint = interrupted_run(store, tiny, "fp32")
    marker = tmp_path / "code ran"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "history": RunsCode(marker)}, checkpoint)
    with pytest.warns(UserWarning, match="checkpoint unreadable"):
        summary = H.run_experiment("m", CONFIG, tiny_net, tiny, H.Engine.for_device("cpu"), store)
    assert not marker.exists() and summary["epochs_completed"] == 3


# --- on a GPU, in fp16 (PRECISION="fp16": the T4's path on any CUDA GPU) ---------------------------------------

@pytest.mark.cuda
@cuda
def test_fp16_on_the_gpu_survives_an_overflowed_first_step(monkeypatch):
    """The T4 path on a real GPU (fused SGD on CUDA under the gradient scaler), an overflow first."""
    make = OPTIMIZERS["engine.optimizer"]
    skipped = fp16_steps(make, True, monkeypatch, "cuda")
    straight = fp16_steps(make, False, monkeypatch, "cuda")
    assert all(torch.isfinite(w).all() for w in skipped)
    # cuDNN may sum in another order from run to run: equal up to rounding
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(skipped, straight))


@pytest.mark.cuda
@cuda
def test_two_epochs_of_option2_in_fp16_learn_like_bf16(models, data):
    """Option 2 for two epochs on 10,000 images in fp16 (eager, gradient scaler) and in bf16 (CUDA graph):
    both learn, and to about the same validation accuracy."""
    small = H.Data(train=(data.train[0][:10000], data.train[1][:10000]), val=data.val, full=data.full,
                   test=data.test, mean=data.mean, std=data.std)
    config = {"epochs": 2, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "cosine", "seed": 0}
    runs = {}
    for precision in ("fp16", "bf16"):
        engine = H.Engine.for_device("cuda", precision=precision)
        train = H.Batches(small.train, 128, data.stats, "cuda", shuffle=True, augment=True)
        val = H.Batches(small.val, 1024, data.stats, "cuda")
        H.set_seed(0)
        runs[precision] = H.fit(models["option2"](), train, val, H.Recipe.of(config), engine)
    assert runs["fp16"].step_kind.startswith("eager (fp16") and runs["bf16"].step_kind == "cuda-graph"
    for run in runs.values():
        assert all(math.isfinite(row["train_loss"]) for row in run.history)
        assert run.history[-1]["val_acc"] > 0.35
    assert runs["fp16"].history[-1]["val_acc"] == pytest.approx(runs["bf16"].history[-1]["val_acc"], abs=0.08)
