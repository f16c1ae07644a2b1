"""Predictions for a hidden test set: unlabeled CIFAR-like images in, a CSV of class indices out.

The input, told apart by what it is (`read_images`):
    a pickle  a dict with "data" and "ids" (bytes or str keys), read by `safe_pickle` (nothing in it runs);
              "data" is uint8, N x 3072 rows in CIFAR-10's channel-first order (the course's 2024 file,
              cifar_test_nolabels.pkl) or N x 32 x 32 x 3 channel-last (2025, cifar_test_nolabel.pkl)
    a .npy    the same arrays; the ids are the row numbers
    a folder  PNG or JPEG images; the ids are the file names without their suffix, in natural order (2 before 10);
              an image of another size is resized to 32x32
The output: a CSV with the header ID,Labels and one class index (0-9, `data.CLASSES`) per image, in input
order, written atomically and only after every check has passed. `tools/predict.py` is the command line; the
notebook's last section calls `read_images` and `write_predictions` with its reloaded final model.
"""
from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import safe_pickle
from .checks import BadInput
from .data import CLASSES, EVAL_BATCH, Batches, Data, Normalisation, prepare_data
from .engine import Engine, device_name
from .evaluation import predict
from .networks import Registry
from .recipe import Recipe
from .store import ResultsStore, atomic_write, load_weights
from .text import wrapped

NOTEBOOK = Path(__file__).resolve().parents[1] / "mini_project.ipynb"  # the repository's root, above the package
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SIDE = 32  # pixels: CIFAR-10's height and width
DEFAULT_MODEL = "final seed 0"  # the final model's shipped weights
# which cell keeps a run's weights, for the message when they are missing
KEEPS_WEIGHTS = {"model 6": "the Experiments cell's train() keeps them (keep_weights=name == \"model 6\")",
                 "final seed 0": "the final model's cell keeps them (keep_weights=k == 0)"}


# ---------------------------------------------------------------------------------------------------
# 1. Reading the images
# ---------------------------------------------------------------------------------------------------


@dataclass
class Images:
    """What was read: uint8 images (N, 3, 32, 32) with their ids, in input order."""

    x: torch.Tensor
    ids: list
    origin: Path      # the file or folder they came from
    layout: str       # how they were laid out, for the log
    resized: int = 0  # images of another size, resized to 32x32


