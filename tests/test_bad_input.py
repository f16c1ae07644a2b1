"""Bad input stops before training with one error that names the cause and the fix, and nothing stored is lost:
a damaged data folder (real CIFAR-10 batches, damaged), bad parameters and run configurations, a results folder
that cannot be written, and stored runs that are not whole (each set aside and retrained)."""
import ast
import ctypes
import errno
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cifar10_resnet import checks
import helpers as H
from cifar10_resnet.checks import BadInput
from conftest import NOTEBOOK, ROOT, cifar_copy, real_batch, tiny_net
from cifar10_resnet.plan import Planned, training_cost
from cifar10_resnet.store import ResultsStore, load_weights, quarantine, remove_stale_partials, save_weights

CONFIG = {"epochs": 2, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "seed": 0}
FIX = "point DATA_DIR at a good copy"

# ---------------------------------------------------------------------------------------------------
# 1. The data folder: each batch file checked where it is read
# ---------------------------------------------------------------------------------------------------


def damaged_copy(tmp_path, data_dir, name, content):
    """`cifar_copy` with `name` written with `content` (bytes), made by it (a function of the path), or left out
    when `content` is None."""
    make = content if callable(content) or content is None else lambda path: path.write_bytes(content)
    return cifar_copy(tmp_path, data_dir, name, make)


def one_pixel_flipped(data_dir) -> np.ndarray:
    """data_batch_3's images with the lowest bit of one pixel flipped."""
    images = real_batch(data_dir, "data_batch_3")["data"].copy()
    images[0, 0] ^= 1
    return images


def two_swapped(data_dir, name) -> dict:
    """The batch `name`'s data and labels with its first two images, and their labels, in each other's place."""
    batch = real_batch(data_dir, name)
    order = [1, 0, *range(2, len(batch["labels"]))]
    return {"data": batch["data"][order], "labels": [batch["labels"][k] for k in order]}


def both_keys(data_dir) -> bytes:
    """data_batch_4 pickled with its images under 'data' and, reversed, under b'data' too."""
    batch = real_batch(data_dir, "data_batch_4")
    return pickle.dumps({**batch, b"data": batch["data"][::-1].copy()})


def loop(path):
    os.symlink(path.with_name("other"), path)
    os.symlink(path, path.with_name("other"))


def changed(data_dir, name, **entries):
    """The real batch `name` with some entries replaced, pickled again."""
    return pickle.dumps({**real_batch(data_dir, name), **entries})


