"""The training engine: the fast path computes what a plain fp32 step computes, the per-epoch numbers are
right, and training on real data learns. (The results store is tested in test_store.py.)"""
import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import helpers as H
from conftest import ROOT, a_recipe, one_epoch


def plain_batches(x, y, mean, std, batch_size):
    """The reference pipeline: contiguous float32 tensors normalised on the CPU, in order."""
    for start in range(0, len(x), batch_size):
        images = (x[start:start + batch_size].float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        yield images, y[start:start + batch_size]


def test_fast_step_matches_plain_fp32_step(models, data):
    """bf16 autocast + channels_last (the path of Ampere/Hopper GPUs, here run on the CPU) against a plain fp32
    step on the same batch: same loss and gradients within mixed-precision tolerance. lr=0 so that the step
    leaves the weights as they were.

    Tolerance: at initialisation this network's gradient is very sensitive to rounding (ReLU and batch-norm
    boundaries; fp32 itself is about 0.5% off a float64 reference here), so bf16's 8-bit mantissa moves the
    individual entries by up to ~30% while the gradient keeps its direction and size."""
    images, labels = next(plain_batches(*data.train, data.mean, data.std, 128))
    reference = models["option1"]().train()
    fast = copy.deepcopy(reference)
    engine = H.Engine(device=torch.device("cpu"), amp_dtype=torch.bfloat16)
    engine.prepare(fast)
    optimizer = engine.optimizer(fast.parameters(), lr=0.0)
    step = H.EagerStep(fast, optimizer, engine.scaler(), engine, a_recipe())
    loss, logits = step(images.contiguous(memory_format=torch.channels_last), labels)
    plain_loss = F.cross_entropy(reference(images), labels)
    plain_loss.backward()
    assert loss.dtype == torch.float32 and logits.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(plain_loss.item(), rel=0.01)
    fast_grads = [p.grad.float() for p in fast.parameters()]
    plain_grads = [q.grad for q in reference.parameters()]
    flat_fast, flat_plain = torch.cat([g.flatten() for g in fast_grads]), torch.cat([g.flatten() for g in plain_grads])
    assert F.cosine_similarity(flat_fast, flat_plain, 0) > 0.95
    assert flat_fast.norm() == pytest.approx(flat_plain.norm().item(), rel=0.1)
    for g, h in zip(fast_grads, plain_grads):
        assert F.cosine_similarity(g.flatten(), h.flatten(), 0) > 0.8
    for p, q in zip(fast.parameters(), reference.parameters()):
        assert torch.equal(p.detach(), q.detach())


def test_engine_choice_follows_the_device():
    cpu = H.Engine.for_device("cpu")
    assert cpu.amp_dtype is None and not cpu.scaler().is_enabled()
    assert not H.Engine(torch.device("cpu"), torch.bfloat16).scaler().is_enabled()  # bf16 needs no scaling


def test_epoch_numbers_match_a_plain_loop(models, data):
    x, y = data.val[0][:300], data.val[1][:300]
    model = models["option1"]()
    engine = H.Engine.for_device("cpu")
    batches = H.Batches((x, y), 128, data.stats, "cpu")
    # evaluation: mean loss and accuracy over all images
    scores = H.evaluate(model, batches, engine)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(images) for images, _ in plain_batches(x, y, data.mean, data.std, 50)])
    assert scores["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-6)
    assert scores["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-4)
    # training epoch (lr 0, no shuffle, no augmentation): the device-side sums equal the plain per-batch means
    optimizer = engine.optimizer(model.parameters(), lr=0.0)
    stats = one_epoch(H.make_step(model, optimizer, engine.scaler(), a_recipe(), engine, batches), batches)
    model.train()
    losses, correct = [], 0
    with torch.no_grad():
        for images, labels in plain_batches(x, y, data.mean, data.std, 128):
            out = model(images)
            losses.append(F.cross_entropy(out, labels).item() * len(labels))
            correct += (out.argmax(1) == labels).sum().item()
    assert stats["train_loss"] == pytest.approx(sum(losses) / len(y), rel=1e-4)
    assert stats["train_acc"] == pytest.approx(correct / len(y), abs=1e-6)


def test_schedules():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lrs = lambda kind: [H.make_scheduler(opt, kind, 10, 10, 0.2).lr_lambdas[0](s) for s in range(101)]  # noqa
    assert lrs("constant") == [1.0] * 101
    cosine = lrs("cosine")
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5) and cosine[100] == pytest.approx(0.0)
    one = lrs("onecycle")
    assert one[0] == pytest.approx(0.1) and one[20] == 1.0 and one[100] == 0.0 and max(one) == 1.0


def test_training_on_real_data_learns(models, data):
    """2,000 real training images, 4 epochs: well above the 10% of chance on 500 held-out images."""
    small = H.Data(train=(data.train[0][:2000], data.train[1][:2000]), val=(data.val[0][:500], data.val[1][:500]),
                   full=data.full, test=data.test, mean=data.mean, std=data.std)
    engine = H.Engine.for_device("cpu")
    config = {"epochs": 4, "batch_size": 64, "lr": 0.03, "momentum": 0.9, "weight_decay": 0.0,
              "schedule": "onecycle", "warmup": 0.2, "seed": 0}
    train = H.Batches(small.train, 64, data.stats, "cpu", shuffle=True, augment=True)
    val = H.Batches(small.val, 500, data.stats, "cpu")
    history = H.fit(models["option1"](), train, val, H.Recipe.of(config), engine).history
    assert history[-1]["val_acc"] >= 0.35, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_the_speed_benchmark_runs_the_engines_step_and_names_an_unknown_network(data_dir, tmp_path):
    """benchmarks/train_speed.py, the GPU lease's first benchmark, runs its eager path here (the step from
    `make_step`, the network from the notebook's registry) and refuses a network the registry lacks."""
    command = [sys.executable, "benchmarks/train_speed.py", "--data-dir", str(data_dir), "--images", "256",
               "--epochs", "1", "--workers", "0", "--out", str(tmp_path)]
    run = subprocess.run([*command, "--models", "option1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (written,) = tmp_path.glob("train_speed_*.json")
    (row,) = json.loads(written.read_text())["rows"]
    assert row["model"] == "Option 1" and row["params"] == 2_797_610 and row["eager img/s"] > 0
    refused = subprocess.run([*command, "--models", "option1,resnet10"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2  # argparse's usage error, before any data is read
    assert "--models: resnet10 names no network; the registered ones: air_resnet, resnet18" in refused.stderr
