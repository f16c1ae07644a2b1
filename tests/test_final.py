"""The 'Going further' machinery: test-time augmentation, weight averaging, a learning run, the reload check."""
import copy
import math

import pytest
import torch
import torch.nn as nn

import helpers as H
from cifar10_resnet import report
from cifar10_resnet.store import ResultsStore, load_weights


class Recorder(nn.Module):
    """A linear model that remembers every batch it sees."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.linear(x.flatten(1))


def shifted(x):
    """One pixel down and right, zero-filled: written out by hand as the reference."""
    out = torch.zeros_like(x)
    out[..., 1:, 1:] = x[..., :-1, :-1]
    return out


def test_tta_averages_the_four_intended_views():
    x = torch.randn(6, 3, 32, 32)
    batches = H.Batches((torch.zeros(6, 3, 32, 32, dtype=torch.uint8), torch.zeros(6, dtype=torch.long)), 6,
                        (torch.zeros(3), torch.ones(3)), "cpu")
    batches.normalise = lambda images: x  # feed known float images through the real predict()
    model = Recorder()
    logits = H.predict(model, batches, H.Engine.for_device("cpu"), tta=True)
    views = [x, x.flip(-1), shifted(x), shifted(x.flip(-1))]
    assert len(model.seen) == 4
    for seen, view in zip(model.seen, views):
        assert torch.equal(seen, view)
    with torch.no_grad():
        expected = torch.stack([model.linear(v.flatten(1)) for v in views]).mean(0)
    assert torch.allclose(logits, expected, atol=1e-6)
    plain = H.predict(model, batches, H.Engine.for_device("cpu"), tta=False)
    assert not torch.allclose(plain, logits)


def test_weight_average_follows_its_formula():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = H.ModelEMA(model, decay=0.9, every=2)
    expected = [p.detach().clone() for p in model.parameters()]
    expected_mean = model[1].running_mean.clone()
    for step in range(1, 41):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        ema.update(model)
        if step % 2 == 0:
            updates = step // 2
            d = min(0.9, (1 + updates) / (10 + updates))
            expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
            expected_mean = d * expected_mean + (1 - d) * model[1].running_mean
    for e, p in zip(expected, ema.module.parameters()):
        assert torch.allclose(e, p, atol=1e-5)
    # the running statistics are averaged like the weights (they lag the live model's), the counter copied
    assert torch.allclose(ema.module[1].running_mean, expected_mean, atol=1e-5)
    assert not torch.allclose(ema.module[1].running_mean, model[1].running_mean)
    assert torch.equal(ema.module[1].num_batches_tracked, model[1].num_batches_tracked)
    assert ema.current_decay() == pytest.approx(21 / 30)  # still warming up after 20 updates
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_weight_average_state_round_trip():
    model = nn.Linear(3, 3)
    ema = H.ModelEMA(model, decay=0.5, every=1)
    ema.update(model)
    other = H.ModelEMA(copy.deepcopy(model), decay=0.5, every=1)
    other.load_state_dict(ema.state_dict())
    assert other.steps == 1 and torch.equal(other.module.weight, ema.module.weight)


def test_weight_average_can_copy_buffers_as_the_first_sweep_did():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = H.ModelEMA(model, decay=0.9, every=1, buffers="copy")
    for _ in range(5):
        with torch.no_grad():
            model[1].running_mean.add_(1.0)
        ema.update(model)
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    with pytest.raises(ValueError):
        H.ModelEMA(model, buffers="mean")


@pytest.mark.parametrize("key, averaged", [({}, False), ({"ema_buffers": "copy"}, False),
                                           ({"ema_buffers": "average"}, True)])
def test_fit_averages_statistics_only_when_the_config_says_so(key, averaged):
    """A config without "ema_buffers" trains as every stored run made before the key existed (copied
    statistics), so that a served result and a retrained one mean the same thing."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (80, 3, 32, 32), dtype=torch.uint8)  # 2 epochs of 5 steps: the average's
    y = torch.randint(0, 10, (80,))                                   # last update is the last step
    train = H.Batches((x, y), 16, (torch.full((3,), 0.5), torch.full((3,), 0.25)), "cpu", shuffle=True)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(2, 3, 32, 32))  # materialise the lazy layer before the average copies the model
    config = final_config(epochs=2, batch_size=16, **key)
    final, _, _, _ = H.fit(model, train, None, H.Recipe.of({**config, "ema_decay": 0.5}), H.Engine.for_device("cpu"))
    assert final is not model
    same = torch.equal(final[1].running_mean, model[1].running_mean)
    assert same != averaged


def final_config(**changes):
    return {"epochs": 2, "batch_size": 128, "lr": 0.2, "momentum": 0.9, "nesterov": True,
            "weight_decay": 5e-4, "schedule": "onecycle", "warmup": 0.2, "label_smoothing": 0.2,
            "ema_decay": 0.9, "pad": 4, "seed": 0, **changes}


def test_final_recipe_learns_on_real_data(models, data):
    """The final network and recipe (EMA weights evaluated), 3 epochs on 2,000 real images."""
    train = H.Batches((data.train[0][:2000], data.train[1][:2000]), 64, data.stats, "cpu",
                      shuffle=True, augment=True)
    val = H.Batches((data.val[0][:500], data.val[1][:500]), 500, data.stats, "cpu")
    config = final_config(epochs=3, batch_size=64, lr=0.1)
    final, history, _, _ = H.fit(models["fast_resnet"](), train, val, H.Recipe.of(config), H.Engine.for_device("cpu"))
    assert isinstance(final, models["FastResNet"])  # the averaged copy is what gets evaluated
    assert history[-1]["val_acc"] >= 0.35, history


