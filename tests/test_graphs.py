"""The CUDA-graph training step (issue: one GPU lease runs everything).

On the CPU: the learning rate as a device tensor gives the same schedules as floats, the graph/eager decision,
the static-buffer data path (the body a graph captures, run eagerly) against the plain eager epoch, and the
fallback to eager on a failed capture or a mismatch. Under the `cuda` marker (skipped without a GPU; run there
with `pytest -m cuda`): replayed steps against eager steps, a two-epoch run with graphs against eager,
schedules and weight averaging under graphs."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn

from cifar10_resnet import cuda_graph
import helpers as H
from cifar10_resnet.store import ResultsStore
from conftest import a_recipe, one_epoch, tiny_net

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def batches_of(data, n, batch_size, device="cpu", augment=True):
    return H.Batches((data.train[0][:n], data.train[1][:n]), batch_size, data.stats, device,
                     shuffle=True, augment=augment, seed=0)


# --- learning rate as a device tensor ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["constant", "cosine", "onecycle"])
def test_tensor_learning_rate_follows_the_float_schedule_step_by_step(kind):
    engine = H.Engine.for_device("cpu")
    weights = [nn.Parameter(torch.randn(4))]
    with_tensor = engine.optimizer(weights, lr=0.4, momentum=0.9, nesterov=True)
    with_float = torch.optim.SGD([nn.Parameter(torch.randn(4))], lr=0.4, momentum=0.9, nesterov=True)
    lr = with_tensor.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.device.type == "cpu"
    schedules = [H.make_scheduler(opt, kind, 3, 7, warmup=0.2) for opt in (with_tensor, with_float)]
    for step in range(3 * 7):
        assert float(with_tensor.param_groups[0]["lr"]) == pytest.approx(with_float.param_groups[0]["lr"],
                                                                          rel=1e-6, abs=1e-9), step
        assert with_tensor.param_groups[0]["lr"] is lr  # changed in place: a CUDA graph keeps reading it
        for opt in (with_tensor, with_float):
            opt.param_groups[0]["params"][0].grad = torch.ones(4)
            opt.step()
        for schedule in schedules:
            schedule.step()
    assert float(lr) == pytest.approx(with_float.param_groups[0]["lr"], rel=1e-6, abs=1e-9)


def test_tensor_learning_rate_survives_a_checkpoint_round_trip(tmp_path):
    engine = H.Engine.for_device("cpu")
    model = nn.Linear(3, 2)
    optimizer = engine.optimizer(model.parameters(), lr=0.1)
    scheduler = H.make_scheduler(optimizer, "cosine", 2, 5)
    for _ in range(3):
        optimizer.step()  # no gradients: a no-op, in the order the scheduler expects
        scheduler.step()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    fresh = engine.optimizer(model.parameters(), lr=0.1)
    fresh_scheduler = H.make_scheduler(fresh, "cosine", 2, 5)
    fresh.load_state_dict(state["optimizer"])
    engine.lr_on_device(fresh)
    fresh_scheduler.load_state_dict(state["scheduler"])
    for _ in range(4):
        assert float(fresh.param_groups[0]["lr"]) == pytest.approx(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        fresh.step()
        scheduler.step()
        fresh_scheduler.step()


# --- the decision ----------------------------------------------------------------------------------------

def test_graph_plan_names_the_path_and_the_reason():
    cuda_device = torch.device("cuda")  # constructing an Engine does not touch the device
    assert H.Engine(cuda_device, torch.bfloat16).graph_plan() == (True, "cuda-graph")
    assert H.Engine(cuda_device, torch.bfloat16, graphs=True).graph_plan() == (True, "cuda-graph")
    # compiled kernels are captured too; the check against eager steps still decides
    assert H.Engine(cuda_device, torch.bfloat16, compile=True).graph_plan() == (True, "cuda-graph")
    cases = {"GRAPHS=False": H.Engine(cuda_device, torch.bfloat16, graphs=False),
             "no CUDA": H.Engine.for_device("cpu", graphs=True),
             "fp16": H.Engine(cuda_device, torch.float16)}
    for reason, engine in cases.items():
        use, kind = engine.graph_plan()
        assert not use and kind.startswith("eager (") and reason in kind, (reason, kind)


# --- the static-buffer path on the CPU ---------------------------------------------------------------

def test_static_buffer_epoch_equals_the_eager_epoch(data):
    """The body a CUDA graph captures, run eagerly on static buffers, after its warm-up and check: the check
    leaves the state untouched, and an epoch through it (with a smaller last batch, a schedule and weight
    averaging) gives the same weights, sums and average as the plain eager epoch, bit for bit on the CPU."""
    engine = H.Engine.for_device("cpu")
    torch.manual_seed(0)
    eager_model = tiny_net()
    static_model = copy.deepcopy(eager_model)
    results = {}
    for name, model in (("eager", eager_model), ("static", static_model)):
        optimizer = engine.optimizer(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                     weight_decay=5e-4)
        scheduler = H.make_scheduler(optimizer, "onecycle", 1, 5, warmup=0.2)
        ema = H.ModelEMA(model, decay=0.9, every=1)
        batches = batches_of(data, 7 * 64 + 40, 64)
        step = H.EagerStep(model, optimizer, engine.scaler(), engine, a_recipe(label_smoothing=0.1))
        sums, captured = H.EpochSums("cpu"), None
        if name == "static":
            before = [t.clone() for t in model.state_dict().values()]
            captured, kind = cuda_graph.checked_capture(step, sums, batches.fixed_batches(6), capture=False)
            assert kind == "static-buffers" and captured.batch_size == 64
            assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))
            assert not optimizer.state or all(s["momentum_buffer"].abs().sum() == 0
                                              for s in optimizer.state.values())
            buffer_address = captured.images.data_ptr()
        stats = one_epoch(H.Step(step, sums, captured, "static"), batches,
                          lambda: (scheduler.step(), ema.update(model)))
        if captured is not None:
            assert captured.images.data_ptr() == buffer_address
        results[name] = (stats, [p.detach().clone() for p in model.parameters()],
                         [p.clone() for p in ema.module.parameters()], float(optimizer.param_groups[0]["lr"]))
    (stats_a, weights_a, ema_a, lr_a), (stats_b, weights_b, ema_b, lr_b) = results["eager"], results["static"]
    assert stats_a == stats_b and lr_a == lr_b
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))
    assert all(torch.equal(a, b) for a, b in zip(ema_a, ema_b))


def test_failed_capture_falls_back_to_eager_with_one_warning(data):
    """On a machine without CUDA, capturing raises: one warning names the reason, training goes on eagerly,
    and the warm-up steps taken before the failure are undone."""
    engine = H.Engine.for_device("cpu")
    model = tiny_net()
    optimizer = engine.optimizer(model.parameters(), lr=0.1, momentum=0.9)
    before = [t.clone() for t in model.state_dict().values()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        captured, kind = cuda_graph.checked_capture(H.EagerStep(model, optimizer, engine.scaler(), engine, a_recipe()),
                                                    H.EpochSums("cpu"), batches_of(data, 512, 64).fixed_batches(6))
    assert captured is None and kind.startswith("eager (capture failed")
    assert len(caught) == 1 and "training eagerly" in str(caught[0].message)
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))


def test_a_step_that_differs_from_eager_is_not_trusted(data):
    """Dropout draws new random numbers at every call, so a replayed step cannot reproduce an eager one (the
    classic CUDA-graph pitfall of random state): the check sees it and the run stays eager."""
    engine = H.Engine.for_device("cpu")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(3 * 32 * 32, 10))
    optimizer = engine.optimizer(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.warns(UserWarning, match="CUDA graph step not used"):
        captured, kind = cuda_graph.checked_capture(H.EagerStep(model, optimizer, engine.scaler(), engine, a_recipe()),
                                                    H.EpochSums("cpu"), batches_of(data, 512, 64).fixed_batches(6),
                                                    capture=False)
    assert captured is None and kind.startswith("eager (loss of step")


def test_too_few_full_batches_stay_eager(data):
    engine = H.Engine.for_device("cpu")
    model = tiny_net()
    step = H.EagerStep(model, engine.optimizer(model.parameters(), lr=0.1), engine.scaler(), engine, a_recipe())
    captured, kind = cuda_graph.checked_capture(step, H.EpochSums("cpu"), batches_of(data, 300, 64).fixed_batches(6))
    assert captured is None and "full batches" in kind


def test_the_path_is_recorded_in_the_summary(models, data, tmp_path):
    small = H.Data(train=(data.train[0][:64], data.train[1][:64]), val=(data.val[0][:32], data.val[1][:32]),
                   full=data.full, test=(data.test[0][:32], data.test[1][:32]), mean=data.mean, std=data.std)
    config = {"epochs": 1, "batch_size": 32, "lr": 0.01, "seed": 0}
    summary = H.run_experiment("m", config, tiny_net, small, H.Engine.for_device("cpu"),
                               ResultsStore(tmp_path))
    assert summary["step_kind"] == "eager (no CUDA device)"


# --- on a GPU ------------------------------------------------------------------------------------------

def test_static_step_returns_a_detached_loss(data):
    """No autograd graph outlives a static step (a captured one would pin the capture stream's gradient
    accumulators, and later eager steps would meet them on another stream)."""
    engine = H.Engine.for_device("cpu")
    model = tiny_net()
    optimizer = engine.optimizer(model.parameters(), lr=0.05, momentum=0.9)
    batches = batches_of(data, 512, 64)
    step = H.EagerStep(model, optimizer, engine.scaler(), engine, a_recipe())
    captured = cuda_graph.CapturedStep(step, H.EpochSums("cpu"), batches.fixed_batches(1), capture=False)
    loss = captured(*batches.fixed_batches(1)[0])
    assert torch.isfinite(loss) and not loss.requires_grad and loss.grad_fn is None


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("compiled", [False, True], ids=["eager-kernels", "torch.compile"])
def test_replayed_steps_equal_eager_steps(models, data, compiled):
    engine = H.Engine.for_device("cuda", compile=compiled)
    model = models["option2"]()
    module = engine.prepare(model)  # the compiled module when `compiled`; same parameters either way
    optimizer = engine.optimizer(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    batches = batches_of(data, 4096, 128, "cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = H.make_step(module, optimizer, engine.scaler(), a_recipe(), engine, batches)
        step, captured, kind = chosen.eager, chosen.graph, chosen.kind
        assert kind == "cuda-graph" and captured.graph is not None
        # one more comparison, on augmented batches this time, from the same state
        pairs = [next(iter(batches)) for _ in range(3)]
        start = cuda_graph.snapshot(model, optimizer)
        before = [p.detach().clone() for p in model.parameters()]
        replayed = [captured(x, y).clone() for x, y in pairs]
        after = [p.detach().clone() for p in model.parameters()]
        cuda_graph.restore(model, optimizer, start)
        eager = [step(x, y)[0].detach() for x, y in pairs]  # zeroes the graph's gradient tensors in place
    assert not any(r.requires_grad for r in replayed)
    assert cuda_graph.compare_steps(replayed, eager, after, [p.detach() for p in model.parameters()], before) is None
    # the eager steps beside the graph meet no gradient accumulator of the capture stream
    assert not [str(w.message) for w in caught if "AccumulateGrad" in str(w.message)]


@pytest.mark.cuda
@cuda
def test_two_epochs_with_graphs_match_eager(models, data):
    small = H.Data(train=(data.train[0][:10000], data.train[1][:10000]), val=data.val, full=data.full,
                   test=data.test, mean=data.mean, std=data.std)
    config = {"epochs": 2, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "cosine", "seed": 0}
    runs = {}
    for graphs in (True, False):
        engine = H.Engine.for_device("cuda", graphs=graphs)
        train = H.Batches(small.train, 128, data.stats, "cuda", shuffle=True, augment=True)
        val = H.Batches(small.val, 1024, data.stats, "cuda")
        H.set_seed(0)
        runs[graphs] = H.fit(models["option2"](), train, val, H.Recipe.of(config), engine)
    assert runs[True].step_kind == "cuda-graph" and runs[False].step_kind == "eager (GRAPHS=False)"
    for a, b in zip(runs[True].history, runs[False].history):
        assert a["lr"] == pytest.approx(b["lr"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.03)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=0.03)


@pytest.mark.cuda
@cuda
def test_graph_reads_the_schedule_and_feeds_the_weight_average(models, data):
    """lr 0 leaves the weights unchanged under replay, a positive lr moves them (the graph reads the lr
    tensor the schedule fills), and the weight average follows the replayed weights by its formula."""
    engine = H.Engine.for_device("cuda")
    model = models["option1"]()
    engine.prepare(model)
    optimizer = engine.optimizer(model.parameters(), lr=0.05, momentum=0.9)
    batches = batches_of(data, 4096, 128, "cuda")
    chosen = H.make_step(model, optimizer, engine.scaler(), a_recipe(), engine, batches)
    captured, kind = chosen.graph, chosen.kind
    assert kind == "cuda-graph"
    x, y = next(iter(batches))
    lr = optimizer.param_groups[0]["lr"]
    lr.fill_(0.0)
    weights = [p.detach().clone() for p in model.parameters()]
    captured(x, y)
    assert all(torch.equal(a, p) for a, p in zip(weights, model.parameters()))
    lr.fill_(0.05)
    ema = H.ModelEMA(model, decay=0.5, every=1)
    average = [p.detach().clone() for p in model.parameters()]
    captured(x, y)
    ema.update(model)
    assert any(not torch.equal(a, p) for a, p in zip(weights, model.parameters()))
    d = ema.current_decay()
    for e, a, p in zip(ema.module.parameters(), average, model.parameters()):
        assert torch.allclose(e, d * a + (1 - d) * p.detach(), atol=1e-6)
