"""The training companion of `mini_project.ipynb`: data, batches, the training step, `fit`, experiments, choices.

Read it top to bottom: the defaults every run starts from; CIFAR-10 and its splits; batches and augmentation on
the device; the models' counts; the engine (precision, optimizer); the training step, epoch and evaluation;
`fit`; running one experiment; choosing on validation. Beside it: `cuda_graph.py` (the step as a CUDA graph),
`store.py` (results on disk), `plan.py` (what Run all will cost), `report.py` (tables and figures).
Nothing runs at import time: no data is read, no device is touched, no folder is made.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import os
import platform
import random
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import safe_pickle
from checks import BadInput, positive, shown, whole, writable_folder
from cuda_graph import CHECK_STEPS, CapturedStep, checked_capture
from store import ResultsStore, atomic_write, config_hash, load_weights, quarantine, save_weights

# ---------------------------------------------------------------------------------------------------
# 1. Defaults: what a run's configuration leaves out (required: epochs, lr, batch_size, seed)
# ---------------------------------------------------------------------------------------------------

DEFAULTS = {
    "momentum": 0.9,           # SGD momentum
    "weight_decay": 0.0,       # L2 penalty added to each gradient (SGD's weight_decay)
    "nesterov": False,         # Nesterov momentum
    "schedule": "constant",    # learning-rate multiplier per step: constant, cosine or onecycle (`make_scheduler`)
    "warmup": 0.0,             # onecycle: fraction of all steps spent rising from 0.1 to 1
    "label_smoothing": 0.0,    # probability mass spread over the other classes
    "ema_decay": 0.0,          # weight average: 0 for none, else its decay per update (`ModelEMA`)
    "ema_buffers": "copy",     # the average's BatchNorm statistics: "average", or "copy" as every run before the key
    "lr_start": 0.1,           # onecycle: the multiplier the warm-up starts from (airbench's triangle: 0.2)
    "lr_end": 0.0,             # onecycle: the multiplier the decay ends at (airbench's triangle: 0.07)
    "pad": 4,                  # pixels of padding before the random 32x32 crop
    "pad_mode": "constant",    # the padding: "constant" (zeros, black) or "reflect" (airbench: no black border)
    "flip": "random",          # "random": each image of each batch; "alternate": each image on every other epoch
    "cutout": 0,               # pixels: side of the square blanked in each training image; 0 for none
    "cutout_inside": False,    # True: the whole square always inside the image (airbench); False: clipped
    "tta_views": 4,            # test-time views (`tta_views`): 4, or airbench's 6 with reflected translations
    # airbench's ingredients (Jordan, arXiv 2404.00498), each off unless a recipe sets it:
    "bias_lr_scale": 1.0,      # BatchNorm biases: lr x this, weight decay / this (the same decay per step); 64
    "freeze_bn_scale": False,  # BatchNorm scales held at 1 by a learning rate of 0 (BatchNorm without a scale)
    "whiten_bias_epochs": 0,   # epochs the bias of a whitening stem (`model.whiten`) trains, then lr 0; 3
    "lookahead": 0,            # steps between lookahead's pulls toward the slow weights (`Lookahead`); 0 for none
}
WHITENING_IMAGES = 5000        # training images whose 2x2 patches set a whitening stem's filters
EVAL_BATCH = 1024              # images per evaluation batch


REQUIRED = {"epochs": "passes over the training images", "lr": "the peak learning rate",
            "batch_size": "images per step", "seed": "weights, data order and augmentation"}
DESCRIBED = {"arch": "the architecture's name", "widths": "channels per stage", "blocks": "blocks per stage",
             "tta": "whether the run is tested with test-time views", "quick": "whether it ran in quick mode"}
KNOWN = {**REQUIRED, **DEFAULTS, **DESCRIBED}  # every key a configuration may hold: the others are typos


def check_keys(config: dict, run: str = "a run") -> None:
    """Refuse a configuration with a key outside KNOWN (a misspelt key would be replaced by its default and
    hashed as another experiment) or without a REQUIRED one, naming the keys it takes."""
    unknown, missing = sorted(set(config) - set(KNOWN)), sorted(set(REQUIRED) - set(config))
    if unknown or missing:
        fault = f"unknown key {', '.join(map(repr, unknown))}" if unknown else f"no {', '.join(missing)}"
        raise BadInput(f"{run}: the configuration has {fault}; the keys it takes: {', '.join(KNOWN)}")


def check_config(config: dict, run: str = "a run") -> None:
    """`check_keys`, then the values that a run hashes and trains with: whole epochs, batch size and seed,
    a positive learning rate, and each DEFAULTS key of its default's type (True for a bool, a number...)."""
    check_keys(config, run)
    whole(f"{run}: config 'epochs'", config["epochs"])
    whole(f"{run}: config 'batch_size'", config["batch_size"])
    whole(f"{run}: config 'seed'", config["seed"], least=0)
    positive(f"{run}: config 'lr'", config["lr"])
    for key, default in DEFAULTS.items():
        if not same_kind(config.get(key, default), default):
            raise BadInput(f"{run}: config {key!r} must be of type {type(default).__name__}, like its default "
                           f"{default!r}, not {shown(config[key])}")


