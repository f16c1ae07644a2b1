"""CIFAR-10 and its splits, and the batches a model sees: shuffled, augmented and normalised on its device.

`prepare_data` reads the batch files (each checked, `read_batch`) and splits them 45k/5k with a fixed seed;
`Batches` holds a split on the device as uint8 and makes whole batches at a time (`crop_flip`, `cutout`), so
that no Python work is done per image. Nothing runs at import time.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import safe_pickle
from .checks import BadInput, one_of
from .recipe import OPTIONS, Recipe
from .text import count_text

# ---------------------------------------------------------------------------------------------------
# 1. CIFAR-10: the files, the splits, the normalisation
# ---------------------------------------------------------------------------------------------------

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_FOLDER = "cifar-10-batches-py"
# images per split in quick mode: a smoke test
QUICK_SUBSET = {"train": 256, "val": 128, "test": 128}
EVAL_BATCH = 1024  # images per evaluation batch

BATCH_IMAGES = 10_000  # images in each of CIFAR-10's six batch files
TEST_IMAGES = BATCH_IMAGES  # CIFAR-10's test split: one batch file
# `batch_digest` of each of CIFAR-10's batch files, computed once from a copy checked pixel-exact against the
# original (the SHA-256 digests of its arrays: ../shared/cifar10/unpack.py): a batch copied over another, altered or
# reordered is named, not read as CIFAR-10
BATCH_DIGESTS = {
    "data_batch_1": "54b2ed21fbd6a52cfc507fb5af63b8610e1938828f3017b159e69e87bb1965db",
    "data_batch_2": "a860ea80505c3e017d336ca80eca64bdc58099bf285ae8650980ed6c846f5e53",
    "data_batch_3": "701e5e97f12252a2ec703b29fe275315471b883e27926ec8e9d3b08ca81b2fab",
    "data_batch_4": "6c9358a56fb97959b9b494683c1c1ef9f0c4f291f3686302835e08a0b0ab2f47",
    "data_batch_5": "c2108fec4d9d07a51c26c680b5886f54ff810c859a3f7ba7efe3a4a82a838293",
    "test_batch": "2c33b053d1cd726af8d86e174a96dd89d7000ba1412add026d68142375b89d51",
}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file as (uint8 images (10000, 3, 32, 32), int64 labels 0-9), checked against the format
    (a dict of 10,000 uint8 rows of 3,072 pixels and 10,000 labels); anything else raises BadInput naming the file."""
    fix = (f"delete the folder {path.parent} so that torchvision downloads it again, or point DATA_DIR at a good "
           f"copy of CIFAR-10 (the python version)")
    if not path.is_file():
        raise BadInput(f"{path} {entry_kind(path)}: {path.parent} holds only part of CIFAR-10; {fix}")
    # plain data: a planted pickle runs nothing; truncated, random bytes, another format: one fault
    batch = safe_pickle.load(path, fix=fix)
    batch = safe_pickle.text_keys(batch, path, fix) if isinstance(batch, dict) else batch
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
    digest = batch_digest(images, labels)
    if digest != BATCH_DIGESTS.get(path.name, digest):
        copied = next((name for name, known in BATCH_DIGESTS.items() if known == digest), None)
        what = (f"holds the images and labels of {copied} (a copy over this file)" if copied else
                "holds other images or labels than CIFAR-10's (altered, reordered or another data set)")
        raise BadInput(f"{path} {what}; {fix}")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def entry_kind(path: Path) -> str:
    """What stands at `path` instead of a regular file, in words: 'is missing', 'is a folder', ..."""
    if path.is_symlink() and not path.exists():  # a link to nowhere, or a loop of links
        return "is a symbolic link that leads to no file"
    if not path.exists():
        return "is missing"
    return "is a folder, not a batch file" if path.is_dir() else "is not a regular file (a device, socket or pipe)"


def batch_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of a batch's pixels (uint8, in file order) and labels (little-endian int64), in hex."""
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()
                          + np.asarray(labels, dtype="<i8").tobytes()).hexdigest()


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


