"""airbench's ingredients as recipe options (helpers) and its network (AirResNet, cifar10_resnet/air_resnet.py): each
does what its paper says, and a recipe that leaves them out trains exactly as before."""
import dataclasses
import importlib.util
import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import NOTEBOOK, interrupt_after_two_epochs

import helpers as H
from cifar10_resnet import report
from benchmarks import round3
from cifar10_resnet import air_resnet as air
from cifar10_resnet.store import ResultsStore, load_weights

AIRBENCH = {  # every ingredient on, sized for the CPU: a narrow AirResNet, tiny batches, 4 epochs
    "arch": "air_resnet", "widths": [16, 32, 32], "epochs": 4, "batch_size": 32, "lr": 0.2, "momentum": 0.85,
    "nesterov": True, "weight_decay": 5e-3, "schedule": "onecycle", "warmup": 0.23, "lr_start": 0.2,
    "lr_end": 0.07, "label_smoothing": 0.2, "pad": 2, "pad_mode": "reflect", "flip": "alternate", "cutout": 8,
    "cutout_inside": True, "tta": True, "tta_views": 6, "bias_lr_scale": 64.0, "freeze_bn_scale": True,
    "whiten_bias_epochs": 1, "lookahead": 2, "seed": 0,
}


@pytest.fixture
def engine():
    return H.Engine.for_device("cpu")


def narrow(widths=(16, 32, 32)):
    return lambda: air.air_resnet(widths)


# ---------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------


def test_air_resnet_is_residual_and_under_five_million_parameters():
    model = air.air_resnet()
    assert H.count_parameters(model) == H.torchsummary_total(model, "cpu") == 4_846_648
    assert sum(isinstance(m, air.AirGroup) for m in model.modules()) == 3
    # registered in the package's registry, its widths from a configuration
    assert H.registry().build({"arch": "air_resnet", "widths": [128, 256, 320], "blocks": None}).fc.in_features == 320
    assert H.flops_per_image(model) == 554_350_016  # forward, counted by torch.utils.flop_counter


def test_the_whitening_stem_whitens_image_patches(data):
    images = H.eval_batches(data.train, data, "cpu").normalise(data.train[0][:2000])
    stem = air.Whitening()
    stem.fit_to(images)
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    before = patches.T @ patches / len(patches)
    assert (before - torch.eye(12)).abs().max() > 0.5  # neighbouring pixels and channels are strongly correlated
    with torch.no_grad():
        out = F.conv2d(images, stem.weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12)  # no bias: the filters alone
    after = out.T @ out / len(out)
    values = torch.linalg.eigvalsh(before)
    expected = values / (values + stem.eps)  # each direction's variance, shrunk only where it is below eps
    assert torch.allclose(after.diagonal().sort().values, expected.sort().values, atol=2e-3)
    assert (after - torch.diag(after.diagonal())).abs().max() < 2e-3  # decorrelated
    assert (after.diagonal().sort(descending=True).values[:8] - 1).abs().max() < 0.05  # unit variance
    assert torch.equal(stem.weight[12:], -stem.weight[:12])  # both signs survive the GELU


def test_dirac_initialisation_passes_the_first_channels_through():
    conv = air.DiracConv(8, 24)
    x = torch.randn(4, 8, 10, 10)
    with torch.no_grad():
        assert torch.allclose(conv(x)[:, :8], x, atol=1e-6)
        assert not torch.allclose(conv(x)[:, 8:16], x, atol=1e-2)  # the other filters are the default's


# ---------------------------------------------------------------------------------------------------
# Augmentation and test-time views
# ---------------------------------------------------------------------------------------------------


