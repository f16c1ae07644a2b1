"""Input that a careless user could hand the project or an attacker could plant: each is stopped before any training
or prediction, with one message that names the file or setting, its fault and its fix, and nothing stored is lost.
(The store's own checks of what it serves, and the data folder's batch files, are in test_bad_input.py.)"""
import csv
import io
import json
import pickle
import shutil
import tracemalloc

import numpy as np
import pytest
import torch

from cifar10_resnet import checks
import helpers as H
from cifar10_resnet import predictions as P
from cifar10_resnet import safe_pickle
from cifar10_resnet.checks import BadInput
from conftest import ROOT
from cifar10_resnet.store import DiskFull, ResultsStore, atomic_write
from tools import predict as cli

NOTEBOOK = ROOT / "mini_project.ipynb"

# ---------------------------------------------------------------------------------------------------
# 1. The restricted unpickler: no small file may ask for much memory
# ---------------------------------------------------------------------------------------------------

BIG = b"J\xff\xff\xff\x7f"  # the pickle opcode BININT with 2**31 - 1
ARRAY_STATE = pickle.dumps(np.zeros(3, dtype=np.uint8), protocol=2)
GREEDY = {  # a few dozen bytes each, asking an admitted name for gigabytes
    "bytearray of 2 GiB": (b"\x80\x02c__builtin__\nbytearray\n" + BIG + b"\x85R.",
                           "__builtin__.bytearray, outside the few names plain data needs"),
    "ndarray of 16 GiB": (b"\x80\x02cnumpy\nndarray\n" + BIG + b"\x85R.", "an array of 17,179,869,176 bytes"),
    "array state of 2 GiB": (ARRAY_STATE.replace(b"K\x01K\x03\x85", b"K\x01" + BIG + b"\x85"),
                             "an array of 2,147,483,647 bytes"),
    "ndarray.__new__": (b"\x80\x02cnumpy\nndarray\n" + BIG + b"\x85\x81.", "an array of 17,179,869,176 bytes"),
    "a length it does not hold": (b"\x80\x04\x8e\xff\xff\xff\x7f\x00\x00\x00\x00.", "not a readable pickle"),
    "an object array": (pickle.dumps(np.array([1, "a"], dtype=object), protocol=2), "an array of Python objects"),
}


@pytest.mark.parametrize("attack", list(GREEDY))
def test_a_small_pickle_cannot_ask_for_much_memory(attack, tmp_path):
    payload, message = GREEDY[attack]
    path = tmp_path / "cifar_test_nolabels.pkl"
    path.write_bytes(payload)
    tracemalloc.start()
    try:
        with pytest.raises(BadInput, match=message):
            safe_pickle.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # bytes: nothing near what it asked for


def test_plain_data_of_every_protocol_still_loads(tmp_path):
    content = {"data": np.arange(3072 * 4, dtype=np.uint8).reshape(4, 3072), "ids": ["a", "b", 3, np.int64(4)],
               "labels": np.arange(4), "raw": b"\x00\xff", "shape": (4, 3072)}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(content, protocol=protocol))
        read = safe_pickle.load(path)
        assert np.array_equal(read["data"], content["data"]) and read["ids"] == content["ids"]
        assert read["raw"] == content["raw"] and read["shape"] == content["shape"]


# ---------------------------------------------------------------------------------------------------
# 2. The prediction CSV
# ---------------------------------------------------------------------------------------------------


def test_the_csv_reads_back_the_same_ids_whatever_they_hold(tmp_path):
    ids = ["plain", "with,comma", 'with "quotes"', "two\nlines", "  spaced ", "é-ünïcode", 7]
    path = tmp_path / "out.csv"
    P.write_csv(path, ids, torch.arange(len(ids)) % 10)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    assert rows[0] == ["ID", "Labels"] and len(rows) == len(ids) + 1
    assert [r[0] for r in rows[1:]] == [str(i) for i in ids]
    assert [int(r[1]) for r in rows[1:]] == [k % 10 for k in range(len(ids))]