def channel_first(array, origin: Path) -> tuple[torch.Tensor, str]:
    """uint8 images (N, 3, 32, 32) from N x 3072 rows (channel-first, CIFAR-10's own layout), N x 3 x 32 x 32
    or N x 32 x 32 x 3 (channel-last); any other shape or dtype is refused."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise BadInput(f"{origin}: the images are {array.dtype}, not uint8 (pixel values 0-255); convert them with "
                       f"np.asarray(data).astype(np.uint8) after scaling to 0-255")
    shape = tuple(array.shape)
    if not array.size:
        raise BadInput(f"{origin}: holds no images (an array of shape {shape}); expected N >= 1 images")
    if len(shape) == 2 and shape[1] == 3 * SIDE * SIDE:
        return torch.from_numpy(array.reshape(-1, 3, SIDE, SIDE).copy()), "N x 3072 rows, channel-first"
    if shape[1:] == (3, SIDE, SIDE):
        return torch.from_numpy(array.copy()), "N x 3 x 32 x 32, channel-first"
    if shape[1:] == (SIDE, SIDE, 3):
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), "N x 32 x 32 x 3, channel-last"
    raise BadInput(f"{origin}: images of shape {shape} are in neither layout: expected N x 3072 (channel-first "
                   f"rows, as CIFAR-10's batches) or N x 32 x 32 x 3 (channel-last)")


def plain_id(value):
    """An id as the CSV writes it: numpy scalars and bytes become Python ints and strings."""
    value = value.item() if isinstance(value, np.generic) else value
    return value.decode() if isinstance(value, bytes) else value


def checked_ids(ids, count: int, origin: Path) -> list:
    """The ids as a list, one per image and each once."""
    ids = [plain_id(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else list(ids))]
    if not all(isinstance(i, (int, str)) for i in ids):
        kinds = sorted({type(i).__name__ for i in ids} - {"int", "str"})
        raise BadInput(f"{origin}: ids must be integers or strings, not {', '.join(kinds)}")
    if len(ids) != count:
        raise BadInput(f"{origin}: {len(ids):,} ids for {count:,} images; each image needs exactly one id")
    # compared as the CSV will write them: 1 and "1" are one id there
    repeated = [i for i, n in Counter(map(str, ids)).items() if n > 1]
    if repeated:
        raise BadInput(f"{origin}: {len(repeated):,} repeated ids (the first: {repeated[0]!r}); each id must be "
                       f"unique for the CSV to say which image a label belongs to")
    return ids


def read_npy(path: Path) -> np.ndarray:
    """A .npy array of numbers, its header checked against the file before any memory is taken for it; a pickle,
    an object array or a file shorter than its header says raise BadInput naming the file."""
    fix = "save the images with np.save(path, array): uint8, N x 32 x 32 x 3 or N x 3072"
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(f)
        except ValueError:  # not a .npy: no magic string, or no header
            f.seek(0)
            kind = "a pickle" if f.read(1) == b"\x80" else "not a .npy array"  # a pickle's PROTO opcode
            raise BadInput(f"{path} is {kind}; a .npy must hold an array of numbers ({fix}); a pickle reads "
                           f"safely under a .pkl name") from None
        if dtype.hasobject:
            raise BadInput(f"{path} holds an array of Python objects ({dtype}), which only an unsafe load could read; "
                           f"{fix}")
        needed, held = int(np.prod(shape)) * dtype.itemsize, path.stat().st_size - f.tell()
        if needed > held:
            raise BadInput(f"{path}: its header promises an array {shape} of {dtype} ({needed:,} bytes), but the "
                           f"file holds {held:,}: it is cut short or damaged; {fix}")
        f.seek(0)
        return np.load(f, allow_pickle=False)  # no pickled objects: nothing in it can run


def read_array_file(path: Path) -> Images:
    """A pickle (dict with data and ids, or a bare array) or a .npy array."""
    if path.suffix == ".npz":
        raise BadInput(f"{path} is an .npz archive of several arrays; save the images alone with np.save as .npy, "
                       f"or as a pickle {{'data': images, 'ids': ids}}")
    content = read_npy(path) if path.suffix == ".npy" else safe_pickle.load(path)
    ids = None
    if isinstance(content, dict):
        content = safe_pickle.text_keys(content, path)
        if "data" not in content:
            raise BadInput(f"{path}: a dict without a 'data' entry (its keys: {sorted(map(str, content))}); "
                           f"expected the course's layout, {{'data': images, 'ids': ids}}")
        ids = content.get("ids")
        content = content["data"]
    x, layout = channel_first(content, path)
    if ids is None:
        print(f"{path.name}: no ids in the file; rows numbered 0-{len(x) - 1} in their order")
        ids = range(len(x))
    return Images(x, checked_ids(ids, len(x), path), path, layout)


def natural_key(path: Path) -> list:
    """Sort key that puts '2.png' before '10.png'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def rgb(image, path: Path):
    """8-bit RGB from an image of any usual mode by its real values: PIL's conversions for palette, greyscale,
    RGBA (alpha dropped) and CMYK, 16-bit integer images scaled from 0-65535; a float image is refused."""
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I"):
        # PIL's own conversion clips 16-bit values at 255: every pixel of a 16-bit photo would be white
        values = np.asarray(image, dtype=np.float64) / 257
        if values.max() > 255 or values.min() < 0:
            raise BadInput(f"{path}: a {image.mode} image with values outside 16 bits; save it as 8-bit RGB")
        image = Image.fromarray(np.round(values).astype(np.uint8), mode="L")
    elif image.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        raise BadInput(f"{path}: an image of mode {image.mode} (floating-point or unusual pixels); save it as 8-bit "
                       f"RGB")
    return image.convert("RGB")