def same_kind(value, default) -> bool:
    """Whether `value` can stand where `default` does: a bool for a bool, an int for an int (not True), any
    real number for a float, a string for a string."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    kind = {int: numbers.Integral, float: numbers.Real}.get(type(default), type(default))
    return isinstance(value, kind)


def with_defaults(config: dict) -> dict:
    """The configuration (`check_keys`) with DEFAULTS filled in; the stored config (and its hash) stays as given."""
    check_keys(config)
    return {**DEFAULTS, **config}


# ---------------------------------------------------------------------------------------------------
# 2. Environment and seeding
# ---------------------------------------------------------------------------------------------------


def pick_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU model, or the CPU's architecture and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def environment_report(device: torch.device) -> dict:
    """Versions and hardware that every result is tied to."""
    import torchvision

    report = {"device": str(device), "device name": device_name(device), "python": platform.python_version(),
              "torch": torch.__version__, "torchvision": torchvision.__version__}
    if device.type == "cuda":
        report["compute capability"] = "%d.%d" % torch.cuda.get_device_capability(device)
        report["GPU memory (GiB)"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return report


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------
# 3. Data
# ---------------------------------------------------------------------------------------------------

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_FOLDER = "cifar-10-batches-py"
QUICK_SUBSET = {"train": 256, "val": 128, "test": 128}  # images per split in quick mode: a smoke test


BATCH_IMAGES = 10_000  # images in each of CIFAR-10's six batch files


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file as (uint8 images (10000, 3, 32, 32), int64 labels 0-9), checked against the format
    (a dict of 10,000 uint8 rows of 3,072 pixels and 10,000 labels); anything else raises BadInput naming the file."""
    fix = (f"delete the folder {path.parent} so that torchvision downloads it again, or point DATA_DIR at a good "
           f"copy of CIFAR-10 (the python version)")
    if not path.is_file():
        raise BadInput(f"{path} is missing: {path.parent} holds only part of CIFAR-10; {fix}")
    try:  # the pickles themselves: torchvision's md5 check refuses re-encoded copies
        batch = safe_pickle.load(path)  # plain data: a planted pickle runs nothing
    except BadInput:
        raise
    except Exception as error:  # noqa: BLE001 - truncated, random bytes, another format: all the same fault
        raise BadInput(f"{path} is not a readable pickle ({type(error).__name__}: {error}); {fix}") from None
    batch = safe_pickle.text_keys(batch) if isinstance(batch, dict) else batch
    if not isinstance(batch, dict) or not {"data", "labels"} <= set(batch):
        found = sorted(map(str, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise BadInput(f"{path} is not a CIFAR-10 batch: expected a dict with 'data' and 'labels', found {found}; "
                       f"{fix}")
    images, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise BadInput(f"{path}: the pixels are {kind}, not uint8 (0-255); read as uint8 they would be a "
                       f"different image set; {fix}")
    if images.shape != (BATCH_IMAGES, 3 * 32 * 32):
        raise BadInput(f"{path}: images of shape {images.shape}, expected {(BATCH_IMAGES, 3 * 32 * 32)} "
                       f"({BATCH_IMAGES:,} rows of 3x32x32 pixels); {fix}")
    if labels.shape != (BATCH_IMAGES,) or labels.dtype.kind not in "iu":
        what = f"{labels.size:,} labels" if labels.dtype.kind in "iu" else f"labels of type {labels.dtype}"
        raise BadInput(f"{path}: {what} for {BATCH_IMAGES:,} images; expected one integer label per image; {fix}")
    outside = labels[(labels < 0) | (labels >= len(CLASSES))]
    if outside.size:
        raise BadInput(f"{path}: {count_text(outside.size, 'label')} outside 0-{len(CLASSES) - 1} (such as "
                       f"{outside[0]}); CIFAR-10 has {len(CLASSES)} classes; {fix}")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(data_dir: str | Path, download: bool = True) -> dict[str, torch.Tensor]:
    """CIFAR-10 as uint8 tensors: train_x (50000,3,32,32), train_y, test_x (10000,3,32,32), test_y. Reads
    `data_dir/cifar-10-batches-py` when it exists (each file checked, `read_batch`), else torchvision downloads it."""
    folder = Path(data_dir) / CIFAR_FOLDER
    for path in (Path(data_dir), folder):
        if path.exists() and not path.is_dir():
            raise BadInput(f"DATA_DIR: {str(path)!r} is a file, not a folder; point DATA_DIR at the folder that "
                           f"holds (or is to receive) {CIFAR_FOLDER}/")
    if not folder.is_dir():
        if not download:
            raise FileNotFoundError(f"{folder} does not exist and download=False")
        try:
            import torchvision

            torchvision.datasets.CIFAR10(root=str(data_dir), train=True, download=True)
        except Exception as error:  # no network, a proxy, a full disk...
            raise RuntimeError(
                f"CIFAR-10 is not in {folder} and could not be downloaded ({error}).\n"
                f"Fix one of: (1) give the machine internet access so torchvision can download it, or "
                f"(2) put the standard '{CIFAR_FOLDER}' folder (the python version of CIFAR-10) inside "
                f"DATA_DIR={str(data_dir)!r}."
            ) from error

    def read(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [read_batch(folder / name) for name in names]
        return tuple(torch.from_numpy(np.concatenate(arrays)) for arrays in zip(*batches))

    train_x, train_y = read([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = read(["test_batch"])
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def split_train_val(x: torch.Tensor, y: torch.Tensor, n_val: int, seed: int = 0):
    """Shuffle with a fixed seed and hold out `n_val` images: returns (train_x, train_y, val_x, val_y)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images (N,3,H,W), on the 0-1 scale."""
    pixels = x.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    return pixels.mean(1).float(), pixels.std(1).float()


@dataclass
class Data:
    """The splits, uint8 on the CPU: `train`/`val` (45k/5k) for experiments and choices, `full` (all 50k
    training images) for the final retraining, `test` for the final evaluation only."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    full: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    mean: torch.Tensor  # per channel, 0-1 scale, from the training split
    std: torch.Tensor


def prepare_data(data_dir, n_val: int = 5000, seed: int = 0, subset: dict | None = None) -> Data:
    """CIFAR-10 split 45k/5k with a fixed seed, normalisation statistics from the training split. `subset`
    (e.g. {"train": 1000, "val": 500, "test": 500}) keeps the first images of each split: quick mode."""
    raw = load_cifar10(data_dir)
    train_x, train_y, val_x, val_y = split_train_val(raw["train_x"], raw["train_y"], n_val, seed)
    mean, std = channel_stats(train_x)
    full = (raw["train_x"], raw["train_y"])
    test = (raw["test_x"], raw["test_y"])
    train, val = (train_x, train_y), (val_x, val_y)
    if subset:
        cut = lambda split, n: (split[0][:n], split[1][:n])  # noqa: E731
        train, val, test = cut(train, subset["train"]), cut(val, subset["val"]), cut(test, subset["test"])
        full = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    return Data(train=train, val=val, full=full, test=test, mean=mean, std=std)


# ---------------------------------------------------------------------------------------------------
# 4. Batches and augmentation (everything on the model's device, whole batches at a time)
# ---------------------------------------------------------------------------------------------------


def crop_flip(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None,
              return_params: bool = False, mode: str = "constant", flip: torch.Tensor | None = None):
    """Random crop after padding by `pad` pixels (`mode` "constant": zeros, or "reflect") and horizontal flip of
    a batch (random, or the given `flip` flags) as one gather: torchvision's RandomCrop + RandomHorizontalFlip."""
    b, _, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad), mode=mode)
    dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    if flip is None:
        flip = torch.randint(0, 2, (b,), device=dev, generator=generator).bool()
    ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = dy[:, None] + ys[None, :]                                                   # (b, h)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - xs[None, :], xs[None, :])  # (b, w): flip folded in
    # advanced indices on dims 0, 2, 3 around a slice: the result comes out as (b, h, w, c)
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)  # (b, c, h, w) with channels_last strides
    return (out, dy, dx, flip) if return_params else out


def cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
           return_mask: bool = False, inside: bool = False):
    """Cutout (DeVries & Taylor, 2017) of normalised images: a `size` x `size` square of each image set to zero, the
    mean colour; at a random centre, clipped at the border, or with `inside` wholly inside (and the mask)."""
    b, _, h, w = images.shape
    dev = images.device
    if inside:  # airbench: the top-left corner anywhere the whole square fits, so every image loses size**2 pixels
        top = torch.randint(0, h - size + 1, (b, 1, 1), device=dev, generator=generator)
        left = torch.randint(0, w - size + 1, (b, 1, 1), device=dev, generator=generator)
    else:
        top = torch.randint(0, h, (b, 1, 1), device=dev, generator=generator) - size // 2
        left = torch.randint(0, w, (b, 1, 1), device=dev, generator=generator) - size // 2
    ys, xs = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
    mask = ((ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)).unsqueeze(1)
    out = images.masked_fill(mask, 0.0).contiguous(memory_format=torch.channels_last)
    return (out, mask) if return_mask else out


class Batches:
    """Mini-batches of a dataset held on the device as uint8: shuffled, augmented (crop_flip, then `cutout`),
    normalised and channels_last, on request. One device generator and the epoch count are its state."""

    def __init__(self, x, y, batch_size: int, mean, std, device, shuffle: bool = False,
                 augment: bool = False, pad: int = 4, seed: int = 0, whole_epoch: bool = False,
                 cutout: int = 0, pad_mode: str = "constant", flip: str = "random", cutout_inside: bool = False):
        self.x = x.to(device)  # copied to the device once: no Python work per image afterwards
        self.y = y.to(device)
        self.batch_size, self.shuffle, self.augment, self.pad = batch_size, shuffle, augment, pad
        self.cutout, self.pad_mode, self.cutout_inside = cutout, pad_mode, cutout_inside
        if flip not in ("random", "alternate"):
            raise ValueError(f"flip must be 'random' or 'alternate', not {flip!r}")
        self.epoch = 0  # epochs begun: "alternate" flips image i on the epochs whose parity differs from its own
        self.first_flips = None
        if flip == "alternate":  # airbench: each image flipped on every other epoch, starting at random
            draws = torch.Generator().manual_seed(seed)  # its own stream: the main one is left as it was
            self.first_flips = torch.randint(0, 2, (len(x),), generator=draws).bool().to(device)
        # whole_epoch: augment the shuffled epoch in one pass and slice it, a dozen launches per epoch instead
        # of per batch, for when the step is a CUDA graph; same distribution, another order of random draws
        self.whole_epoch = whole_epoch
        self.mean = (torch.as_tensor(mean, dtype=torch.float32) * 255).view(1, 3, 1, 1).to(device)
        self.std = (torch.as_tensor(std, dtype=torch.float32) * 255).view(1, 3, 1, 1).to(device)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,3,H,W) -> normalised float32, channels_last."""
        out = (images.float() - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last)

    def prepare(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images (the dataset's `index`) -> what the model sees: augmented (when asked) and normalised."""
        if not self.augment:
            return self.normalise(images)
        flips = None if self.first_flips is None else self.first_flips[index] ^ bool(self.epoch % 2 == 0)
        images = self.normalise(crop_flip(images, self.pad, self.generator, mode=self.pad_mode, flip=flips))
        if not self.cutout:
            return images
        return cutout(images, self.cutout, self.generator, inside=self.cutout_inside)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, size = len(self.x), self.batch_size
        self.epoch += 1  # the first epoch is 1: its flips are the first draws
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        if self.whole_epoch:
            images, labels = self.prepare(self.x[order], order), self.y[order]
            for start in range(0, n, size):
                yield images[start:start + size], labels[start:start + size]
        else:
            for start in range(0, n, size):
                index = order[start:start + size]
                yield self.prepare(self.x[index], index), self.y[index]

    def fixed_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first `count` full batches in dataset order, normalised, not augmented, drawing nothing from the
        generator: for checks that must not change the training run's random stream."""
        count = min(count, len(self.x) // self.batch_size)
        return [(self.normalise(self.x[k * self.batch_size:(k + 1) * self.batch_size]),
                 self.y[k * self.batch_size:(k + 1) * self.batch_size]) for k in range(count)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = state.get("epoch", 0)  # older checkpoints: random flips, where the count does not matter


def training_batches(x, y, config: dict, data: Data, device) -> Batches:
    """The shuffled, augmented batches a run of `config` trains on (crop and flip, cutout when set)."""
    config = with_defaults(config)
    return Batches(x, y, config["batch_size"], data.mean, data.std, device, shuffle=True, augment=True,
                   pad=config["pad"], seed=config["seed"], cutout=config["cutout"], pad_mode=config["pad_mode"],
                   flip=config["flip"], cutout_inside=config["cutout_inside"])


def eval_batches(split: tuple[torch.Tensor, torch.Tensor], data: Data, device) -> Batches:
    """A split's images for evaluation: in order, not augmented, EVAL_BATCH at a time."""
    return Batches(*split, EVAL_BATCH, data.mean, data.std, device)


# ---------------------------------------------------------------------------------------------------
# 5. Models: the architectures live in the notebook; here they are counted
# ---------------------------------------------------------------------------------------------------


def notebook_namespace(path: str | Path = "mini_project.ipynb", tags: tuple[str, ...] = ("model",),
                       given: dict | None = None) -> dict:
    """Execute the notebook's code cells tagged with any of `tags`, in order, with `given` overriding the
    "parameters" cell as papermill would; return the namespace: tests and benchmarks read what graders read."""
    notebook = json.loads(Path(path).read_text())
    namespace: dict = {"__name__": "notebook_models"}
    for cell in notebook["cells"]:
        tagged = set(cell.get("metadata", {}).get("tags", [])) & set(tags)
        if cell["cell_type"] == "code" and tagged:
            exec(compile("".join(cell["source"]), f"{path}:{'/'.join(sorted(tagged))}", "exec"), namespace)
            if "parameters" in tagged:
                namespace.update(given or {})
    return namespace


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torchsummary_total(model: nn.Module, device: torch.device) -> int:
    """Trainable parameters as torchsummary counts them (its table is not printed), checked against
    `count_parameters`, so that the number shown is the number asserted."""
    import contextlib
    import io

    try:
        from torchsummary import summary
    except ModuleNotFoundError:
        raise ModuleNotFoundError("torchsummary is missing: pip install -r requirements.txt") from None

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        summary(model.to(device), (3, 32, 32), device=torch.device(device).type)
    line = next(line for line in text.getvalue().splitlines() if line.startswith("Trainable params:"))
    total = int(line.split(":")[1].replace(",", ""))
    assert total == count_parameters(model), (total, count_parameters(model))
    return total


def flops_per_image(model: nn.Module, backward: bool = False, batch: int = 2) -> float:
    """FLOPs per 32x32 image of a forward pass (and the backward pass, with `backward`) as
    torch.utils.flop_counter counts them (convolutions and matmuls; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").train(backward)  # shapes only: no arithmetic, the model untouched
    x, y = torch.empty(batch, 3, 32, 32, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        with torch.set_grad_enabled(backward):
            logits = meta(x)
            if backward:
                F.cross_entropy(logits, y).backward()
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------------------------------------------
# 6. Engine: where and in which precision the arithmetic runs
# ---------------------------------------------------------------------------------------------------

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}  # PRECISION -> autocast dtype


def auto_precision(device: torch.device) -> tuple[str, str]:
    """The precision a device trains in, and why: bf16 on compute capability 8.0 or newer (Ampere, Hopper),
    fp16 with a gradient scaler below that (a T4 is 7.5), fp32 on the CPU."""
    if device.type != "cuda":
        return "fp32", "no CUDA device"
    major, minor = torch.cuda.get_device_capability(device)
    # not torch.cuda.is_bf16_supported(): since torch 2.3 it also answers yes where bf16 is only emulated (a T4)
    return ("bf16" if major >= 8 else "fp16"), f"compute capability {major}.{minor}"


def sgd(params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False,
        fused: bool = False) -> torch.optim.SGD:
    """SGD, fused into one kernel or multi-tensor (foreach), with its momentum buffers created as zeros up
    front; its first step then computes what a first step without buffers does (buffer = gradient)."""
    optimizer = torch.optim.SGD(params, lr=float(lr), momentum=momentum, weight_decay=weight_decay,
                                nesterov=nesterov, fused=fused or None, foreach=None if fused else True)
    if momentum:
        for group in optimizer.param_groups:
            for p in group["params"]:
                # fused SGD would create them with empty_like on its first step; a step that the gradient
                # scaler skips (inf or NaN gradients) leaves them uninitialised, and the next one reads garbage
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


def from_decoupled(lr: float, weight_decay: float, momentum: float, batch_size: int) -> tuple[float, float]:
    """airbench's decoupled hyperparameters (step size and decay per 1,024 examples, Nesterov `momentum`) as this
    engine's SGD on a mean loss: (lr, weight_decay), the same update of every step."""
    examples = 1024 * (1 + 1 / (1 - momentum))  # momentum multiplies a constant gradient's step by 1 / (1 - m)
    return lr * batch_size / examples, weight_decay / lr  # SGD's decay is applied times the learning rate


def parameter_groups(model: nn.Module, config: dict, steps_per_epoch: int) -> list[dict]:
    """The optimizer's parameter groups under `config` (with DEFAULTS): one, unless the config sets airbench's
    BatchNorm options or the model has a whitening stem (`model.whiten`), whose filters are never trained."""
    whiten = getattr(model, "whiten", None)
    scale = config["bias_lr_scale"]
    if scale == 1 and not config["freeze_bn_scale"] and whiten is None:
        return [{"params": list(model.parameters())}]  # every run before these options: one group, as it was
    lr, decay = config["lr"], config["weight_decay"]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    scales, biases = [m.weight for m in norms], [m.bias for m in norms]
    frozen = [whiten.weight] if whiten is not None else []
    if config["freeze_bn_scale"]:
        frozen += scales
    stem_bias = [whiten.bias] if whiten is not None and whiten.bias is not None else []
    special = {id(p) for p in frozen + biases + stem_bias}
    groups = [  # the weights first: fit logs group 0's learning rate
        {"name": "weights", "params": [p for p in model.parameters() if id(p) not in special]},
        {"name": "BatchNorm biases", "params": biases, "lr": lr * scale, "weight_decay": decay / scale},
        {"name": "frozen", "params": frozen, "lr": 0.0},  # lr 0, not requires_grad: a CUDA graph stays valid
        # trained for its first epochs only: a learning rate of 0 afterwards (`make_scheduler`)
        {"name": "whitening bias", "params": stem_bias, "frozen_after": config["whiten_bias_epochs"] * steps_per_epoch},
    ]
    return [group for group in groups if group["params"]]


@dataclass
class Engine:
    """How the arithmetic runs on a device: channels_last, autocast in bf16 or fp16 (with a gradient scaler) on
    CUDA, fp32 on the CPU; optional torch.compile; the bf16 step as a checked CUDA graph (`graphs`: None=auto)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    compile: bool = False
    graphs: bool | None = None
    why: str = ""  # how the precision was chosen

    @classmethod
    def for_device(cls, device, compile: bool = False, graphs: bool | None = None,
                   precision: str | None = None) -> "Engine":
        """The engine for `device`; `precision` ("bf16", "fp16", "fp32") forces one, None picks it."""
        device = torch.device(device)
        if precision is None:
            precision, why = auto_precision(device)
        elif precision in PRECISIONS:
            why = f"PRECISION={precision!r}"
        else:
            raise ValueError(f"PRECISION must be None or one of {list(PRECISIONS)}, not {precision!r}")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed 32x32 shapes: let cuDNN pick its fastest kernels once
            if precision == "bf16" and torch.cuda.get_device_capability(device) < (8, 0):
                warnings.warn("bf16 on a GPU older than compute capability 8.0 is emulated and slow; "
                              "fp16 is this GPU's fast path", stacklevel=2)
        return cls(device=device, amp_dtype=PRECISIONS[precision], compile=compile, graphs=graphs, why=why)

    @property
    def precision(self) -> str:
        """The dtype the arithmetic runs in, as the results record it: 'bfloat16', 'float16' or 'float32'."""
        return str(self.amp_dtype or torch.float32).replace("torch.", "")

    def autocast(self, cache: bool = True):
        """Mixed precision on CUDA, a no-op on the CPU."""
        # cache=False re-casts the weights at every use: required inside a CUDA graph capture, and free in a
        # training step, where each weight is used once
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None,
                              cache_enabled=cache)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, active only for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move to the device in channels_last; returns the module to call (compiled when asked)."""
        model.to(self.device, memory_format=torch.channels_last)
        return torch.compile(model) if self.compile else model

    def optimizer(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                  nesterov: bool = False) -> torch.optim.SGD:
        """`sgd`, fused on CUDA, multi-tensor elsewhere, its learning rate a tensor on the device."""
        optimizer = sgd(params, lr, momentum, weight_decay, nesterov, fused=self.device.type == "cuda")
        self.lr_on_device(optimizer)  # so that a schedule can change it between replays of a CUDA graph
        return optimizer

    def lr_on_device(self, optimizer) -> None:
        """Make every group's learning rate a float32 tensor on the device (again after load_state_dict, which
        brings back a CPU tensor): fused SGD reads it there, and a CUDA graph sees its updates."""
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=self.device)

    def graph_plan(self) -> tuple[bool, str]:
        """Whether to capture the training step as a CUDA graph, and the step kind with the reason when not."""
        if self.graphs is False:
            return False, "eager (GRAPHS=False)"
        if self.device.type != "cuda":
            return False, "eager (no CUDA device)"
        if self.amp_dtype == torch.float16:
            return False, "eager (fp16 needs a gradient scaler, whose inf checks are not graph-safe)"
        if self.amp_dtype is None:
            return False, "eager (fp32: the graph is captured for bf16 only)"
        return True, "cuda-graph"  # with torch.compile too: its kernels are captured like eager ones


# ---------------------------------------------------------------------------------------------------
# 7. The training step, the epoch, evaluation
# ---------------------------------------------------------------------------------------------------


class TrainStep:
    """One SGD step on a batch: `step(images, labels)` runs the forward pass in the engine's precision, the
    loss, the backward pass (scaled for fp16) and the update, and returns the loss and logits on the device."""

    def __init__(self, model, optimizer, scaler, engine: Engine, label_smoothing: float = 0.0):
        self.model, self.optimizer, self.scaler, self.engine = model, optimizer, scaler, engine
        self.label_smoothing = label_smoothing
        self.keep_grads = False  # True beside a CUDA graph: its gradient tensors are zeroed in place, not freed

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        with self.engine.autocast(cache=False):
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=not self.keep_grads)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # skipped by the scaler when fp16 gradients overflowed
        self.scaler.update()
        return loss, logits