def test_alternating_flips_mirror_each_image_on_every_other_epoch():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    batches = H.Batches((x, torch.arange(64)), 16, (torch.zeros(3), torch.ones(3)), "cpu", shuffle=True,
                        augment=H.Augmentation(pad=0, flip="alternate"))
    epochs = []
    for _ in range(3):
        seen = torch.empty(64, 3, 8, 8)
        for images, labels in batches:
            seen[labels] = images
        epochs.append(seen)
    plain = x.float() / 255
    first = [torch.equal(epochs[0][i], plain[i]) for i in range(64)]
    assert 0 < sum(first) < 64  # each image starts flipped or not, at random
    for i in range(64):
        assert torch.equal(epochs[0][i], plain[i] if first[i] else plain[i].flip(-1))
        assert torch.equal(epochs[1][i], epochs[0][i].flip(-1))  # the next epoch shows the other side
        assert torch.equal(epochs[2][i], epochs[0][i])
    assert batches.state_dict()["epoch"] == 3


def test_reflect_padding_translates_without_black_borders():
    x = torch.randint(1, 256, (32, 3, 8, 8), dtype=torch.uint8)  # no black pixel anywhere
    out, dy, dx, _ = H.crop_flip(x, pad=2, generator=torch.Generator().manual_seed(0), return_params=True,
                                 mode="reflect")
    assert (out > 0).all() and ((dy != 2) | (dx != 2)).any()
    zeros = H.crop_flip(x, pad=2, generator=torch.Generator().manual_seed(0))
    assert (zeros == 0).any()  # the default pads with zeros, as every run before the option


def test_cutout_inside_always_removes_the_full_square():
    images = torch.randn(500, 3, 32, 32)
    _, mask = H.cutout(images, 12, torch.Generator().manual_seed(0), return_mask=True, inside=True)
    assert (mask.flatten(1).sum(1) == 144).all()
    _, clipped = H.cutout(images, 12, torch.Generator().manual_seed(0), return_mask=True)
    assert (clipped.flatten(1).sum(1) < 144).any()  # the default clips squares at the border