@pytest.mark.parametrize("ids, first", [([1, "1", 2], "'1'"), ([np.int64(5), "5"], "'5'"), ([b"x", "x"], "'x'")])
def test_ids_that_the_csv_would_write_alike_are_refused(ids, first, tmp_path):
    with pytest.raises(BadInput, match=f"repeated ids \\(the first: {first}\\)"):
        P.checked_ids(ids, len(ids), tmp_path)


def test_out_is_checked_before_anything_is_loaded(tmp_path):
    source = tmp_path / "hidden.npy"
    np.save(source, np.zeros((2, 3072), dtype=np.uint8))
    before = source.read_bytes()
    (tmp_path / "a file").write_text("x")
    cases = {str(tmp_path): "is a folder; name the CSV file to write",
             str(tmp_path / "a file" / "out.csv"): "a file is a file, so the CSV's folder cannot be made",
             str(source): "is the input itself: writing the CSV would replace the images"}
    for out, message in cases.items():
        # no such model and no CIFAR-10: only a check made before any loading can answer
        with pytest.raises(SystemExit, match=f"error: --out .*{message}"):
            cli.main([str(source), "--out", out, "--model", "no such run", "--data-dir", str(tmp_path / "none")])
    assert source.read_bytes() == before


# ---------------------------------------------------------------------------------------------------
# 3. Images by their mode
# ---------------------------------------------------------------------------------------------------


def saved(folder, name, image):
    folder.mkdir(exist_ok=True)
    image.save(folder / name)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    values = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0 to 65,472
    saved(tmp_path / "in", "a.png", Image.fromarray(values))
    x = P.read_images(tmp_path / "in").x[0]
    expected = torch.from_numpy(np.round(values / 257).astype(np.uint8))
    assert all(torch.equal(x[c], expected) for c in range(3))
    assert len(x.unique()) > 200  # not one constant white image