class Normalisation(NamedTuple):
    """Per-channel mean and standard deviation (0-1 scale) that a run's images were normalised with: recorded in
    its summary, so that its weights predict without CIFAR-10 at hand."""

    mean: torch.Tensor
    std: torch.Tensor

    def record(self) -> dict:
        """As a summary stores it: {"mean": [3 floats], "std": [3 floats]} (float32 values, exact in JSON)."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def of(cls, record: dict) -> "Normalisation":
        return cls(*(torch.tensor(record[key], dtype=torch.float32) for key in ("mean", "std")))


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

    @property
    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std): what `Batches` normalises with."""
        return self.mean, self.std


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
# 2. Batches and augmentation (everything on the model's device, whole batches at a time)
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
    # (b, w): flip folded in
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - xs[None, :], xs[None, :])
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
    # airbench: the top-left corner anywhere the whole square fits, so every image loses size**2 pixels
    if inside:
        top = torch.randint(0, h - size + 1, (b, 1, 1), device=dev, generator=generator)
        left = torch.randint(0, w - size + 1, (b, 1, 1), device=dev, generator=generator)
    else:
        top = torch.randint(0, h, (b, 1, 1), device=dev, generator=generator) - size // 2
        left = torch.randint(0, w, (b, 1, 1), device=dev, generator=generator) - size // 2
    ys, xs = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
    mask = ((ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)).unsqueeze(1)
    out = images.masked_fill(mask, 0.0).contiguous(memory_format=torch.channels_last)
    return (out, mask) if return_mask else out


@dataclass(frozen=True)
class Augmentation:
    """How `Batches` augments each training image: a random crop after padding, a flip, then cutout. Each field
    is the recipe setting of the same name, its unit and default stated there (`recipe.Recipe`)."""

    pad: int = Recipe.pad
    pad_mode: str = Recipe.pad_mode
    flip: str = Recipe.flip
    cutout: int = Recipe.cutout
    cutout_inside: bool = Recipe.cutout_inside

    def __post_init__(self) -> None:
        # each setting of a few values (pad_mode, flip) against the recipe's one table of them
        for f in fields(self):
            if f.name in OPTIONS:
                one_of(OPTIONS[f.name])(f.name, getattr(self, f.name))

    @classmethod
    def of(cls, recipe: Recipe) -> "Augmentation":
        """The augmentation a run of `recipe` trains with."""
        return cls(**{f.name: getattr(recipe, f.name) for f in fields(cls)})


class Batches:
    """Mini-batches of a split `(x, y)` held on the device as uint8: shuffled, augmented (`augment`: True for
    the defaults), normalised with `stats` (mean, std) and channels_last, on request. One device generator and
    the epoch count are its state."""

    def __init__(self, split: tuple[torch.Tensor, torch.Tensor], batch_size: int, stats, device,
                 shuffle: bool = False, augment: Augmentation | bool = False, seed: int = 0,
                 whole_epoch: bool = False):
        x, y = split
        self.x = x.to(device)  # copied to the device once: no Python work per image afterwards
        self.y = y.to(device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.augment = Augmentation() if augment is True else augment or None
        # epochs begun: "alternate" flips image i on the epochs whose parity differs from its own
        self.epoch = 0
        self.first_flips = None
        # airbench: each image flipped on every other epoch, starting at random
        if self.augment and self.augment.flip == "alternate":
            # its own stream: the main one is left as it was
            draws = torch.Generator().manual_seed(seed)
            self.first_flips = torch.randint(0, 2, (len(x),), generator=draws).bool().to(device)
        # whole_epoch: augment the shuffled epoch in one pass and slice it, a dozen launches per epoch instead
        # of per batch, for when the step is a CUDA graph; same distribution, another order of random draws
        self.whole_epoch = whole_epoch
        mean, std = stats
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
        how = self.augment
        if how is None:
            return self.normalise(images)
        flips = None if self.first_flips is None else self.first_flips[index] ^ bool(self.epoch % 2 == 0)
        images = self.normalise(crop_flip(images, how.pad, self.generator, mode=how.pad_mode, flip=flips))
        if not how.cutout:
            return images
        return cutout(images, how.cutout, self.generator, inside=how.cutout_inside)

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
        # older checkpoints: random flips, where the count does not matter
        self.epoch = state.get("epoch", 0)


def training_batches(split: tuple[torch.Tensor, torch.Tensor], recipe: Recipe, data: Data, device) -> Batches:
    """The shuffled, augmented batches of `split` that a run of `recipe` trains on (crop and flip, cutout)."""
    return Batches(split, recipe.batch_size, data.stats, device, shuffle=True, augment=Augmentation.of(recipe),
                   seed=recipe.seed)


def eval_batches(split: tuple[torch.Tensor, torch.Tensor], data: Data, device) -> Batches:
    """A split's images for evaluation: in order, not augmented, EVAL_BATCH at a time."""
    return Batches(split, EVAL_BATCH, data.stats, device)
