"""The results store: it serves complete results, resumes an interrupted run, retrains a changed one, and
loses nothing to faults (an interrupted write, an unreadable checkpoint, summary or history, a diverging run),
each injected through the real code."""
import math
import os

import pytest
import torch

import helpers as H
from cifar10_resnet.store import ResultsStore, atomic_write
from conftest import Interrupted, interrupt_after_two_epochs

CONFIG = {"epochs": 3, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "cosine", "seed": 0}


@pytest.fixture
def engine():
    return H.Engine.for_device("cpu")


@pytest.fixture
def counted(models):
    """(build, built): an Option 1 factory that records each model it builds, i.e. each training run."""
    built = []

    def build():
        built.append(1)
        return models["option1"]()

    return build, built


def same_history(store_a, store_b, name="m"):
    a, b = store_a.history(name), store_b.history(name)
    assert len(a) == len(b)
    for column in ("train_loss", "val_loss", "val_acc", "lr"):
        assert a[column].tolist() == pytest.approx(b[column].tolist(), rel=1e-5), column


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "results" / "m.json"
    atomic_write(path, lambda tmp: tmp.write_text('{"old": 1}'))

    def half_then_crash(tmp):
        tmp.write_text('{"new": ')
        raise Interrupted

    with pytest.raises(Interrupted):
        atomic_write(path, half_then_crash)
    assert path.read_text() == '{"old": 1}'
    assert os.listdir(path.parent) == ["m.json"]  # no temporary file left behind


def test_a_checkpoint_write_cut_short_resumes_from_the_previous_one(models, tiny, engine, tmp_path,
                                                                      monkeypatch):
    """torch.save dies half-way through the epoch-2 checkpoint (what a Colab disconnect does): the epoch-1
    checkpoint is still whole, and the next run resumes from it and ends where a straight run ends."""
    straight = ResultsStore(tmp_path / "straight")
    H.run_experiment("m", CONFIG, models["option1"], tiny, engine, straight)
    store = ResultsStore(tmp_path / "cut")
    real_save, calls = torch.save, []

    def dying_save(obj, target, *args, **kwargs):
        calls.append(target)
        if len(calls) == 2:
            with open(target, "wb") as f:
                f.write(b"PK\x03\x04 half a zip archive")
            raise Interrupted
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(Interrupted):
        H.run_experiment("m", CONFIG, models["option1"], tiny, engine, store, progress=H.Progress(checkpoint_seconds=0))
    monkeypatch.setattr(torch, "save", real_save)
    [checkpoint] = list((tmp_path / "cut" / "checkpoints").iterdir())
    assert torch.load(checkpoint, weights_only=True)["history"][-1]["epoch"] == 1
    resumed = H.run_experiment("m", CONFIG, models["option1"], tiny, engine, store)
    assert resumed["epochs_completed"] == 3
    same_history(straight, store)


def test_a_truncated_checkpoint_is_moved_aside_and_training_starts_afresh(models, tiny, engine, tmp_path):
    straight = ResultsStore(tmp_path / "straight")
    H.run_experiment("m", CONFIG, models["option1"], tiny, engine, straight)

    store = ResultsStore(tmp_path / "cut")
    interrupt_after_two_epochs(models["option1"], CONFIG, tiny, engine, store)
    [checkpoint] = list((tmp_path / "cut" / "checkpoints").iterdir())
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.warns(UserWarning, match="checkpoint unreadable"):
        summary = H.run_experiment("m", CONFIG, models["option1"], tiny, engine, store)
    assert checkpoint.with_name(checkpoint.name + ".corrupt").exists()
    assert summary["epochs_completed"] == 3 and not summary["diverged"]
    same_history(straight, store)  # afresh from the same seed: the same run


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_truncated_summary_or_history_is_retrained_never_skipped(counted, tiny, engine, tmp_path, suffix):
    store = ResultsStore(tmp_path)
    build, built = counted
    config = {**CONFIG, "epochs": 2}
    first = H.run_experiment("m", config, build, tiny, engine, store)
    path = store.path("m", suffix)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.warns(UserWarning, match="unreadable"):
        again = H.run_experiment("m", config, build, tiny, engine, store)
    assert len(built) == 2
    assert path.with_name(path.name + ".corrupt").exists()
    assert again["test_acc"] == pytest.approx(first["test_acc"])
    assert store.complete("m", config) is not None and set(store.summaries()) == {"m"}