def test_palette_rgba_cmyk_and_greyscale_keep_their_colours(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    saved(tmp_path / "in", "1-rgba.png", base.convert("RGBA"))
    saved(tmp_path / "in", "2-palette.png", base.quantize(256))
    saved(tmp_path / "in", "3-grey.png", base.convert("L"))
    saved(tmp_path / "in", "4-cmyk.jpg", base.convert("CMYK"))
    x = P.read_images(tmp_path / "in").x
    assert torch.equal(x[0], torch.from_numpy(rgb).permute(2, 0, 1))  # alpha dropped, colours kept
    assert torch.equal(x[1], torch.from_numpy(np.array(base.quantize(256).convert("RGB"))).permute(2, 0, 1))
    assert torch.equal(x[2][0], torch.from_numpy(np.array(base.convert("L"))))
    assert (x[3].float() - torch.from_numpy(rgb).permute(2, 0, 1).float()).abs().mean() < 12  # JPEG's loss only


def test_a_float_image_and_a_decompression_bomb_are_named(tmp_path, monkeypatch):
    from PIL import Image

    with pytest.raises(BadInput, match="an image of mode F .*save it as 8-bit RGB"):
        P.rgb(Image.new("F", (32, 32)), tmp_path / "f.tif")
    saved(tmp_path / "in", "huge.png", Image.new("RGB", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadInput, match="huge.png: .*shrink it first"):
        P.read_images(tmp_path / "in")


# ---------------------------------------------------------------------------------------------------
# 4. Every numeric setting in its range, before a model is built
# ---------------------------------------------------------------------------------------------------

CONFIG = {"epochs": 1, "batch_size": 8, "seed": 0, "lr": 0.1}
OUT_OF_RANGE = [("pad", -1, "[0, 31]"), ("cutout", -4, "[0, 32]"), ("momentum", -0.5, "[0, 1)"),
                ("momentum", 1.0, "[0, 1)"), ("label_smoothing", 2.0, "[0, 1)"),
                ("ema_decay", float("nan"), "[0, 1)"), ("weight_decay", float("inf"), "[0, inf)"),
                ("warmup", 1.5, "[0, 1]"), ("bias_lr_scale", 0.0, "(0, inf)"), ("lookahead", -1, "[0, inf)")]


@pytest.mark.parametrize("key, value, interval", OUT_OF_RANGE, ids=[f"{k}={v}" for k, v, _ in OUT_OF_RANGE])
def test_a_setting_outside_its_range_is_refused_with_the_range(key, value, interval):
    with pytest.raises(BadInput) as caught:
        H.Recipe.of({**CONFIG, key: value}, "model 1")
    assert f"model 1: config {key!r} is {value!r}, outside {interval}" in str(caught.value)


def test_a_seed_numpy_cannot_take_is_refused_in_a_config_and_as_a_parameter():
    with pytest.raises(BadInput, match="config 'seed' must be at most 4,294,967,295, not 4,294,967,296"):
        H.Recipe.of({**CONFIG, "seed": 2**32}, "model 1")
    namespace = H.notebook_namespace(NOTEBOOK, tags=("parameters",))
    given = {name: namespace[name] for name in checks.PARAMETERS}  # the parameters cell's values
    with pytest.raises(BadInput, match="SEED must be at most 4,294,967,295"):
        checks.parameters({**given, "SEED": 2**32})
    with pytest.raises(BadInput, match="the last seed, 4,294,967,296, is over 4,294,967,295"):
        checks.parameters({**given, "SEED": 2**32 - 2, "FINAL_SEEDS": 3})


# ---------------------------------------------------------------------------------------------------
# 5. Inputs of tools/predict.py that used to end in a traceback
# ---------------------------------------------------------------------------------------------------


def npy_claiming_more(path):
    np.save(path, np.zeros((4, 3072), dtype=np.uint8))
    path.write_bytes(path.read_bytes().replace(b"(4, 3072)", b"(400000, 3072)"))


UNREADABLE = {
    "an empty pickle": ("a.pkl", lambda p: p.write_bytes(b""), "a.pkl is not a readable pickle"),
    "a pickle cut short": ("b.pkl", lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8)})
                                                            [:300]), "b.pkl is not a readable pickle"),
    "an .npz": ("c.npz", lambda p: np.savez(p, data=np.zeros(3)), "c.npz is an .npz archive"),
    "an object .npy": ("d.npy", lambda p: np.save(p, np.array([1, "a"], dtype=object), allow_pickle=True),
                       "d.npy holds an array of Python objects"),
    "an .npy claiming more than it holds": ("e.npy", npy_claiming_more, "e.npy: its header promises an array"),
    "a pickle named .npy": ("f.npy", lambda p: p.write_bytes(pickle.dumps({"data": 1})), "f.npy is a pickle"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_input_is_one_line_naming_the_file(case, tmp_path):
    name, make, message = UNREADABLE[case]
    make(tmp_path / name)
    with pytest.raises(BadInput, match=message) as caught:
        P.read_images(tmp_path / name)
    assert "allow_pickle=True" not in str(caught.value)  # never the advice to load it unsafely


def test_an_unreadable_input_stops_the_command_before_the_model(tmp_path):
    (tmp_path / "a.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(SystemExit, match="error: .*a.pkl is not a readable pickle"):
        cli.main([str(tmp_path / "a.pkl"), "--out", str(tmp_path / "out.csv"), "--data-dir", str(tmp_path)])
    assert not (tmp_path / "out.csv").exists()


def test_a_full_disk_says_so_and_keeps_the_earlier_file(tmp_path, monkeypatch):
    from cifar10_resnet import store

    path = tmp_path / "m.pt"
    path.write_bytes(b"the earlier checkpoint")

    def torch_on_a_full_disk(tmp):
        tmp.write_bytes(b"\0" * 128)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 128 vs 0")

    monkeypatch.setattr(store.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(DiskFull, match="m.pt could not be written: its disk is full .*untouched"):
        atomic_write(path, torch_on_a_full_disk)
    assert path.read_bytes() == b"the earlier checkpoint" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


# ---------------------------------------------------------------------------------------------------
# 6. Predictions from the weights alone
# ---------------------------------------------------------------------------------------------------


def test_the_shipped_model_predicts_without_cifar10(raw, data_dir, tmp_path, monkeypatch):
    """The default model's summary records the statistics it trained with; with no CIFAR-10 anywhere (the data
    loader made to fail) the command predicts, and as it does with the statistics read from CIFAR-10."""
    source = tmp_path / "hidden.npy"
    np.save(source, raw["test_x"][:8].numpy())
    with_data, engine = tmp_path / "with.csv", H.Engine.for_device("cpu")
    model, summary = P.stored_model(ResultsStore(ROOT / "results"), "final seed 0", H.notebook_networks(P.NOTEBOOK))
    P.write_predictions(P.read_images(source), with_data, engine.prepare(model), summary["config"],
                        H.prepare_data(data_dir), engine, tta=True)  # the statistics read from CIFAR-10

    def no_cifar(*args, **kwargs):
        raise AssertionError("CIFAR-10 was read")

    monkeypatch.setattr(P, "prepare_data", no_cifar)
    alone = tmp_path / "alone.csv"
    cli.main([str(source), "--out", str(alone), "--device", "cpu"])
    assert alone.read_text() == with_data.read_text()
    recorded = P.normalisation(ResultsStore(ROOT / "results").load("final seed 0"), None)
    expected = H.prepare_data(data_dir)
    assert torch.equal(recorded.mean, expected.mean) and torch.equal(recorded.std, expected.std)


def test_a_run_that_records_no_statistics_asks_for_the_data(tmp_path):
    summary = ResultsStore(ROOT / "results").load("model 6")
    summary.pop("normalisation")
    with pytest.raises(BadInput, match="'model 6' records no normalisation statistics .*give --data-dir"):
        P.normalisation(summary, None)


DAMAGED_RECORDS = [({"mean": [0.5, 0.5], "std": [0.2] * 3}, "no three numbers as its 'mean'"),
                   ({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}, "no three positive numbers as its 'std'"),
                   ({"mean": [float("nan")] * 3, "std": [0.2] * 3}, "no three numbers as its 'mean': \\[nan")]


@pytest.mark.parametrize("record, fault", DAMAGED_RECORDS)
def test_a_damaged_record_of_the_statistics_is_set_aside(record, fault, tmp_path):
    for suffix in (".json", ".csv"):
        shutil.copy(ROOT / "results" / f"model 6{suffix}", tmp_path / f"model 6{suffix}")
    path = tmp_path / "model 6.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "normalisation": record}))
    with pytest.warns(UserWarning, match=f"summary 'normalisation' has {fault}"):
        assert ResultsStore(tmp_path).load("model 6") is None


def test_recording_the_statistics_keeps_the_run_and_its_hash(tmp_path):
    for suffix in (".json", ".csv", ".pt"):
        shutil.copy(ROOT / "results" / f"model 6{suffix}", tmp_path / f"model 6{suffix}")
    path = tmp_path / "model 6.json"
    before = json.loads(path.read_text())
    stats = before.pop("normalisation")
    path.write_text(json.dumps(before))
    store = ResultsStore(tmp_path)
    assert P.record_normalisation(store, H.Normalisation.of(stats)) == ["model 6"]
    after = json.loads(path.read_text())
    assert after == {**before, "normalisation": stats} and store.load("model 6")["config_hash"] == before["config_hash"]
    assert P.record_normalisation(store, H.Normalisation.of(stats)) == []  # once