class EpochSums:
    """Loss and correct predictions summed on the device over an epoch and read once at its end: the loop never
    waits for the GPU. The tensors stay in place: a CUDA graph adds to them."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0  # counted on the host

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss.detach().float() * len(labels)
        self.correct += (logits.detach().argmax(1) == labels).sum()

    def reset(self) -> None:
        self.loss.zero_()
        self.correct.zero_()
        self.seen = 0

    def read(self) -> dict:
        return {"loss": self.loss.item() / self.seen, "acc": self.correct.item() / self.seen}


def graphed_step(step: TrainStep, batches: Batches) -> tuple[CapturedStep | None, str]:
    """(the step as a checked CUDA graph, "cuda-graph") when the engine plans one and replays match eager
    steps (`cuda_graph.checked_capture`), else (None, "eager (why)"): the step kind a run records."""
    use_graph, kind = step.engine.graph_plan()
    if not use_graph:
        return None, kind
    samples = batches.fixed_batches(2 * CHECK_STEPS)  # warm-up, then as many checked replays
    return checked_capture(step, EpochSums(step.engine.device), samples)


def train_epoch(step: TrainStep, batches: Batches, scheduler=None, ema: "ModelEMA | None" = None,
                captured: CapturedStep | None = None, lookahead: "Lookahead | None" = None) -> dict:
    """One pass over `batches`; returns the mean training loss and accuracy. Full batches go through
    `captured` when given (the step as a CUDA graph); the last, smaller batch runs eagerly."""
    step.model.train()
    sums = captured.sums if captured is not None else EpochSums(step.engine.device)
    sums.reset()
    for images, labels in batches:
        if captured is not None and len(labels) == captured.batch_size:
            captured(images, labels)
        else:
            loss, logits = step(images, labels)
            sums.add(loss, logits, labels)
        sums.seen += len(labels)
        if scheduler is not None:
            scheduler.step()  # fills the lr tensor in place: the graph reads the new value
        if lookahead is not None:  # outside the graph, like the weight average: copies in place
            lookahead.update(step.model)
        if ema is not None:
            ema.update(step.model)
    return sums.read()


TTA_WEIGHTS = {1: (1.0,), 4: (1 / 4,) * 4, 6: (1 / 4, 1 / 4) + (1 / 8,) * 4}  # views -> each view's weight


def tta_views(images: torch.Tensor, count: int = 4) -> list[torch.Tensor]:
    """Test-time views of a normalised batch, weighted by TTA_WEIGHTS. 4: the image, its mirror, both shifted a pixel
    down-right (zeros come in). 6 (airbench): the image, its mirror, both shifted a pixel down-right and up-left
    (the border reflected)."""
    flipped = images.flip(-1)
    if count == 4:
        shift = lambda x: F.pad(x, (1, 0, 1, 0))[..., :-1, :-1]  # noqa: E731
        return [images, flipped, shift(images), shift(flipped)]
    if count == 6:
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        down_right, up_left = padded[..., :-2, :-2], padded[..., 2:, 2:]
        return [images, flipped, down_right, down_right.flip(-1), up_left, up_left.flip(-1)]
    raise ValueError(f"tta views must be 4 or 6, not {count}")


@torch.no_grad()
def predict(model, batches: Batches, engine: Engine, tta: bool = False, views: int = 4) -> torch.Tensor:
    """Logits (float32, on the device) for every image of `batches`, in order; with `tta`, the weighted mean over
    `views` test-time views (`tta_views`, TTA_WEIGHTS)."""
    model.eval()
    outputs = []
    for images, _ in batches:
        with engine.autocast():
            shown = tta_views(images, views) if tta else [images]
            weights = TTA_WEIGHTS[len(shown)]
            outputs.append(sum(w * model(v).float() for w, v in zip(weights, shown)))
    return torch.cat(outputs)


@torch.no_grad()
def evaluate(model, batches: Batches, engine: Engine, tta: bool = False, views: int = 4) -> dict:
    """Mean cross-entropy and accuracy (a fraction) over `batches`, in eval mode."""
    logits = predict(model, batches, engine, tta=tta, views=views)
    labels = batches.y
    return {"loss": F.cross_entropy(logits, labels).item(),
            "acc": (logits.argmax(1) == labels).float().mean().item()}


def evaluate_recipe(model, batches: Batches, engine: Engine, config: dict, tta: bool = False) -> dict:
    """`evaluate` as a run of `config` is scored: with `tta`, over the recipe's test-time views (`tta_views`)."""
    return evaluate(model, batches, engine, tta=tta, views=with_defaults(config)["tta_views"])


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]."""
    pred = logits.argmax(1).cpu()
    return torch.bincount(labels.cpu() * classes + pred, minlength=classes * classes).view(classes, classes)


class ModelEMA:
    """Exponential moving average of a model's weights, ema = d * ema + (1 - d) * weights, updated every `every`
    steps with d = min(decay, (1 + n) / (10 + n)) after n updates (a short run is not dominated by the start)."""

    def __init__(self, model: nn.Module, decay: float = 0.99, every: int = 5, buffers: str = "average"):
        if buffers not in ("average", "copy"):
            raise ValueError(f"buffers must be 'average' or 'copy', not {buffers!r}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # "average": BatchNorm statistics averaged like the weights, so that they belong to the same stretch of
        # training; "copy" (the first sweep) takes the live model's, measured with weights the average lacks
        self.decay, self.every, self.steps, self.buffers = decay, every, 0, buffers

    def current_decay(self) -> float:
        updates = self.steps // self.every
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Called after every optimizer step; averages on every `every`-th call."""
        self.steps += 1
        if self.steps % self.every:
            return
        model = getattr(model, "_orig_mod", model)  # the module behind torch.compile
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        weight = 1 - self.current_decay()
        torch._foreach_lerp_(ema_params, params, weight)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            if self.buffers == "average" and ema_buffer.is_floating_point():
                ema_buffer.lerp_(buffer, weight)
            else:  # integer buffers (batch counters) are copied
                ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = state["steps"]