def test_six_tta_views_are_airbench_s_translations_weighted_as_theirs():
    x = torch.randn(2, 3, 8, 8)
    views = H.tta_views(x, 6)
    assert len(views) == len(H.TTA_WEIGHTS[6]) == 6 and math.isclose(sum(H.TTA_WEIGHTS[6]), 1.0)
    down_right, up_left = views[2], views[4]
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])  # the border reflected, not zero
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(views[1], x.flip(-1)) and torch.equal(views[5], up_left.flip(-1))

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    batches = H.Batches((torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)), 2,
                        (torch.zeros(3), torch.ones(3)), "cpu")
    batches.normalise = lambda images: x  # known float images through the real predict()
    logits = H.predict(model, batches, H.Engine.for_device("cpu"), tta=True, views=6)
    with torch.no_grad():
        expected = sum(w * model(v) for w, v in zip(H.TTA_WEIGHTS[6], views))
    assert torch.allclose(logits, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Optimizer: learning-rate groups, decoupled units, lookahead
# ---------------------------------------------------------------------------------------------------


def test_default_recipes_keep_one_parameter_group(models):
    model = models["fast_resnet"]()
    (group,) = H.parameter_groups(model, H.Recipe.of({"lr": 0.4, "epochs": 1, "batch_size": 8, "seed": 0}), 5)
    assert len(group["params"]) == len(list(model.parameters())) and set(group) == {"params"}


def test_learning_rate_groups_scale_biases_and_freeze_the_stem_and_scales(engine):
    model = narrow()()
    r = H.Recipe.of(AIRBENCH)  # as fit builds them, for two steps per epoch
    optimizer = engine.optimizer(H.parameter_groups(model, r, 2), r.lr, r.momentum, r.weight_decay, r.nesterov)
    scheduler = H.make_scheduler(optimizer, r.schedule, r.epochs, 2, r.warmup, r.lr_start, r.lr_end)
    step = H.EagerStep(model, optimizer, engine.scaler(), engine, r)
    groups = {g["name"]: g for g in optimizer.param_groups}
    listed = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert groups["BatchNorm biases"]["initial_lr"] == pytest.approx(64 * groups["weights"]["initial_lr"])
    assert float(groups["BatchNorm biases"]["lr"]) == pytest.approx(0.2 * 64 * 0.2)  # lr_start of the warm-up
    assert groups["BatchNorm biases"]["weight_decay"] == pytest.approx(5e-3 / 64)  # the same decay per step
    assert {id(p) for p in groups["frozen"]["params"]} == {id(model.whiten.weight)} | {id(m.weight) for m in norms}

    frozen = [p.detach().clone() for p in groups["frozen"]["params"]]
    stem_bias = []
    for _ in range(4):  # two epochs of two steps: the stem's bias trains in the first only
        images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        step(images, labels)
        scheduler.step()
        stem_bias.append(model.whiten.bias.detach().clone())
    assert all(torch.equal(a, p) for a, p in zip(frozen, groups["frozen"]["params"]))
    assert not torch.equal(stem_bias[0], torch.zeros(24)) and not torch.equal(stem_bias[1], stem_bias[0])
    assert torch.equal(stem_bias[3], stem_bias[2]) and torch.equal(stem_bias[2], stem_bias[1])


def test_decoupled_hyperparameters_give_airbench_s_update():
    """airbench's SGD (summed loss, its lr and decay per 1,024 examples) and this engine's (mean loss, the
    converted values) take the same steps."""
    lr, decay, momentum, batch = 9.0, 0.0153, 0.85, 64
    x, y = torch.randn(3, batch, 5), torch.randint(0, 3, (3, batch))
    theirs, ours = nn.Linear(5, 3), nn.Linear(5, 3)
    ours.load_state_dict(theirs.state_dict())
    per_step = 1024 * (1 + 1 / (1 - momentum))
    sgd_theirs = torch.optim.SGD(theirs.parameters(), lr=lr / per_step, weight_decay=decay * batch / lr,
                                 momentum=momentum, nesterov=True)
    our_lr, our_decay = H.from_decoupled(lr, decay, momentum, batch)
    sgd_ours = torch.optim.SGD(ours.parameters(), lr=our_lr, weight_decay=our_decay, momentum=momentum,
                               nesterov=True)
    for k in range(3):
        for model, sgd, reduction in ((theirs, sgd_theirs, "sum"), (ours, sgd_ours, "mean")):
            sgd.zero_grad()
            F.cross_entropy(model(x[k]), y[k], reduction=reduction).backward()
            sgd.step()
    for a, b in zip(theirs.parameters(), ours.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_lookahead_pulls_toward_the_slow_weights_and_ends_on_them():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    slow = [t.detach().clone() for t in H.Lookahead.tensors(model)]
    lookahead = H.Lookahead(model, every=2, total_steps=4)

    def move():
        with torch.no_grad():
            for t in H.Lookahead.tensors(model):
                t.add_(torch.randn_like(t))
        return [t.detach().clone() for t in H.Lookahead.tensors(model)]

    for step in range(1, 5):
        live = move()
        lookahead.update(model)
        if step % 2:
            assert all(torch.equal(t, v) for t, v in zip(H.Lookahead.tensors(model), live))  # untouched
            continue
        d = 0.95 ** 5 * (step / 4) ** 3
        slow = [d * s + (1 - d) * v for s, v in zip(slow, live)]
        assert all(torch.allclose(t, s, atol=1e-6) for t, s in zip(H.Lookahead.tensors(model), slow))
    assert lookahead.steps == 4


# ---------------------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------------------


def test_the_whitening_filters_come_from_the_training_images_and_stay(tiny, engine, tmp_path):
    trained = {}
    H.run_experiment("air", AIRBENCH, lambda: trained.setdefault("model", narrow()()), tiny, engine,
                     ResultsStore(tmp_path))
    train = H.training_batches(tiny.train, H.Recipe.of(AIRBENCH), tiny, "cpu")
    fresh = air.Whitening()
    fresh.fit_to(train.normalise(train.x[:H.WHITENING_IMAGES]))
    assert torch.allclose(trained["model"].whiten.weight, fresh.weight, atol=1e-6)


def test_an_airbench_run_resumes_where_it_stopped(tiny, engine, tmp_path):
    """Lookahead's slow weights and the alternating flips' epoch travel in the checkpoint."""
    straight = H.run_experiment("m", AIRBENCH, narrow(), tiny, engine, ResultsStore(tmp_path / "a"))
    store = ResultsStore(tmp_path / "b")
    checkpoint = interrupt_after_two_epochs(narrow(), AIRBENCH, tiny, engine, store)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["lookahead"]["steps"] == 2 * 3 and saved["batches"]["epoch"] == 2
    resumed = H.run_experiment("m", AIRBENCH, narrow(), tiny, engine, store)
    a, b = ResultsStore(tmp_path / "a").history("m"), store.history("m")
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert a[column].tolist() == pytest.approx(b[column].tolist(), rel=1e-5), column
    assert resumed["test_acc"] == pytest.approx(straight["test_acc"])
    assert resumed["final_val_acc_tta"] == pytest.approx(straight["final_val_acc_tta"])


def test_a_reloaded_air_resnet_reproduces_its_test_accuracy_with_its_six_views(tiny, engine, tmp_path):
    """The notebook's reload check evaluates with the recipe's views: four views would score other logits."""
    store, small = ResultsStore(tmp_path), dataclasses.replace(tiny, full=tiny.train)  # 96 images, not 50,000
    summary = H.run_experiment("final seed 0", AIRBENCH, narrow(), small, engine, store,
                               H.Protocol("full", keep_weights=True))
    reloaded = load_weights(narrow()(), store.path("final seed 0", ".pt"))
    test = H.eval_batches(small.test, small, "cpu")
    assert H.Recipe.of(AIRBENCH).tta_views == 6 and H.evaluate_recipe(
        reloaded, test, engine, H.Recipe.of(AIRBENCH))["acc"] == pytest.approx(summary["test_acc"], abs=1e-9)
    six, four = (H.predict(reloaded, test, engine, tta=True, views=n) for n in (6, 4))
    assert not torch.allclose(six, four, atol=1e-4)


def test_airbench_recipe_learns_on_real_data(data, engine, tmp_path):
    subset = H.Data(train=(data.train[0][:2048], data.train[1][:2048]), val=(data.val[0][:1000], data.val[1][:1000]),
                    full=data.full, test=data.test, mean=data.mean, std=data.std)
    config = {**AIRBENCH, "widths": [32, 64, 64], "epochs": 6, "batch_size": 128, "lr": 0.5,
              "weight_decay": 1e-3, "lookahead": 5}
    summary = H.run_experiment("air", config, narrow((32, 64, 64)), subset, engine,
                               ResultsStore(tmp_path), H.Protocol(test=False))
    assert summary["final_val_acc"] > 0.3 and summary["final_val_acc_tta"] > 0.3  # chance is 0.1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_airbench_recipe_under_a_cuda_graph_matches_eager(data):
    """Per-group learning rates (one group frozen mid-run), lookahead's in-place copies and alternating flips
    under a replayed graph: two epochs agree with eager ones."""
    small = H.Data(train=(data.train[0][:8192], data.train[1][:8192]), val=data.val, full=data.full,
                   test=data.test, mean=data.mean, std=data.std)
    config = {**AIRBENCH, "widths": [64, 128, 128], "epochs": 2, "batch_size": 512, "lr": 1.0}
    runs = {}
    for graphs in (None, False):
        engine = H.Engine.for_device("cuda", graphs=graphs)
        H.set_seed(0)
        train = H.training_batches(small.train, H.Recipe.of(config), small, "cuda")
        model = narrow((64, 128, 128))()
        H.fit_to_data(model, train.normalise(train.x[:H.WHITENING_IMAGES]))  # as run_experiment does
        runs[graphs] = H.fit(model, train, H.eval_batches(small.val, small, "cuda"), H.Recipe.of(config), engine)
    assert runs[None].step_kind == "cuda-graph"
    for a, b in zip(runs[None].history, runs[False].history):
        assert a["lr"] == pytest.approx(b["lr"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.03)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=0.03)


# ---------------------------------------------------------------------------------------------------
# Choosing a recipe by its mean over seeds
# ---------------------------------------------------------------------------------------------------


def seeds_of(*accs, tta=None):
    return [{"final_val_acc": a, "final_val_acc_tta": t} for a, t in zip(accs, tta or [None] * len(accs))]


def test_a_recipe_is_scored_by_its_mean_over_seeds_plain_or_with_views():
    assert H.recipe_score(seeds_of(0.95, 0.96)) == (pytest.approx(0.955), False)
    assert H.recipe_score(seeds_of(0.95, 0.96, tta=[0.96, 0.97])) == (pytest.approx(0.965), True)
    assert math.isnan(H.recipe_score(seeds_of(0.95) + [{"diverged": True, "final_val_acc": None}])[0])


def test_a_difference_under_the_tie_goes_to_the_cheaper_recipe():
    trials = {"big": seeds_of(0.960, 0.962), "small": seeds_of(0.960, 0.960), "tiny": seeds_of(0.950, 0.951)}
    costs = {"big": 200.0, "small": 60.0, "tiny": 10.0}
    chosen, tta, why = H.choose_by_mean(trials, costs, tie=0.0015)
    assert chosen == "small" and not tta and "tie with big" in why  # 0.1 points behind, at less than a third
    assert H.choose_by_mean(trials, costs, tie=0.0005)[0] == "big"  # a tighter tie: the best mean wins
    trials["big"] = seeds_of(0.960, 0.962) + [{"diverged": True, "final_val_acc": None}]
    assert H.choose_by_mean(trials, costs, tie=0.0015)[0] == "small"  # never a recipe with a diverged seed
    with pytest.raises(ValueError):
        H.choose_by_mean({"a": [{"diverged": True}]}, {"a": 1.0}, 0.0015)


def test_round_three_runs_are_grouped_by_recipe_in_seed_order():
    summaries = {f"final round 3 - {label} - seed {k}": {"date": f"2026-12-01T00:0{i}", "seed": k,
                                                          "final_val_acc": 0.9 + k / 100, "trainable_params": 1,
                                                          "train_seconds": 1.0}
                 for i, (label, k) in enumerate([("b", 1), ("a - x", 0), ("b", 0), ("a - x", 1)])}
    summaries["final sweep - other"] = {"date": "2026-11-01"}
    trials = report.trial_runs(summaries, "final round 3 - ")
    assert list(trials) == ["b", "a - x"] and [s["seed"] for s in trials["b"]] == [0, 1]
    table = report.trials_table(trials)
    assert table.loc["b", "val acc (%)"] == "90.50 ± 0.71" and table.loc["b", "seeds"] == 2


def test_round_three_recipes_hold_the_named_ingredients():
    """The round-3 recipes (benchmarks/round3.py) built on the notebook's starting recipe, as the exploration
    script builds them."""
    ns = H.notebook_namespace(NOTEBOOK, ("parameters", "model", "recipes"), {"H": H, "QUICK": False})
    recipes = round3.recipes(ns)
    airbench = recipes[f"AirResNet {ns['FINAL_EPOCHS']} epochs"]
    assert {key: airbench[key] for key in ("bias_lr_scale", "lookahead", "whiten_bias_epochs", "tta_views",
                                           "flip", "pad_mode")} == {
        "bias_lr_scale": 64.0, "lookahead": 5, "whiten_bias_epochs": 3, "tta_views": 6, "flip": "alternate",
        "pad_mode": "reflect"}
    assert set(airbench) <= set(H.DEFAULTS) | {"arch", "widths", "blocks", "epochs", "lr", "batch_size", "seed",
                                                "tta", "quick"}
    incumbent = recipes["round 2 choice"]
    stored = ResultsStore(NOTEBOOK.parent / "results").load("final seed 0")["config"]
    assert {**incumbent, "seed": 0, "tta": True} == stored  # round 2's choice, as its seeds were trained
    assert all(re.fullmatch(r"[\w +-]+", round3.trial(recipes, label, 0)[0]) for label in recipes)  # file names
    assert round3.trial(recipes, "round 2 choice", 2)[1]["seed"] == incumbent["seed"] + 2


# ---------------------------------------------------------------------------------------------------
# The exploration script, round 3
# ---------------------------------------------------------------------------------------------------


def exploration():
    spec = importlib.util.spec_from_file_location("exploration", NOTEBOOK.parent / "benchmarks" / "exploration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exploration_runs_round_three_end_to_end_in_quick_mode(data_dir, tmp_path):
    run = subprocess.run([sys.executable, "benchmarks/exploration.py", "--quick", "--seeds", "1", "--peer",
                          "--data-dir", str(data_dir), "--out", str(tmp_path)], cwd=NOTEBOOK.parent,
                         capture_output=True, text=True, check=True, timeout=600)
    explored = [line for line in run.stdout.splitlines() if line.startswith("EXPLORE | final round 3 - ")]
    assert len(explored) == 3 and all("- seed 0 | val " in line for line in explored)
    assert "EXPLORE | round 3 chooses " in run.stdout
    assert "peer not run: airbench trains on a CUDA GPU only" in run.stdout  # this machine has no GPU
    assert len(ResultsStore(tmp_path).summaries()) == 3


def test_the_estimate_names_the_stored_cards_when_a_card_has_no_runs():
    module = exploration()
    ns = module.notebook_round(quick=False)
    store = ResultsStore(NOTEBOOK.parent / "results")
    with pytest.raises(SystemExit, match=r"on 'H200'; the store's cards: .*'NVIDIA H200'"):
        module.estimate({}, 45000, store, "H200", ns)
    rate, runs = module.measured_rate(store, "NVIDIA H200", ns)
    assert runs >= 1 and 1e13 < rate < 1e15  # the committed H200 runs: tens to hundreds of TFLOP/s


def test_airbench_reads_the_same_pixels(raw, tmp_path):
    exploration().write_cifar_for_airbench(raw, tmp_path / "cifar10")
    train = torch.load(tmp_path / "cifar10" / "train.pt", weights_only=True)
    test = torch.load(tmp_path / "cifar10" / "test.pt", weights_only=True)
    assert train["images"].shape == (50000, 32, 32, 3) and train["images"].dtype == torch.uint8
    assert torch.equal(train["images"][123], raw["train_x"][123].permute(1, 2, 0))  # HWC, as torchvision's .data
    assert torch.equal(test["labels"], raw["test_y"]) and len(test["images"]) == 10000
    assert train["classes"] == list(H.CLASSES)


def test_the_peer_table_is_written_from_a_recorded_result():
    """run_peer's table path, driven from a result as run_peer records it (the GPU run itself needs CUDA): one
    Markdown row with the peer's package, parameters, epochs, accuracy mean ± std, runs and seconds."""
    result = {"peer": "airbench95", "package": "airbench 0.1.8", "trainable_params": 2_000_000, "epochs": 15.0,
              "runs": [{"run": k, "seconds": 3.0, "test_acc": a} for k, a in enumerate((0.95, 0.951, 0.949))],
              "test_acc_mean": 95.0, "test_acc_std": 0.1, "seconds_mean": 3.0}
    table = report.markdown_table(exploration().peer_table(result)).splitlines()
    assert table[0] == "| peer | trainable params | epochs | test acc (%) | runs | s per run (training) |"
    assert table[2] == "| airbench95 (airbench 0.1.8) | 2,000,000 | 15 | 95.00 ± 0.10 | 3 | 3.0 |"