def read_folder(folder: Path) -> Images:
    """The PNG and JPEG images of a folder, in natural order of their names, as RGB; other sizes resized."""
    from PIL import Image, UnidentifiedImageError

    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not files:
        raise BadInput(f"{folder}: no PNG or JPEG images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
    ids = checked_ids([p.stem for p in files], len(files), folder)
    images, resized = [], 0
    for path in files:
        try:
            with Image.open(path) as opened:
                image = rgb(opened, path)
        except Image.DecompressionBombError as error:
            raise BadInput(f"{path}: {error}; a CIFAR-like image is 32x32 pixels: shrink it first") from None
        except (UnidentifiedImageError, OSError) as error:
            raise BadInput(f"{path}: not a readable image ({error}); remove it or replace it") from None
        if image.size != (SIDE, SIDE):
            image, resized = image.resize((SIDE, SIDE), Image.Resampling.BICUBIC), resized + 1
        images.append(np.asarray(image))
    x, _ = channel_first(np.stack(images), folder)
    return Images(x, ids, folder, "PNG/JPEG files", resized)


def read_images(source: str | Path) -> Images:
    """The images to predict, from a pickle, a .npy array or a folder of images (this module's docstring)."""
    source = Path(source)
    if not source.exists():
        raise BadInput(f"{source} does not exist: give a pickle, a .npy array or a folder of PNG/JPEG images")
    images = read_folder(source) if source.is_dir() else read_array_file(source)
    if images.resized:
        print(f"{images.resized:,} of {len(images.x):,} images were not {SIDE}x{SIDE}: resized to it (bicubic)")
    return images


# ---------------------------------------------------------------------------------------------------
# 2. The model: rebuilt from the notebook's registry of networks and the stored configuration
# ---------------------------------------------------------------------------------------------------


def stored_model(store: ResultsStore, name: str, networks: Registry) -> tuple[nn.Module, dict]:
    """The network of the stored run `name` (its configuration's "arch" in `networks`, the notebook's `NETWORKS`)
    with its saved weights, and the run's summary."""
    summaries = store.summaries()
    with_weights = sorted(n for n in summaries if store.path(n, ".pt").exists())
    if name not in summaries:
        raise BadInput(f"no stored run named {name!r} in {store.root}/; runs with weights: {with_weights}")
    weights = store.path(name, ".pt")
    if not weights.exists():
        keeps = "; ".join(f"for {n}, {how}" for n, how in KEEPS_WEIGHTS.items())
        raise BadInput(f"{name!r} has no stored weights ({weights} is missing): its run keeps only its scores. "
                       f"Choose one of {with_weights}, or train it with keep_weights=True "
                       f"(experiments.run_experiment; {keeps})")
    summary = summaries[name]
    try:
        return load_weights(networks.build(summary["config"], name), weights), summary
    # garbage, cut short, another architecture: the same fault
    except Exception as error:  # noqa: BLE001
        # the cause, not torch's advice that follows
        first = str(error).split(". ")[0].splitlines()[0]
        raise BadInput(f"{weights} does not load into the network of {name!r} ({type(error).__name__}: "
                       f"{first}); a Run all sets it aside and trains the run again") from None


def normalisation(summary: dict, data_dir: str | Path | None) -> Normalisation:
    """The statistics the stored run trained with: as its summary records them, or (for a run that records none)
    from the training split of CIFAR-10 in `data_dir`; BadInput when neither is at hand."""
    if "normalisation" in summary:
        return Normalisation.of(summary["normalisation"])
    if data_dir is None:
        raise BadInput(f"{summary['name']!r} records no normalisation statistics (it was stored before runs did): "
                       f"give --data-dir, a folder with CIFAR-10, whose training split gives them")
    return Normalisation(*prepare_data(data_dir).stats)  # the notebook's 45k split


def record_normalisation(store: ResultsStore, stats: Normalisation) -> list[str]:
    """Write `stats` into every summary of `store` with weights that records none (runs stored before runs
    recorded it; their configuration and its hash untouched); returns their names."""
    recorded = []
    for name, summary in store.summaries().items():
        if store.path(name, ".pt").exists() and "normalisation" not in summary:
            stored = json.loads(store.path(name, ".json").read_text())  # its keys as written, not as read
            text = json.dumps({**stored, "normalisation": stats.record()}, indent=2)
            atomic_write(store.path(name, ".json"), lambda tmp: tmp.write_text(text))
            recorded.append(name)
    if recorded:
        store.write_index()
    return recorded


def accuracy_text(summary: dict) -> str:
    """'test accuracy 95.48% as stored', or what the run has instead."""
    if summary.get("test_acc") is None:
        return "not tested: scored on validation only"
    return f"test accuracy {100 * summary['test_acc']:.2f}% as stored"


# ---------------------------------------------------------------------------------------------------
# 3. Predicting and writing the CSV
# ---------------------------------------------------------------------------------------------------


def predict_labels(model: nn.Module, x: torch.Tensor, mean, std, engine: Engine, config: dict,
                   tta: bool) -> torch.Tensor:
    """Class indices of uint8 images, as `evaluation.evaluate_recipe` scores them: the same normalisation, batches
    and (with `tta`) the recipe's test-time views."""
    batches = Batches((x, torch.zeros(len(x), dtype=torch.long)), EVAL_BATCH, (mean, std), engine.device)
    views = Recipe.of(config).tta_views
    return predict(model, batches, engine, tta=tta, views=views).argmax(1).cpu()


def check_out(out: str | Path, source: str | Path, name: str = "--out") -> Path:
    """The CSV path `out`, checked before anything is read or predicted: not a folder, its folder makable (no file
    on the way), not the input `source` itself. BadInput naming it (as `name`) otherwise."""
    out, source = Path(out), Path(source)
    if out.is_dir():
        raise BadInput(f"{name} {out} is a folder; name the CSV file to write, such as {out / 'submission.csv'}")
    above = next((folder for folder in out.absolute().parents if folder.exists()), None)
    if above is not None and not above.is_dir():
        raise BadInput(f"{name} {out}: {above} is a file, so the CSV's folder cannot be made there; choose another "
                       f"path")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise BadInput(f"{name} {out} is the input itself: writing the CSV would replace the images; name another "
                       f"file")
    return out


def write_csv(path: str | Path, ids: list, labels: torch.Tensor) -> None:
    """ID,Labels, one row per image in input order, written by the csv module (an id with a comma, a quote or a
    line break is quoted, so that it reads back as itself); the file appears whole or not at all."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["ID", "Labels"])
    writer.writerows(zip(ids, labels.tolist()))
    atomic_write(path, lambda tmp: tmp.write_text(text.getvalue(), encoding="utf-8", newline=""))


def histogram_text(labels: torch.Tensor) -> str:
    """'airplane 1,003, automobile 998, ...': how many images each class received."""
    counts = torch.bincount(labels, minlength=len(CLASSES)).tolist()
    return ", ".join(f"{name} {n:,}" for name, n in zip(CLASSES, counts))


def write_predictions(images: Images, out: str | Path, model: nn.Module, config: dict,
                      stats: Data | Normalisation, engine: Engine, tta: bool) -> torch.Tensor:
    """Predict every image with `model` (prepared by `engine`, normalised with the `stats` it trained with: a
    `Data`'s training split, or the run's recorded `Normalisation`), write the CSV `out`, print what was done;
    returns the labels."""
    start = time.perf_counter()
    labels = predict_labels(model, images.x, stats.mean, stats.std, engine, config, tta)
    write_csv(out, images.ids, labels)
    views = f"{Recipe.of(config).tta_views} test-time views" if tta else "no test-time augmentation"
    print(f"{len(labels):,} images ({images.layout}) from {images.origin}")
    print(f"predicted with {views} on {device_name(engine.device)} in {time.perf_counter() - start:.1f} s")
    print(wrapped(f"predicted classes: {histogram_text(labels)}"))
    print(f"wrote {out}")
    return labels