class Lookahead:
    """airbench's lookahead: every `every` steps the slow weights move toward the live ones, slow = d * slow +
    (1 - d) * live with d = 0.95**5 * (t / T)**3 at step t of T, and the live weights restart from them."""

    def __init__(self, model: nn.Module, every: int, total_steps: int):
        self.every, self.total, self.steps = every, total_steps, 0
        self.slow = [t.detach().clone() for t in self.tensors(model)]

    @staticmethod
    def tensors(model: nn.Module) -> list[torch.Tensor]:
        """The weights and the floating-point buffers (BatchNorm statistics), as airbench's state_dict walk."""
        model = getattr(model, "_orig_mod", model)  # the module behind torch.compile
        return list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Called after every optimizer step; pulls on every `every`-th, and hands over the slow weights at the end."""
        self.steps += 1
        live = [t.detach() for t in self.tensors(model)]
        if self.steps % self.every == 0:
            torch._foreach_lerp_(self.slow, live, 1 - 0.95 ** 5 * (self.steps / self.total) ** 3)
            torch._foreach_copy_(live, self.slow)  # in place: a CUDA graph keeps reading the same tensors
        if self.steps == self.total:  # the run ends on the slow weights, as airbench's final update(decay=1.0)
            torch._foreach_copy_(live, self.slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        torch._foreach_copy_(self.slow, state["slow"])
        self.steps = state["steps"]


def make_scheduler(optimizer, kind: str, epochs: int, steps_per_epoch: int, warmup: float = 0.0,
                   start: float = 0.1, end: float = 0.0):
    """Per-step learning-rate multiplier: 'constant' 1; 'cosine' from 1 to 0 over all steps; 'onecycle' linear
    from `start` to 1 over the first `warmup` fraction of the steps, then to `end`. 0 after a group's "frozen_after"."""
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if kind == "onecycle":
            rise = max(1, int(warmup * total))
            if step < rise:
                return start + (1 - start) * step / rise
            return max(end, end + (1 - end) * (total - step) / max(1, total - rise))
        raise ValueError(f"unknown schedule {kind!r}")

    def until(last: float):
        return lambda step: factor(step) if step < last else 0.0

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [until(group.get("frozen_after", math.inf)) for group in optimizer.param_groups])