def test_a_diverging_run_stops_is_stored_as_diverged_and_is_served_as_such(models, tiny, engine, tmp_path,
                                                                           capsys):
    store = ResultsStore(tmp_path)
    config = {**CONFIG, "lr": 1e6, "epochs": 5, "schedule": "constant", "weight_decay": 0.0}
    summary = H.run_experiment("m", config, models["option1"], tiny, engine, store, H.Protocol(keep_weights=True))
    epoch = summary["diverged_epoch"]
    assert summary["diverged"] and 1 <= epoch < 5
    assert summary["epochs_completed"] == epoch and summary["test_acc"] is None
    assert summary["final_val_acc"] is None and not store.path("m", ".pt").exists()
    history = store.history("m")
    assert len(history) == epoch and H.is_diverged(history.iloc[-1].to_dict())
    assert all(math.isfinite(v) for v in history["train_loss"].iloc[:-1])
    assert all(math.isfinite(v) for v in history["val_loss"].iloc[:-1])
    assert "DIVERGED" in capsys.readouterr().out
    # served, not retrained, and said so
    again = H.run_experiment("m", config, models["option1"], tiny, engine, store, H.Protocol(keep_weights=True))
    assert again == summary
    out = capsys.readouterr().out
    assert "read from" in out and f"DIVERGED at epoch {epoch}" in out and "| epoch" in out
    # JSON without NaN: the summary file is strict JSON
    import json
    json.loads(store.path("m", ".json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_a_learning_rate_is_never_taken_from_a_diverged_run(models, tiny, engine, tmp_path):
    store = ResultsStore(tmp_path)
    summaries = {
        "low": H.run_experiment("low", {**CONFIG, "epochs": 1, "lr": 0.001}, models["option1"], tiny, engine,
                                store),
        "high": H.run_experiment("high", {**CONFIG, "epochs": 3, "lr": 1e6, "schedule": "constant"},
                                 models["option1"], tiny, engine, store),
    }
    assert summaries["high"]["diverged"]
    assert H.best_by_validation(summaries, ["low", "high"]) == "low"
    assert H.best_by_validation(summaries, ["high"]) is None


def test_a_served_run_prints_its_stored_log(models, tiny, engine, tmp_path, capsys):
    store = ResultsStore(tmp_path)
    config = {**CONFIG, "epochs": 12}
    H.run_experiment("m", config, models["option1"], tiny, engine, store)
    trained = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    H.run_experiment("m", config, models["option1"], tiny, engine, store)
    served = capsys.readouterr().out.splitlines()
    assert served[0].startswith(f"m: read from {tmp_path}/")
    replayed = [line[2:] for line in served if line.startswith("| epoch")]
    assert [line.split()[1] for line in trained] == ["1", "10", "12"]
    assert replayed == trained  # the same lines, marked as read from the store
    assert "test acc" in served[-1]


def test_interrupted_run_resumes_where_it_stopped(models, tiny, engine, tmp_path):
    straight = H.run_experiment("m", CONFIG, models["option1"], tiny, engine, ResultsStore(tmp_path / "a"))

    store = ResultsStore(tmp_path / "b")
    interrupt_after_two_epochs(models["option1"], CONFIG, tiny, engine, store)
    assert store.load("m") is None and len(list((tmp_path / "b" / "checkpoints").iterdir())) == 1
    resumed = H.run_experiment("m", CONFIG, models["option1"], tiny, engine, store)
    assert resumed["epochs_completed"] == straight["epochs_completed"] == 3
    a, b = ResultsStore(tmp_path / "a").history("m"), store.history("m")
    assert len(a) == len(b) == 3
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert a[column].tolist() == pytest.approx(b[column].tolist(), rel=1e-5), column
    assert resumed["test_acc"] == pytest.approx(straight["test_acc"])
    assert not list((tmp_path / "b" / "checkpoints").iterdir())  # the checkpoint is gone once complete


def test_a_run_resumed_on_another_path_records_both(models, tiny, engine, tmp_path):
    """The checkpoint carries the training-step path so far: a run begun with CUDA graphs and finished on the
    CPU says so, and a run resumed on the same path names it once."""
    for first, expected in (("cuda-graph", "cuda-graph, then eager (no CUDA device)"),
                            (None, "eager (no CUDA device)")):
        store = ResultsStore(tmp_path / str(first))
        interrupt_after_two_epochs(models["option1"], CONFIG, tiny, engine, store)
        (checkpoint,) = (store.root / "checkpoints").iterdir()
        state = torch.load(checkpoint, weights_only=True)
        assert state["step_kind"] == "eager (no CUDA device)"
        if first is not None:
            state["step_kind"] = first  # as if the first two epochs had run on a GPU
            torch.save(state, checkpoint)
        assert H.run_experiment("m", CONFIG, models["option1"], tiny, engine, store)["step_kind"] == expected
    assert H.joined_kind("cuda-graph", "eager (GRAPHS=False)", training=False) == "cuda-graph"
    assert H.joined_kind("a, then b", "b", training=True) == "a, then b"


def test_complete_results_are_served_and_a_changed_config_retrains(counted, tiny, engine, tmp_path):
    store = ResultsStore(tmp_path)
    build, built = counted
    config = {**CONFIG, "epochs": 1}
    first = H.run_experiment("m", config, build, tiny, engine, store)
    again = H.run_experiment("m", config, build, tiny, engine, store)
    assert len(built) == 1 and again == first
    changed = H.run_experiment("m", {**config, "lr": 0.02}, build, tiny, engine, store)
    assert len(built) == 2 and changed["config"]["lr"] == 0.02
    assert changed["config_hash"] != first["config_hash"]
    index = ResultsStore(tmp_path).summaries()
    assert set(index) == {"m"} and (tmp_path / "summary.json").exists()
    for key in ("config", "trainable_params", "epochs_completed", "device", "torch", "date", "train_seconds",
                "best_val_acc", "final_val_acc", "test_acc"):
        assert key in changed, key