DAMAGES = {  # what a bad copy or a bad sync leaves, and what the message must say
    "truncated": ("test_batch", lambda d: (d / H.CIFAR_FOLDER / "test_batch").read_bytes()[:15_000_000],
                  "is not a readable pickle (EOFError: the data ends too soon)"),
    "random bytes": ("data_batch_2", lambda d: np.random.default_rng(0).bytes(4096), "is not a readable pickle"),
    "grey images": ("data_batch_1", lambda d: changed(d, "data_batch_1",
                                                      data=real_batch(d, "data_batch_1")["data"][:, :1024]),
                    "images of shape (10000, 1024), expected (10000, 3072)"),
    "9,500 labels": ("data_batch_4", lambda d: changed(d, "data_batch_4",
                                                       labels=real_batch(d, "data_batch_4")["labels"][:9500]),
                     "9,500 labels for 10,000 images"),
    "label 10": ("data_batch_5", lambda d: changed(d, "data_batch_5", labels=[10] + real_batch(
        d, "data_batch_5")["labels"][1:]), "1 label outside 0-9 (such as 10)"),
    "float pixels": ("test_batch", lambda d: changed(d, "test_batch", data=real_batch(
        d, "test_batch")["data"].astype(np.float32) / 255), "the pixels are float32, not uint8"),
    "not a dict": ("data_batch_3", lambda d: pickle.dumps([1, 2, 3]), "expected a dict with 'data' and 'labels'"),
    "missing": ("data_batch_3", lambda d: None, "data_batch_3 is missing"),
    # checked by content: the batch's SHA-256, its keys, what stands in its place
    "a batch copied over another": ("data_batch_2", lambda d: (d / H.CIFAR_FOLDER / "data_batch_1").read_bytes(),
                                    "holds the images and labels of data_batch_1"),
    "one pixel altered": ("data_batch_3", lambda d: changed(d, "data_batch_3", data=one_pixel_flipped(d)),
                          "holds other images or labels than CIFAR-10's"),
    "two images swapped": ("test_batch", lambda d: changed(d, "test_batch", **two_swapped(d, "test_batch")),
                           "holds other images or labels than CIFAR-10's"),
    "keys as bytes and as text": ("data_batch_4", both_keys, "holds the key 'data' twice, as bytes and as text"),
    "a folder": ("data_batch_5", lambda d: lambda path: path.mkdir(), "is a folder, not a batch file"),
    "a loop of links": ("data_batch_1", lambda d: loop, "is a symbolic link that leads to no file"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_batch_file_is_named_with_the_fix(damage, data_dir, tmp_path):
    name, content, message = DAMAGES[damage]
    folder = damaged_copy(tmp_path, data_dir, name, content(data_dir))
    with pytest.raises(BadInput) as caught:
        H.prepare_data(folder)
    text = str(caught.value)
    assert str(folder / H.CIFAR_FOLDER / name) in text and message in text, text
    assert "delete the folder" in text and FIX in text  # the fix: download again, or another copy
    assert (folder / H.CIFAR_FOLDER).is_dir()  # nothing deleted on the user's behalf


def test_the_original_bytes_keys_layout_reads_as_the_copy(data_dir, tmp_path):
    batch = real_batch(data_dir, "test_batch")
    original = pickle.dumps({b"batch_label": b"testing batch 1 of 1", b"labels": batch["labels"],
                             b"data": batch["data"], b"filenames": [b"x.png"] * 10_000}, protocol=2)
    folder = damaged_copy(tmp_path, data_dir, "test_batch", original)
    assert torch.equal(H.load_cifar10(folder)["test_x"], H.load_cifar10(data_dir)["test_x"])


def test_a_data_dir_that_is_a_file_says_so(tmp_path):
    for path in (tmp_path / "data.tar", tmp_path / "data" / H.CIFAR_FOLDER):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a folder")
        with pytest.raises(BadInput, match=f"{path.name}' is a file, not a folder; point DATA_DIR at the folder"):
            H.load_cifar10(tmp_path / "data.tar" if path.name == "data.tar" else tmp_path / "data")


# ---------------------------------------------------------------------------------------------------
# 2. The notebook's parameters and the runs' configurations
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def given():
    """The parameters cell's values, as Run all sees them before any override."""
    namespace = H.notebook_namespace(NOTEBOOK, tags=("parameters",))
    return {name: namespace[name] for name in checks.PARAMETERS}


def test_every_parameter_of_the_cell_has_a_check_and_the_defaults_pass(given, capsys):
    cell = next(c for c in json.loads(NOTEBOOK.read_text())["cells"]
                if "parameters" in c["metadata"].get("tags", []))
    names = [t.id for node in ast.parse("".join(cell["source"])).body for t in node.targets]
    assert names == list(checks.PARAMETERS)
    namespace = dict(given)
    checks.parameters(namespace)
    assert namespace == given and capsys.readouterr().out == ""  # the defaults: nothing changed, nothing said


@pytest.mark.parametrize("value, read", [("false", False), ("False", False), ("no", False), ("0", False),
                                         (0, False), (False, False), ("true", True), ("YES", True), ("1", True),
                                         (1, True), (True, True), ("none", None), (None, None)])
def test_booleans_read_their_usual_strings(given, value, read, capsys):
    checks.parameters(namespace := {**given, "QUICK": value})
    assert namespace["QUICK"] is read
    said = capsys.readouterr().out
    assert said == (f"QUICK: {value!r} read as {read!r}\n" if isinstance(value, str) else "")


BAD = [
    ("QUICK", "maybe", "QUICK must be True or False, or None (or one of the strings true, yes, 1, false, no, 0), "
                       "not 'maybe' (type str)"),
    ("SWEEP", None, "SWEEP must be True or False (or one of"),
    ("COMPILE", 2, "COMPILE must be True or False"),
    ("EPOCHS", 0, "EPOCHS must be a positive whole number, not 0 (type int)"),
    ("EPOCHS", -1, "EPOCHS must be a positive whole number, not -1"),
    ("EPOCHS", "100", "EPOCHS must be a positive whole number, not '100' (type str)"),
    ("EPOCHS", 2.5, "not 2.5 (type float)"),
    ("EPOCHS", True, "not True (type bool)"),
    ("FINAL_EPOCHS", 0, "FINAL_EPOCHS must be a positive whole number"),
    ("FINAL_SEEDS", 0, "FINAL_SEEDS must be a positive whole number"),
    ("SEED", -1, "SEED must be a whole number of at least 0, not -1"),
    ("LEARNING_RATES", [], "LEARNING_RATES must be a list of two learning rates, low then high"),
    ("LEARNING_RATES", [0.001, "abc"], "LEARNING_RATES[1] must be a positive number, not 'abc' (type str)"),
    ("LEARNING_RATES", ["0.1", 0.2], "LEARNING_RATES[0] must be a positive number, not '0.1' (type str)"),
    ("LEARNING_RATES", [0.001, -0.01], "LEARNING_RATES[1] must be a positive number, not -0.01"),
    ("LEARNING_RATES", "[0.001, 0.01]", "-y 'LEARNING_RATES: [0.001, 0.01]'"),
    ("LEARNING_RATES", [0.01, 0.001], "the low rate first and the high rate second, not [0.01, 0.001]"),
    ("TARGET", 101, "TARGET is a test accuracy in percent: at most 100"),
    ("TARGET", "96", "TARGET must be a positive number, not '96'"),
    ("PRECISION", "fp8", "PRECISION must be one of None, 'bf16', 'fp16', 'fp32', not 'fp8'"),
    ("RESULTS_DIR", "", "RESULTS_DIR must be a folder or file path"),
    ("REPOSITORY", None, "REPOSITORY must be a string"),
]


@pytest.mark.parametrize("name, value, message", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_parameter_stops_naming_its_value(given, name, value, message):
    with pytest.raises(BadInput) as caught:
        checks.parameters({**given, name: value})
    assert message in str(caught.value)
    assert caught.value._render_traceback_() == [f"BadInput: {caught.value}"]  # the notebook shows this line


def test_a_misspelt_configuration_key_is_refused_before_a_model_is_built(data, tmp_path):
    built, store = [], ResultsStore(tmp_path)

    def build():
        built.append(1)
        return tiny_net()

    engine = H.Engine.for_device("cpu")
    for config, message in (({**CONFIG, "weight_decy": 5e-4}, "m: the configuration has unknown key 'weight_decy';"
                                                                " the keys it takes: epochs, lr, batch_size, seed"),
                            ({**CONFIG, "lr": "0.1"}, "m: config 'lr' must be a positive number, not '0.1'"),
                            ({**CONFIG, "nesterov": "yes"}, "m: config 'nesterov' must be of type bool"),
                            ({**CONFIG, "pad": 4.0}, "m: config 'pad' must be of type int"),
                            # a value that training would refuse only when it reads it (tta_views: after the run)
                            ({**CONFIG, "tta_views": 5}, "m: config 'tta_views' must be one of 4, 6, not 5"),
                            ({**CONFIG, "flip": "alternte"}, "m: config 'flip' must be one of 'random', 'alternate'"),
                            ({**CONFIG, "schedule": "one-cycle"}, "m: config 'schedule' must be one of 'constant', "
                                                                  "'cosine', 'onecycle', not 'one-cycle'")):
        with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
            H.run_experiment("m", config, build, data, engine, store)
    with pytest.raises(BadInput, match="sweep: the configuration has unknown key 'ema_decy'"):
        training_cost({"sweep": Planned({**CONFIG, "ema_decy": 0.0}, build, 96)}, store, data, engine)
    assert not built and not list(tmp_path.iterdir())  # no model built, nothing written


def test_augmentation_and_weight_average_built_directly_refuse_a_value_outside_the_table():
    """Built without a recipe (tests, benchmarks), they check their few-valued settings against recipe.OPTIONS."""
    for build, message in ((lambda: H.Augmentation(pad_mode="reflct"),
                            "pad_mode must be one of 'constant', 'reflect', not 'reflct'"),
                           (lambda: H.Augmentation(flip="alternte"),
                            "flip must be one of 'random', 'alternate', not 'alternte'"),
                           (lambda: H.ModelEMA(tiny_net(), buffers="mean"),
                            "buffers must be one of 'average', 'copy', not 'mean'")):
        with pytest.raises(BadInput, match=message):
            build()
    assert H.Augmentation(pad_mode="reflect", flip="alternate").flip == "alternate"


def test_every_tta_view_count_the_table_admits_is_one_evaluation_makes():
    """recipe.OPTIONS restates tta_views' counts (recipe cannot import evaluation): a count the table admits but
    evaluation lacks would pass the checks and fail after the last epoch."""
    from cifar10_resnet.evaluation import TTA_WEIGHTS
    from cifar10_resnet.recipe import OPTIONS
    images = torch.randn(2, 3, 8, 8)
    for count in OPTIONS["tta_views"]:
        views = H.tta_views(images, count)
        assert len(views) == len(TTA_WEIGHTS[count]) == count and abs(sum(TTA_WEIGHTS[count]) - 1) < 1e-12
        assert all(view.shape == images.shape for view in views)


def test_every_stored_configuration_passes_the_checks():
    """The checks refuse nothing that the GPU's runs stored: every stored run keeps serving."""
    configs = [(path, json.loads(path.read_text())) for path in ROOT.glob("results/**/*.json")]
    configs = [(path, s["config"]) for path, s in configs if "config" in s]
    assert len(configs) >= 27  # the full-scale runs: 14, the first sweep's 11, exploration-2's 2
    for path, config in configs:
        H.check_config(config, path.stem)


# ---------------------------------------------------------------------------------------------------
# 3. A results folder that cannot take the results: refused before any epoch
# ---------------------------------------------------------------------------------------------------


def test_a_results_folder_that_is_a_file_stops_before_training(data, tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("my notes")
    with pytest.raises(BadInput, match=r"RESULTS_DIR '.*results' is a file, not a folder; move the file away"):
        ResultsStore.open(target)
    with pytest.raises(BadInput, match="a part of its path is a file"):
        ResultsStore.open(target / "quick")
    with pytest.raises(BadInput, match="the results folder '.*' is a file"):
        H.run_experiment("m", CONFIG, tiny_net, data, H.Engine.for_device("cpu"), ResultsStore(target))
    assert "epoch" not in capsys.readouterr().out and target.read_text() == "my notes"


def drop_write_override():
    """In the child, before exec: root without CAP_DAC_OVERRIDE, so that a folder's permissions bind it too."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


READ_ONLY_RUN = """
import sys
import helpers as H
from cifar10_resnet.checks import BadInput
from conftest import tiny_net
from cifar10_resnet.store import ResultsStore
data = H.prepare_data(sys.argv[1], subset=H.QUICK_SUBSET)
try:
    ResultsStore.open(sys.argv[2])
except BadInput as error:
    print("open:", error)
try:
    H.run_experiment("m", {"epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 0}, tiny_net, data,
                     H.Engine.for_device("cpu"), ResultsStore(sys.argv[2]))
except BadInput as error:
    print("run:", error)
"""


def test_a_read_only_results_folder_stops_before_training(data_dir, tmp_path):
    """A real read-only folder (as root, the child process drops the capability that overrides permissions)."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "model 1.json").write_text('{"kept": true}')
    folder.chmod(0o555)
    try:
        out = subprocess.run([sys.executable, "-c", READ_ONLY_RUN, str(data_dir), str(folder)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}, capture_output=True,
                             text=True, timeout=300, preexec_fn=drop_write_override if os.geteuid() == 0 else None)
    finally:
        folder.chmod(0o755)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (f"open: RESULTS_DIR '{folder}' cannot be written: it is not writable (permission denied); "
                        f"nothing has been trained yet; use a folder this machine can write to")
    assert lines[1].startswith(f"run: the results folder '{folder}' cannot be written: it is not writable")
    assert not [line for line in lines if line.startswith("epoch")]  # refused before the first epoch
    assert os.listdir(folder) == ["model 1.json"] and (folder / "model 1.json").read_text() == '{"kept": true}'


def test_a_full_disk_is_named(tmp_path):
    with pytest.raises(BadInput, match=r"DOC_DIR '.*' has [\d,]+ MiB free on its disk; a run needs about"):
        checks.writable_folder(tmp_path, "DOC_DIR", need=2**62)
    assert checks.why_unwritable(OSError(errno.ENOSPC, "No space left on device")) == "its disk is full"
    assert checks.why_unwritable(OSError(errno.EROFS, "Read-only")) == "it is on a read-only file system"
    assert list(tmp_path.iterdir()) == []  # the probe removed


# ---------------------------------------------------------------------------------------------------
# 4. A stored run is served only when it is whole
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def stored(models, tiny, tmp_path):
    """(store, build, built, summary): Option 1 trained for two epochs with its weights kept, beside another
    run whose files must come through untouched; `built` counts the models built, i.e. trainings and checks."""
    store, built = ResultsStore(tmp_path), []

    def build():
        built.append(1)
        return models["option1"]()

    engine = H.Engine.for_device("cpu")
    H.run_experiment("other", {**CONFIG, "epochs": 1}, tiny_net, tiny, engine, store)
    summary = H.run_experiment("m", CONFIG, build, tiny, engine, store, H.Protocol(keep_weights=True))
    built.clear()
    return store, build, built, summary


def rerun(store, build, tiny):
    return H.run_experiment("m", CONFIG, build, tiny, H.Engine.for_device("cpu"), store, H.Protocol(keep_weights=True))


def others(store):
    return {p.name: p.read_bytes() for p in store.root.glob("other.*")}


def edit_summary(store, edit):
    path = store.path("m", ".json")
    summary = json.loads(path.read_text())
    edit(summary)
    path.write_text(json.dumps(summary))


SUMMARY_FAULTS = {
    "no epochs_completed": (lambda s: s.pop("epochs_completed"), "summary no 'epochs_completed'"),
    "no device": (lambda s: s.pop("device"), "summary no 'device'"),
    "no date": (lambda s: s.pop("date"), "summary no 'date'"),
    "no train_seconds": (lambda s: s.pop("train_seconds"), "summary no 'train_seconds'"),
    "epochs as text": (lambda s: s.update(epochs_completed="2"), "'epochs_completed' is '2', not of type int"),
    "diverged as text": (lambda s: s.update(diverged="no"), "'diverged' is 'no', not of type bool"),
    "test_acc as text": (lambda s: s.update(test_acc="93%"), "'test_acc' is '93%', not of type int or float"),
    "test_acc NaN": (lambda s: s.update(test_acc=float("nan")), r"'test_acc' is nan, outside \[0, 1\]"),
    "test_acc 7.5": (lambda s: s.update(test_acc=7.5), r"'test_acc' is 7.5, outside \[0, 1\]"),
    "best_val_acc negative": (lambda s: s.update(best_val_acc=-0.1), r"'best_val_acc' is -0.1, outside \[0, 1\]"),
    "negative time": (lambda s: s.update(train_seconds=-3.0), r"'train_seconds' is -3.0, outside \[0, inf\]"),
    "infinite loss": (lambda s: s.update(test_loss=float("inf")), r"'test_loss' is inf, outside \[0, inf\]"),
    "config edited, hash kept": (lambda s: s["config"].update(lr=0.5),
                                 r"configuration hashes to \w+, not to its stored \w+: it was edited after the run"),
}


@pytest.mark.parametrize("fault", list(SUMMARY_FAULTS))
def test_a_summary_missing_a_field_or_of_a_wrong_type_is_set_aside_and_retrained(stored, tiny, fault):
    store, build, built, first = stored
    before = others(store)
    edit, message = SUMMARY_FAULTS[fault]
    edit_summary(store, edit)
    with pytest.warns(UserWarning, match=message) as warned:
        again = rerun(store, build, tiny)
    assert len([w for w in warned if "moved aside" in str(w.message)]) == 1  # one warning
    assert store.path("m", ".json.corrupt").exists() and len(built) == 1  # retrained once
    assert again["test_acc"] == pytest.approx(first["test_acc"]) and others(store) == before
    assert set(store.summaries()) == {"m", "other"}  # the index reads every summary again, no error


HISTORY_FAULTS = {
    "a row short": (lambda h: h.iloc[:1], "1 epochs against the summary's 2"),
    "another final accuracy": (lambda h: h.assign(train_acc=[h["train_acc"][0], 0.5]), "the last epoch's train_acc"),
    "no validation columns": (lambda h: h.drop(columns=["val_acc", "val_loss"]), "no val_loss or val_acc column"),
    "an accuracy above 1": (lambda h: h.assign(val_acc=[1.5, h["val_acc"][1]]), r"its val_acc leaves \[0, 1\]"),
}


@pytest.mark.parametrize("fault", list(HISTORY_FAULTS))
def test_a_history_that_disagrees_with_its_summary_is_set_aside_and_retrained(stored, tiny, fault):
    store, build, built, first = stored
    before = others(store)
    path = store.path("m", ".csv")
    edit, message = HISTORY_FAULTS[fault]
    edit(store.history("m")).to_csv(path, index=False)
    with pytest.warns(UserWarning, match=message):  # the report reads no half history either: set aside at once
        assert store.history("m") is None
    path.with_name(path.name + ".corrupt").rename(path)
    with pytest.warns(UserWarning, match=f"history disagrees with its summary.*{message}"):
        again = rerun(store, build, tiny)
    assert store.path("m", ".csv.corrupt").exists() and len(store.history("m")) == 2
    assert again["test_acc"] == pytest.approx(first["test_acc"]) and others(store) == before


@pytest.mark.parametrize("fault", ["garbage", "another architecture", "not finite"])
def test_weights_that_do_not_load_are_set_aside_and_retrained(stored, tiny, models, fault):
    store, build, built, first = stored
    weights = store.path("m", ".pt")
    if fault == "garbage":
        weights.write_bytes(b"PK\x03\x04 not a checkpoint")
    elif fault == "another architecture":
        save_weights(models["option2"](), weights)
    else:  # the right shapes, one weight NaN
        model = load_weights(models["option1"](), weights)
        next(model.parameters()).data[0].fill_(float("nan"))
        save_weights(model, weights)
        with pytest.raises(ValueError, match="holds weights that are not finite numbers"):
            load_weights(models["option1"](), weights)
    with pytest.warns(UserWarning, match="weights cannot serve the run"):
        again = rerun(store, build, tiny)
    assert store.path("m", ".pt.corrupt").exists()
    assert again["test_acc"] == pytest.approx(first["test_acc"])
    load_weights(models["option1"](), weights)  # the retrained weights load
    if fault == "another architecture":
        with pytest.raises(ValueError, match="holds weights of another architecture"):
            load_weights(models["option1"](), store.path("m", ".pt.corrupt"))
    built.clear()
    rerun(store, build, tiny)
    assert len(built) == 1  # served: one model built to check its weights, none trained


def test_the_prediction_command_names_weights_that_do_not_load(tmp_path, data_dir):
    from tools import predict as cli

    for suffix in (".json", ".csv"):
        shutil.copy(ROOT / "results" / f"model 6{suffix}", tmp_path / f"model 6{suffix}")
    (tmp_path / "model 6.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(SystemExit, match=r"model 6.pt does not load into the network of 'model 6' \(RuntimeError"):
        cli.main([str(tmp_path), "--out", str(tmp_path / "out.csv"), "--model", "model 6", "--results",
                  str(tmp_path), "--data-dir", str(data_dir)])
    assert (tmp_path / "model 6.pt").exists() and not (tmp_path / "out.csv").exists()  # nothing moved, or written


def quarantine_at_once(path, barrier):
    barrier.wait()
    quarantine(path, "damaged")


def test_quarantine_leaves_a_file_that_another_process_moved_first(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{")
    quarantine(path, "damaged")
    quarantine(path, "damaged")  # the second of two processes that found it: nothing left to move
    assert (tmp_path / "m.json.corrupt").read_text() == "{"
    forked = multiprocessing.get_context("fork")
    for attempt in range(20):  # two processes at once, as two Run alls over one results folder
        path.write_text(f"{{{attempt}")
        barrier = forked.Barrier(2)
        workers = [forked.Process(target=quarantine_at_once, args=(path, barrier)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [w.exitcode for w in workers] == [0, 0], attempt
        assert (tmp_path / "m.json.corrupt").read_text() == f"{{{attempt}" and not path.exists()


def test_stale_temporary_files_are_removed_when_the_store_opens(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a process that has exited
    (tmp_path / "checkpoints").mkdir(parents=True)
    old = time.time() - 3600
    files = {"stale": tmp_path / f".model 1.partial-{gone}.json",
             "stale checkpoint": tmp_path / "checkpoints" / f".model 1-abc.partial-{gone}.pt",
             "fresh": tmp_path / f".model 2.partial-{gone}.csv",  # a write that may still be in flight elsewhere
             "live": tmp_path / f".model 3.partial-{os.getppid()}.json",
             "own": tmp_path / f".model 4.partial-{os.getpid()}.json",
             "result": tmp_path / "model 1.json"}
    for label, path in files.items():
        path.write_text(label)
        if label != "fresh":
            os.utime(path, (old, old))
    ResultsStore.open(tmp_path)
    assert {label for label, path in files.items() if path.exists()} == {"fresh", "live", "own", "result"}
    assert remove_stale_partials(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# 5. The notebook: a bad parameter stops in the first cell that checks, before any data is read
# ---------------------------------------------------------------------------------------------------


def papermill(tmp_path, *parameters):
    """The notebook through papermill with `parameters`; returns (its executed cells, papermill's stderr)."""
    out = tmp_path / "run.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOK), str(out), "--cwd", str(ROOT),
                           "-p", "RESULTS_DIR", str(tmp_path / "results"), "-p", "DOC_DIR",
                           str(tmp_path / "documentation"), *parameters], capture_output=True, text=True,
                          timeout=600)
    return [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"], done


def error_cell(cells):
    """(index of the cell that raised, its error output)."""
    return next((k, o) for k, c in enumerate(cells) for o in c.get("outputs", []) if o["output_type"] == "error")


def test_the_notebook_stops_on_epochs_0_before_reading_data(tmp_path):
    cells, done = papermill(tmp_path, "-p", "EPOCHS", "0", "-p", "DATA_DIR", str(tmp_path / "data"))
    assert done.returncode != 0
    k, error = error_cell(cells)
    assert "checks.parameters(globals())" in "".join(cells[k]["source"])
    assert error["ename"] == "BadInput"
    assert error["evalue"] == "EPOCHS must be a positive whole number, not 0 (type int)"
    assert error["traceback"] == [f"BadInput: {error['evalue']}"]  # one line, no library frames
    assert not any(c.get("execution_count") for c in cells[k + 1:])  # nothing after it ran
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_the_notebook_reads_quick_false_as_false(data_dir, tmp_path):
    """`-p QUICK false` (a string to papermill) runs at full scale: stopped at the data cell by a test set of
    float pixels, which a full-scale run would otherwise have scored as 0.0%; a stored result stays as it was."""
    damaged = damaged_copy(tmp_path, data_dir, "test_batch", DAMAGES["float pixels"][1](data_dir))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "model 1.json").write_text('{"kept": true}')
    cells, done = papermill(tmp_path, "-p", "QUICK", "false", "-p", "DATA_DIR", str(damaged))
    k, error = error_cell(cells)
    assert "H.prepare_data(DATA_DIR" in "".join(cells[k]["source"]) and error["ename"] == "BadInput"
    assert "test_batch: the pixels are float32, not uint8" in error["evalue"]
    said = [line for c in cells[:k] for o in c.get("outputs", []) if o["output_type"] == "stream"
            for line in "".join(o["text"]).splitlines()]
    assert "QUICK: 'false' read as False" in said and not [line for line in said if "QUICK MODE" in line]
    assert not (tmp_path / "results" / "quick").exists()  # full scale: the results folder itself
    assert os.listdir(tmp_path / "results") == ["model 1.json"]
    assert (tmp_path / "results" / "model 1.json").read_text() == '{"kept": true}'