# ---------------------------------------------------------------------------------------------------
# 8. fit: epochs, logs, checkpoints
# ---------------------------------------------------------------------------------------------------


class FitResult(NamedTuple):
    """What `fit` returns: the model to evaluate (the weight average when there is one), the per-epoch history,
    the training seconds, and the step kind ("cuda-graph" or "eager (why)"; both, in order, after a resume)."""

    model: nn.Module
    history: list[dict]
    seconds: float
    step_kind: str


@dataclass
class TrainingState:
    """What a run changes as it trains, and what its checkpoint holds beside the data order."""

    step: TrainStep
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: ModelEMA | None
    lookahead: Lookahead | None = None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_kind: str | None = None  # the step kind its checkpoint recorded


def training_state(model: nn.Module, module: nn.Module, config: dict, engine: Engine,
                   steps_per_epoch: int) -> TrainingState:
    """A fresh run's step (optimizer, scaler), schedule, weight average and lookahead; `config` has its DEFAULTS."""
    optimizer = engine.optimizer(parameter_groups(model, config, steps_per_epoch), lr=config["lr"],
                                 momentum=config["momentum"], weight_decay=config["weight_decay"],
                                 nesterov=config["nesterov"])
    scheduler = make_scheduler(optimizer, config["schedule"], config["epochs"], steps_per_epoch, config["warmup"],
                               config["lr_start"], config["lr_end"])
    ema = ModelEMA(model, config["ema_decay"], buffers=config["ema_buffers"]) if config["ema_decay"] else None
    total = config["epochs"] * steps_per_epoch
    lookahead = Lookahead(model, config["lookahead"], total) if config["lookahead"] else None
    return TrainingState(TrainStep(module, optimizer, engine.scaler(), engine, config["label_smoothing"]),
                         scheduler, ema, lookahead)


