"""Predictions for a hidden test set (tools/predict.py, predictions.py) on real CIFAR-10 test images, and the safe
unpickler that every pickle the project reads goes through."""
import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch

import helpers as H
from cifar10_resnet import predictions as P
from cifar10_resnet import safe_pickle
from conftest import ROOT, RunsCode
from cifar10_resnet.store import ResultsStore
from tools import predict as cli

IMAGES = 200  # test images in a hidden set: enough to show the order is kept, cheap with 4 views on a CPU


@pytest.fixture(scope="module")
def hidden(raw):
    """The first IMAGES test images in a shuffled order, with made-up ids: (order, ids, channel-first rows)."""
    rng = np.random.default_rng(7)
    order = rng.permutation(IMAGES)
    ids = [f"img-{n:05d}" for n in rng.choice(100_000, IMAGES, replace=False)]
    return order, ids, raw["test_x"][order].numpy()


def run(tmp_path, source, *options, data_dir) -> pd.DataFrame:
    """tools/predict.py on `source`; the CSV it wrote, ids read as text."""
    out = tmp_path / f"{source.stem}.csv"
    cli.main([str(source), "--out", str(out), "--data-dir", str(data_dir), *options])
    return pd.read_csv(out, dtype={"ID": str})


def dump(path, content, protocol=pickle.HIGHEST_PROTOCOL):
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


# --- the predictions ----------------------------------------------------------------------------------------

def test_both_layouts_give_the_same_csv_in_input_order_as_the_project_scores(hidden, data, data_dir, tmp_path,
                                                                             capsys):
    order, ids, rows = hidden
    channel_last = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    sources = [dump(tmp_path / "cifar_test_nolabels.pkl", {b"data": rows.reshape(-1, 3072), b"ids": ids}),  # 2024
               dump(tmp_path / "cifar_test_nolabel.pkl", {"data": channel_last, "ids": np.array(ids)}),     # 2025
               tmp_path / "hidden.npy"]
    np.save(sources[2], channel_last)
    csvs = [run(tmp_path, source, data_dir=data_dir) for source in sources]
    assert (tmp_path / "cifar_test_nolabels.csv").read_text().startswith("ID,Labels\n")
    assert csvs[0].equals(csvs[1]) and csvs[0]["ID"].tolist() == ids  # the input's order, its ids
    assert csvs[2]["ID"].tolist() == [str(k) for k in range(IMAGES)]  # a bare array: its row numbers
    assert csvs[2]["Labels"].equals(csvs[0]["Labels"])
    # the project's own evaluation of the same weights and views, on the test set in its own order
    model, summary = P.stored_model(ResultsStore(ROOT / "results"), P.DEFAULT_MODEL, H.notebook_networks())
    engine = H.Engine.for_device("cpu")
    test = H.eval_batches((data.test[0][:IMAGES], data.test[1][:IMAGES]), data, engine.device)
    views = H.Recipe.of(summary["config"]).tta_views
    logits = H.predict(engine.prepare(model), test, engine, tta=True, views=views)
    assert csvs[0]["Labels"].tolist() == logits.argmax(1)[order].tolist()
    printed = capsys.readouterr().out
    assert f"{IMAGES} images (N x 3072 rows, channel-first) from" in printed
    assert re.search(r"predicted with 4 test-time views on CPU \(.*\) in \d+\.\d s\n", printed)
    counts = torch.bincount(torch.tensor(csvs[0]["Labels"].tolist()), minlength=10).tolist()
    assert "predicted classes: " + ", ".join(f"{c} {n}" for c, n in zip(H.CLASSES, counts)) in " ".join(
        printed.replace("\n  ", " ").splitlines())
    assert f"wrote {tmp_path / 'cifar_test_nolabels.csv'}" in printed


def test_the_whole_test_set_in_order_scores_the_stored_test_accuracy(data_dir, raw, tmp_path):
    """CIFAR-10's own test_batch as the input (a dict without ids: the rows are numbered): Model 6's predictions
    reproduce its stored test accuracy (trained and tested in bf16 on a GPU; fp32 here)."""
    csv = run(tmp_path, data_dir / H.CIFAR_FOLDER / "test_batch", "--model", "model 6", data_dir=data_dir)
    assert csv["ID"].tolist() == [str(k) for k in range(10_000)]
    accuracy = (torch.tensor(csv["Labels"].to_numpy()) == raw["test_y"]).double().mean().item()
    stored = ResultsStore(ROOT / "results").load("model 6")["test_acc"]
    assert abs(accuracy - stored) <= 0.0005, (accuracy, stored)