def test_reload_reproduces_the_stored_accuracy(models, data, tmp_path):
    small = H.Data(train=data.train, val=data.val, full=(data.full[0][:256], data.full[1][:256]),
                   test=(data.test[0][:300], data.test[1][:300]), mean=data.mean, std=data.std)
    engine, store = H.Engine.for_device("cpu"), ResultsStore(tmp_path)
    summary = H.run_experiment("final seed 0", final_config(epochs=1, tta=True), models["fast_resnet"], small,
                               engine, store, H.Protocol("full", keep_weights=True))
    path = store.path("final seed 0", ".pt")
    assert path.stat().st_size < 16e6
    assert all(v.dtype == torch.float16 for v in torch.load(path).values() if v.is_floating_point())
    reloaded = load_weights(models["fast_resnet"](), path)
    test = H.Batches(small.test, 1024, data.stats, "cpu")
    assert H.evaluate(reloaded, test, engine, tta=True)["acc"] == pytest.approx(summary["test_acc"], abs=1e-9)
    assert "best_val_acc" not in summary  # trained on train+val: no validation score to report


# --- choosing the final recipe on validation --------------------------------------------------------

def tuning_run(plain, views=None, diverged=False):
    """A tuning run's summary with the fields the selection reads."""
    if diverged:
        return {"diverged": True, "diverged_epoch": 3, "final_val_acc": None, "trainable_params": 10,
                "epochs_completed": 3, "train_seconds": 1.0}
    run = {"diverged": False, "final_val_acc": plain, "trainable_params": 10, "epochs_completed": 40,
           "train_seconds": 20.0}
    if views is not None:
        run["final_val_acc_tta"] = views
    return run


def test_the_recipe_is_the_best_on_validation_with_the_better_evaluation():
    runs = {"base": tuning_run(0.940, 0.945), "cutout": tuning_run(0.948, 0.946), "wide": tuning_run(0.941, 0.950),
            "broken": tuning_run(None, diverged=True)}
    changes = {"base": {}, "cutout": {"cutout": 12}, "wide": {"widths": [80, 160, 320, 384]},
               "broken": {"lr": 9.0}}
    assert H.validation_score(runs["cutout"]) == (0.948, False)
    assert H.validation_score(runs["wide"]) == (0.950, True)
    assert math.isnan(H.validation_score(runs["broken"])[0])
    assert H.choose_recipe(runs, changes) == ("wide", {"widths": [80, 160, 320, 384], "tta": True})
    runs["wide"] = tuning_run(0.930, 0.931)
    assert H.choose_recipe(runs, changes) == ("cutout", {"cutout": 12, "tta": False})
    with pytest.raises(ValueError):
        H.choose_recipe({"broken": runs["broken"]}, changes)


def test_the_improving_changes_are_merged_once_per_setting():
    runs = {"base": tuning_run(0.940), "cutout": tuning_run(0.946), "ls 0.1": tuning_run(0.943),
            "no ls": tuning_run(0.945), "60 epochs": tuning_run(0.944), "no ema": tuning_run(0.930),
            "broken": tuning_run(None, diverged=True)}
    changes = {"base": {}, "cutout": {"cutout": 12}, "ls 0.1": {"label_smoothing": 0.1},
               "no ls": {"label_smoothing": 0.0}, "60 epochs": {"epochs": 60}, "no ema": {"ema_decay": 0.0},
               "broken": {"lr": 9.0}}
    label, merged = H.combine_changes(changes, runs, "base")
    # best first; label smoothing 0.0 beat 0.1, so 0.1 is left out; the worse and the diverged runs too
    assert label == "cutout + no ls + 60 epochs"
    assert merged == {"cutout": 12, "label_smoothing": 0.0, "epochs": 60}
    only_one = {k: runs[k] for k in ("base", "cutout", "no ema")}
    assert H.combine_changes(changes, only_one, "base") is None  # nothing to combine


def test_sweep_table_and_store_labels():
    summaries = {"final seed 0": {"name": "final seed 0"}, "final validation": tuning_run(0.940, 0.945),
                 "final sweep - cutout 12 px": tuning_run(0.948, 0.946),
                 "final sweep - no EMA": tuning_run(None, diverged=True)}
    runs = report.sweep_runs(summaries, "final validation", "final sweep - ", "starting recipe")
    assert list(runs) == ["starting recipe", "cutout 12 px", "no EMA"]
    # in training order: a combined round trained last comes last, whatever its name
    dated = {**summaries, "final sweep - a + b": {**tuning_run(0.95), "date": "2026-11-26T17:47:00+00:00"},
             "final sweep - z": {**tuning_run(0.94), "date": "2026-11-26T17:44:00+00:00"}}
    assert list(report.sweep_runs(dated, "final validation", "final sweep - ", "starting recipe"))[-2:] == ["z", "a + b"]
    table = report.sweep_table(runs)
    assert table.loc["starting recipe", "change (points)"] == "+0.00"
    assert table.loc["cutout 12 px", "change (points)"] == "+0.30"
    assert table.loc["cutout 12 px", "val acc, TTA (%)"] == "94.60"
    assert table.loc["no EMA", "val acc (%)"] == "diverged at epoch 3"
    assert table.loc["no EMA", "change (points)"] == ""