def read_checkpoint(path: Path) -> dict | None:
    """A checkpoint's contents, or None when there is none or it is unreadable (moved aside with a warning).
    Tensors and plain data only: a results folder shared through Drive or a fork cannot run code."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # generator states stay CPU tensors
    except Exception as error:  # noqa: BLE001 - cut short by a disconnect, damaged by a sync, anything else
        quarantine(path, f"checkpoint unreadable ({type(error).__name__}); training starts afresh")
        return None


def write_checkpoint(path: Path, model: nn.Module, state: TrainingState, train: Batches, step_kind: str) -> None:
    """Everything `resume` needs to continue after the last epoch of `state.history`, written atomically."""
    step = state.step
    saved = {"model": model.state_dict(), "optimizer": step.optimizer.state_dict(),
             "scheduler": state.scheduler.state_dict(), "scaler": step.scaler.state_dict(),
             "batches": train.state_dict(), "ema": state.ema.state_dict() if state.ema else None,
             "lookahead": state.lookahead.state_dict() if state.lookahead else None,
             "cpu_rng": torch.get_rng_state(), "history": state.history, "seconds": state.seconds,
             "path": step_kind, "precision": step.engine.precision}  # "path": the key older checkpoints use
    atomic_write(path, lambda target: torch.save(saved, target))


def resume(saved: dict, model: nn.Module, state: TrainingState, train: Batches) -> str:
    """Load a checkpoint into `state`, `model` and `train` in place; returns what changed since it was written
    ('' when nothing). A checkpoint of another precision resumes: its scaler state is empty or unused."""
    step, engine = state.step, state.step.engine
    model.load_state_dict(saved["model"])
    step.optimizer.load_state_dict(saved["optimizer"])
    engine.lr_on_device(step.optimizer)
    state.scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"]:  # empty when written without a gradient scaler: an fp16 run then starts a fresh one
        step.scaler.load_state_dict(saved["scaler"])
    train.load_state_dict(saved["batches"])
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"])
    if state.lookahead is not None:
        state.lookahead.load_state_dict(saved["lookahead"])
    torch.set_rng_state(saved["cpu_rng"])
    state.history, state.seconds, state.resumed_kind = saved["history"], saved["seconds"], saved.get("path")
    before = saved.get("precision", "a precision not recorded")
    if before == engine.precision:
        return ""
    fresh = "; the gradient scaler starts fresh" if step.scaler.is_enabled() and not saved["scaler"] else ""
    return f" (written in {before}, continuing in {engine.precision}{fresh})"


def start_or_resume(model: nn.Module, module: nn.Module, config: dict, engine: Engine, train: Batches,
                    checkpoint: Path | None) -> TrainingState:
    """A fresh TrainingState, or the one `checkpoint` holds; a checkpoint that does not fit this run (another
    model, an older layout) is moved aside with a warning and the run starts afresh."""
    state = training_state(model, module, config, engine, len(train))
    saved = read_checkpoint(checkpoint) if checkpoint is not None else None
    if saved is None:
        return state
    fresh_weights, fresh_order = copy.deepcopy(model.state_dict()), train.state_dict()
    try:
        changed = resume(saved, model, state, train)
        print(f"resumed from {checkpoint} after epoch {len(state.history)}{changed}")
        return state
    except Exception as error:  # noqa: BLE001 - never stop a Run all over an old checkpoint
        quarantine(checkpoint, f"checkpoint does not fit this run ({type(error).__name__}); training starts afresh")
        model.load_state_dict(fresh_weights)  # a failed load may have filled part of the model
        train.load_state_dict(fresh_order)
        return training_state(model, module, config, engine, len(train))


def joined_kind(before: str | None, now: str, training: bool) -> str:
    """The step kind of a run that may have been resumed: `before` is what its checkpoint recorded, `now` this
    session's while `training`; a run resumed on another kind records both ("cuda-graph, then eager (...)")."""
    if before is None or before.split(", then ")[-1] == now:
        return before or now
    return f"{before}, then {now}" if training else before


def is_diverged(row: dict) -> bool:
    """An epoch diverged when its training or validation loss is not finite: NaN or infinite weights or
    statistics, from which no later epoch recovers."""
    return not (math.isfinite(row["train_loss"]) and math.isfinite(row.get("val_loss", 0.0)))