def test_a_folder_of_images_is_read_in_natural_order_and_resized(raw, data, data_dir, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    count = 24
    for k in range(count):  # img1.png ... img24.png: natural order puts img2 before img10
        Image.fromarray(raw["test_x"][k].permute(1, 2, 0).numpy()).save(folder / f"img{k + 1}.png")
    big = Image.fromarray(raw["test_x"][count].permute(1, 2, 0).numpy()).resize((64, 64), Image.NEAREST)
    big.save(folder / f"img{count + 1}.png")
    (folder / "notes.txt").write_text("not an image: left alone")
    csv = run(tmp_path, folder, "--no-tta", data_dir=data_dir)
    assert csv["ID"].tolist() == [f"img{k + 1}" for k in range(count + 1)]
    printed = capsys.readouterr().out
    assert f"1 of {count + 1} images were not 32x32: resized to it" in printed
    assert "predicted with no test-time augmentation" in printed
    model, _ = P.stored_model(ResultsStore(ROOT / "results"), P.DEFAULT_MODEL, H.notebook_networks())
    engine = H.Engine.for_device("cpu")
    test = H.eval_batches((data.test[0][:count], data.test[1][:count]), data, engine.device)
    assert csv["Labels"].tolist()[:count] == H.predict(engine.prepare(model), test, engine).argmax(1).tolist()


# --- what is refused -------------------------------------------------------------------------------------

def test_a_pickle_that_would_run_code_is_refused_in_data_dir_and_as_input(tmp_path, data_dir):
    marker = tmp_path / "code ran"
    planted = tmp_path / "data" / H.CIFAR_FOLDER
    planted.mkdir(parents=True)
    dump(planted / "data_batch_1", {"data": RunsCode(marker), "labels": [0]})
    with pytest.raises(safe_pickle.NotPlainData, match=r"data_batch_1 is not a plain data pickle.*pathlib"):
        H.load_cifar10(tmp_path / "data", download=False)
    assert not marker.exists()
    hostile = dump(tmp_path / "cifar_test_nolabels.pkl", {b"data": RunsCode(marker), b"ids": [0]})
    with pytest.raises(SystemExit, match=r"cifar_test_nolabels.pkl is not a plain data pickle"):
        cli.main([str(hostile), "--out", str(tmp_path / "out.csv"), "--data-dir", str(data_dir)])
    assert not marker.exists() and not (tmp_path / "out.csv").exists()


def test_the_safe_unpickler_reads_plain_data_as_pickle_does(data_dir, tmp_path):
    batch = data_dir / H.CIFAR_FOLDER / "test_batch"
    with open(batch, "rb") as f:
        plain = pickle.load(f, encoding="latin1")
    safe = safe_pickle.load(batch)
    assert safe.keys() == plain.keys() and np.array_equal(safe["data"], plain["data"])
    assert safe["labels"] == plain["labels"]
    content = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"ids": [np.int64(4), 2.5, "x", None],
               "shape": (3, 4), "dtype": np.dtype("float32"), "raw": b"\x00\xff"}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):  # protocol 2 writes bytes through _codecs.encode
        read = safe_pickle.load(dump(tmp_path / f"p{protocol}.pkl", content, protocol))
        assert np.array_equal(read[b"data"], content[b"data"]) and read[b"ids"] == content[b"ids"]
        assert {k: v for k, v in read.items() if k != b"data"} == {k: v for k, v in content.items() if k != b"data"}
    assert safe_pickle.text_keys({b"data": 1, "ids": 2}) == {"data": 1, "ids": 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_asking_for_a_gpu_that_is_not_there_says_so(tmp_path, data_dir):
    with pytest.raises(SystemExit, match=r"--device cuda: this machine has no CUDA device; use --device cpu"):
        cli.main([str(tmp_path), "--out", str(tmp_path / "out.csv"), "--device", "cuda"])
    assert not (tmp_path / "out.csv").exists()


def bad_inputs(tmp_path, raw):
    """Each bad input, by name: (a path to give as INPUT, the options, a phrase its error must hold)."""
    rows = raw["test_x"][:8].reshape(8, -1).numpy()
    folder, empty = tmp_path / "folder", tmp_path / "empty"
    folder.mkdir()
    empty.mkdir()
    (folder / "0.png").write_bytes(b"\x89PNG not really")
    return {
        "float pixels": (dump(tmp_path / "f.pkl", {"data": rows / 255.0, "ids": list(range(8))}), (),
                         r"f.pkl: the images are float64, not uint8"),
        "neither layout": (dump(tmp_path / "s.pkl", {"data": rows.reshape(8, 3, 1024), "ids": list(range(8))}), (),
                           r"s.pkl: images of shape \(8, 3, 1024\) are in neither layout"),
        "ids count": (dump(tmp_path / "n.pkl", {"data": rows, "ids": list(range(7))}), (),
                      r"n.pkl: 7 ids for 8 images"),
        "duplicate ids": (dump(tmp_path / "d.pkl", {"data": rows, "ids": [1, 2, 3, 4, 5, 6, 7, 7]}), (),
                          r"d.pkl: 1 repeated ids \(the first: '7'\)"),
        "no images": (dump(tmp_path / "z.pkl", {"data": rows[:0], "ids": []}), (), r"z.pkl: holds no images"),
        "float ids": (dump(tmp_path / "i.pkl", {"data": rows, "ids": np.arange(8) / 2}), (),
                      r"i.pkl: ids must be integers or strings, not float"),
        "no data": (dump(tmp_path / "k.pkl", {"images": rows}), (), r"k.pkl: a dict without a 'data' entry"),
        "missing": (tmp_path / "nowhere.pkl", (), r"nowhere.pkl does not exist"),
        "empty folder": (empty, (), r"empty: no PNG or JPEG images in this folder"),
        "unreadable image": (folder, (), r"0.png: not a readable image"),
        "unknown model": (empty, ("--model", "model 9"), r"no stored run named 'model 9'.*'final seed 0', 'model 6'"),
        "no weights": (empty, ("--model", "model 3"),
                       r"'model 3' has no stored weights.*keep_weights=True.*Experiments cell's train\(\)"),
    }


@pytest.mark.parametrize("case", ["float pixels", "neither layout", "no images", "float ids", "ids count",
                                  "duplicate ids", "no data", "missing", "empty folder", "unreadable image",
                                  "unknown model", "no weights"])
def test_bad_input_stops_with_one_error_that_names_it_and_writes_nothing(case, tmp_path, raw, data_dir):
    source, options, message = bad_inputs(tmp_path, raw)[case]
    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit, match=message):
        cli.main([str(source), "--out", str(out), "--data-dir", str(data_dir), *options])
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