def diverged_epoch(history: list[dict]) -> int | None:
    """The first diverged epoch (`is_diverged`), or None."""
    return next((row["epoch"] for row in history if is_diverged(row)), None)


def fit(model: nn.Module, train: Batches, val: Batches | None, config: dict, engine: Engine,
        checkpoint: Path | None = None, checkpoint_seconds: float = 20.0, log_every: int = 10,
        on_epoch_end: Callable[[int], None] | None = None, label: str = "training") -> FitResult:
    """Train `model` for config["epochs"] epochs (DEFAULTS fill in the rest), resuming from `checkpoint` and
    writing it at most every `checkpoint_seconds`; a non-finite loss ends the run at that epoch."""
    config = with_defaults(config)
    module = engine.prepare(model)
    whiten = getattr(model, "whiten", None)
    if whiten is not None:  # a whitening stem: filters from the training patches, before the weight copies are made
        whiten.fit_to(train.normalise(train.x[:WHITENING_IMAGES]))  # a resumed run then loads its own
    state = start_or_resume(model, module, config, engine, train, checkpoint)
    epochs, first = config["epochs"], len(state.history) + 1
    captured, step_kind = None, engine.graph_plan()[1]
    if first <= epochs:  # something left to train
        captured, step_kind = graphed_step(state.step, train)
        print(wrapped(f"{label}: {count_text(epochs - first + 1, 'epoch')} x {len(train.x):,} images, "
                      f"{engine.precision}, {step_kind}"))
    step_kind = joined_kind(state.resumed_kind, step_kind, first <= epochs)
    last_save = time.perf_counter()
    for epoch in range(first, epochs + 1):
        start = time.perf_counter()
        stats = train_epoch(state.step, train, state.scheduler, state.ema, captured, state.lookahead)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)  # the epoch's time includes the kernels it queued
        state.seconds += time.perf_counter() - start
        row = {"epoch": epoch, "lr": float(state.step.optimizer.param_groups[0]["lr"]),
               "train_loss": stats["loss"], "train_acc": stats["acc"], "seconds": state.seconds}
        if val is not None:
            scores = evaluate(state.ema.module if state.ema else module, val, engine)
            row.update(val_loss=scores["loss"], val_acc=scores["acc"])
        state.history.append(row)
        if is_diverged(row):
            print(f"{format_epoch(row)}\nDIVERGED: a loss is not finite; the run stops here")
            break
        if log_line(epoch, epochs, log_every):
            print(format_epoch(row))
        if epoch == first < epochs:  # the first epoch of this session sets the pace (validation included)
            left = (epochs - epoch) * (time.perf_counter() - start)
            print(f"about {format_duration(left)} left ({count_text(epochs - epoch, 'more epoch')})")
        # ~40 MB after each of a GPU run's 600 one-second epochs would cost ten epochs; after 20 s it is free
        if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_seconds:
            last_save = time.perf_counter()
            write_checkpoint(checkpoint, model, state, train, step_kind)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    return FitResult(state.ema.module if state.ema else module, state.history, state.seconds, step_kind)


def log_line(epoch: int, epochs: int, log_every: int = 10) -> bool:
    """Whether an epoch gets a line in the log: the first, every `log_every`-th and the last; none when
    `log_every` is 0 (the run's start and result lines still print)."""
    return log_every > 0 and (epoch == 1 or epoch % log_every == 0 or epoch == epochs)


def format_epoch(row: dict) -> str:
    """One log line for an epoch, accuracies in % (at most 80 characters with the marker of a stored log)."""
    text = (f"epoch {row['epoch']:3d}  lr {row['lr']:.4f}  loss {row['train_loss']:.3f} "
            f"acc {100 * row['train_acc']:.1f}%")  # training loss and accuracy, under augmentation
    if "val_acc" in row:
        text += f"  val loss {row['val_loss']:.3f} acc {100 * row['val_acc']:.1f}%"
    return text + f"  {row['seconds']:.1f} s"


def wrapped(text: str) -> str:
    """`text` in lines of at most 80 characters (the PDF's page), continued indented; words are never split."""
    return textwrap.fill(text, 80, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def count_text(n: int, noun: str) -> str:
    """'1 seed', '3 seeds': a count with its noun, plural unless the count is one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# ---------------------------------------------------------------------------------------------------
# 9. Running an experiment: train and test it once, or serve it from the store
# ---------------------------------------------------------------------------------------------------


def result_line(name: str, summary: dict) -> str:
    """The line that closes an experiment's log: its test accuracy, or where it diverged."""
    if summary.get("diverged"):
        return f"{name}: DIVERGED at epoch {summary['diverged_epoch']} (a loss is not finite); not tested"
    if summary.get("test_acc") is None:
        return f"{name}: final validation accuracy {100 * summary['final_val_acc']:.2f}%"
    return (f"{name}: test accuracy {100 * summary['test_acc']:.2f}% after {summary['train_seconds']:.1f} s of "
            f"training ({summary.get('path', 'step kind not recorded')})")


def replay_log(name: str, summary: dict, history, root: Path, log_every: int = 10) -> None:
    """Print a stored run's log lines as training printed them, marked '| ', under a line that says where they
    come from: a notebook executed across several sessions then reads like one run."""
    print(wrapped(f"{name}: read from {root}/ (trained on {summary['device']}, {summary['date'][:10]})"))
    rows = history.to_dict("records")
    for row in rows:
        if log_line(row["epoch"], len(rows), log_every) or row["epoch"] == summary.get("diverged_epoch"):
            print(f"| {format_epoch(row)}")
    print(wrapped(result_line(name, summary)))


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a diverged run's non-finite numbers are stored as null."""
    return value if math.isfinite(value) else None


def run_experiment(name: str, config: dict, build_model: Callable[[], nn.Module], data: Data, engine: Engine,
                   store: ResultsStore, train_split: str = "train", keep_weights: bool = False,
                   tta: bool = False, evaluate_test: bool = True, checkpoint_seconds: float = 20.0,
                   on_epoch_end=None, log_every: int = 10) -> dict:
    """Train one configuration on `train_split`, scored on validation each epoch (on the 45k split) and tested
    once at the end (`evaluate_test`), and return its summary; a complete stored result is served instead, an
    interrupted one resumed. `keep_weights` saves the final weights (fp16) and evaluates them as saved."""
    check_config(config, name)  # a typo or a string where a number belongs stops here, before any epoch
    stored = store.complete(name, config, build_model if keep_weights else None)
    if stored is not None:
        replay_log(name, *stored, store.root, log_every)
        return stored[0]
    writable_folder(store.root, "the results folder")  # a folder that cannot take the result stops it untrained
    digest = config_hash(config)
    checkpoint = store.checkpoint(f"{name}-{digest}")
    set_seed(config["seed"])
    model = build_model()
    train_x, train_y = getattr(data, train_split)
    train = training_batches(train_x, train_y, config, data, engine.device)
    val = eval_batches(data.val, data, engine.device) if train_split == "train" else None
    final, history, seconds, step_kind = fit(model, train, val, config, engine, checkpoint, checkpoint_seconds,
                                             log_every, on_epoch_end, label=name)
    diverged = diverged_epoch(history)
    summary = {
        "name": name, "config": config, "config_hash": digest,
        "trainable_params": count_parameters(model), "epochs_completed": len(history),
        "train_images": len(train_x), "device": device_name(engine.device),
        "precision": engine.precision, "path": step_kind,  # "path": the step kind, under its stored key
        "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": round(seconds, 2), "final_train_acc": finite_or_none(history[-1]["train_acc"]),
        "diverged": diverged is not None, "diverged_epoch": diverged,
    }
    if diverged is not None:  # not tested, and no weights kept
        summary.update(best_val_acc=None, final_val_acc=None, test_acc=None)
    else:
        if keep_weights:  # evaluate the weights exactly as saved (fp16), so that a reload reproduces the number
            save_weights(final, store.path(name, ".pt"))
            load_weights(getattr(final, "_orig_mod", final), store.path(name, ".pt"))
        if val is not None:
            summary.update(best_val_acc=max(r["val_acc"] for r in history), final_val_acc=history[-1]["val_acc"])
            if tta:
                summary["final_val_acc_tta"] = evaluate_recipe(final, val, engine, config, tta=True)["acc"]
        if evaluate_test:
            scores = evaluate_recipe(final, eval_batches(data.test, data, engine.device), engine, config, tta=tta)
            summary.update(test_acc=scores["acc"], test_loss=scores["loss"], tta=tta)
    print(wrapped(result_line(name, summary)))
    store.save(name, summary, history)
    checkpoint.unlink(missing_ok=True)
    return summary


# ---------------------------------------------------------------------------------------------------
# 10. Choosing on validation (the test split is never looked at)
# ---------------------------------------------------------------------------------------------------


def best_by_validation(summaries: dict[str, dict], names) -> str | None:
    """The experiment among `names` with the highest final-epoch validation accuracy, never a diverged one;
    None when every one of them diverged."""
    usable = [name for name in names if not summaries[name].get("diverged")]
    return max(usable, key=lambda name: summaries[name]["final_val_acc"]) if usable else None


def learning_rate_on_validation(summaries: dict[str, dict], names, fallback: float) -> tuple[float, str]:
    """The learning rate of the best of `names` on validation (`best_by_validation`) and how it was chosen;
    `fallback` when every one of them diverged: a rate is never taken from a diverged run."""
    winner = best_by_validation(summaries, names)
    if winner is None:
        return fallback, f"every one of {', '.join(names)} diverged: lr {fallback}, the fallback"
    lr = summaries[winner]["config"]["lr"]
    return lr, f"lr {lr}, from {winner}, the better on validation"


NOISE = 2.0  # standard errors: a smaller difference of two accuracies is within noise, never a gain


def standard_error(accuracy: float, images: int) -> float:
    """The standard error of an accuracy (a fraction) measured on `images` independent images."""
    return math.sqrt(accuracy * (1 - accuracy) / images)


def difference_error(a: float, b: float, images: int) -> float:
    """The standard error of the difference of two accuracies `a` and `b`, each measured on `images` images."""
    return math.hypot(standard_error(a, images), standard_error(b, images))


def verdict(a: float, b: float, images: int) -> str:
    """'higher', 'lower' or 'within noise': accuracy `a` against `b`, each on `images` validation images; a
    difference under NOISE standard errors of that difference is within noise."""
    if abs(a - b) < NOISE * difference_error(a, b, images):
        return "within noise"
    return "higher" if a > b else "lower"


def validation_score(summary: dict) -> tuple[float, bool]:
    """A tuning run's final validation accuracy as a recipe would use it: the better of plain and test-time
    augmented (when measured), and whether that is the augmented one. NaN for a diverged run."""
    if summary.get("diverged") or summary.get("final_val_acc") is None:
        return float("nan"), False
    plain, views = summary["final_val_acc"], summary.get("final_val_acc_tta")
    return (views, True) if views is not None and views > plain else (plain, False)


def recipe_score(runs: list[dict]) -> tuple[float, bool]:
    """A recipe's validation score over its seeds' runs: `validation_score` of their mean final accuracies (the
    test-time augmented mean only when every seed measured it); NaN when a seed diverged or there is none."""
    if not runs or any(math.isnan(validation_score(run)[0]) for run in runs):
        return float("nan"), False
    mean = lambda key: sum(run[key] for run in runs) / len(runs)  # noqa: E731
    views = all(run.get("final_val_acc_tta") is not None for run in runs)
    return validation_score({"final_val_acc": mean("final_val_acc"),
                             "final_val_acc_tta": mean("final_val_acc_tta") if views else None})


def choose_by_mean(trials: dict[str, list[dict]], costs: dict[str, float], tie: float) -> tuple[str, bool, str]:
    """The recipe of `trials` (label -> its seeds' runs) to train: of those whose `recipe_score` is within `tie` of
    the best, the one with the lowest cost; returns (label, whether to use test-time augmentation, why)."""
    scores = {label: recipe_score(runs) for label, runs in trials.items()}
    usable = [label for label, (score, _) in scores.items() if math.isfinite(score)]
    if not usable:
        raise ValueError("every recipe has a diverged seed: none to choose")
    best = max(usable, key=lambda label: scores[label][0])
    tied = [label for label in usable if scores[best][0] - scores[label][0] < tie]  # the best is among them
    chosen = min(tied, key=lambda label: (costs[label], -scores[label][0]))
    score = 100 * scores[chosen][0]
    if chosen == best:
        why = f"the best mean, {score:.2f}%" + (f", and the cheapest of {len(tied)} tied" if len(tied) > 1 else "")
    else:
        why = f"{score:.2f}%, a tie with {best} ({100 * scores[best][0]:.2f}%) at a lower cost"
    return chosen, scores[chosen][1], why


def combine_changes(changes: dict[str, dict], runs: dict[str, dict], base: str) -> tuple[str, dict] | None:
    """The second round of a one-change-at-a-time sweep: every change that beat `base` on validation merged
    into one (label, change), the better change's value where two set the same key; None unless two merge."""
    floor = validation_score(runs[base])[0]
    better = sorted((label for label in runs if label != base and validation_score(runs[label])[0] > floor),
                    key=lambda label: -validation_score(runs[label])[0])
    merged, labels = {}, []
    for label in better:  # best first: a key already set keeps the better change's value
        if not set(changes[label]) & set(merged):
            merged.update(changes[label])
            labels.append(label)
    return (" + ".join(labels), merged) if len(labels) >= 2 else None


def choose_recipe(runs: dict[str, dict], changes: dict[str, dict]) -> tuple[str, dict]:
    """The run with the best final validation accuracy (`validation_score`; diverged runs never win) and its
    change to the base recipe, with "tta" set to whether test-time augmentation scored higher for it."""
    scored = {label: validation_score(run) for label, run in runs.items()}
    usable = [label for label, (score, _) in scored.items() if math.isfinite(score)]
    if not usable:
        raise ValueError("every tuning run diverged: no recipe to choose")
    best = max(usable, key=lambda label: scored[label][0])
    return best, {**changes[best], "tta": scored[best][1]}
