"""Shared loops for `mini_project.ipynb`: a ResNet under 5M parameters on CIFAR-10.

The notebook holds the story and the model definitions; this module holds the machinery it calls.

Sections
  1. Environment and seeding     pick_device, environment_report, set_seed
  2. Data                        load_cifar10, split_train_val, channel_stats, prepare_data
  3. Batches and augmentation    crop_flip, Batches (dataset kept on the device as uint8)
  4. Models from the notebook    notebook_namespace, count_parameters
  5. Training engine             auto_precision, sgd, Engine, train_step, EpochSums, StaticStep (the CUDA-graph
                                 step), checked_static_step, training_step, train_epoch, predict, evaluate,
                                 ModelEMA, training_state, resume, fit
  6. Results store               config_hash, atomic_write, ResultsStore, training_batches, run_experiment,
                                 best_by_validation, Planned, served, training_rate, training_cost (what Run
                                 all will cost)
  7. Plots and tables            plot_pair, plot_confusion, render_tables, results_table, latex_table,
                                 report_tables, results_at_a_glance, README generation (colab_badge)

Nothing runs at import time: no data is read, no device is touched, no folder is made.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pickle
import platform
import random
import re
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------
# 1. Environment and seeding
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

    report = {
        "device": str(device),
        "device name": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
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
# 2. Data
# ---------------------------------------------------------------------------------------------------

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_FOLDER = "cifar-10-batches-py"


def load_cifar10(data_dir: str | Path, download: bool = True) -> dict[str, torch.Tensor]:
    """Read CIFAR-10 as uint8 tensors: train_x (50000,3,32,32), train_y, test_x (10000,3,32,32), test_y.

    When `data_dir/cifar-10-batches-py` exists its pickled batches are read directly (this also accepts
    re-encoded copies that torchvision's md5 check refuses); otherwise torchvision downloads it there first.
    """
    folder = Path(data_dir) / CIFAR_FOLDER
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
        xs, ys = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

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
    """The splits used everywhere: `train`/`val` (45k/5k) for experiments and tuning, `full` (all 50k
    training images) for the final retraining, `test` for the final evaluation only. uint8, on the CPU."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    full: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    mean: torch.Tensor  # per channel, 0-1 scale, from the training split
    std: torch.Tensor


def prepare_data(data_dir, n_val: int = 5000, seed: int = 0, quick: dict | None = None) -> Data:
    """Load CIFAR-10, split 45k/5k with a fixed seed, and take normalisation statistics from the training split.

    `quick` (e.g. {"train": 1000, "val": 500, "test": 500}) keeps only the first images of each split: the same
    code path on a subset, for smoke tests on a CPU.
    """
    raw = load_cifar10(data_dir)
    train_x, train_y, val_x, val_y = split_train_val(raw["train_x"], raw["train_y"], n_val, seed)
    mean, std = channel_stats(train_x)
    full = (raw["train_x"], raw["train_y"])
    test = (raw["test_x"], raw["test_y"])
    train, val = (train_x, train_y), (val_x, val_y)
    if quick:
        cut = lambda split, n: (split[0][:n], split[1][:n])  # noqa: E731
        train, val, test = cut(train, quick["train"]), cut(val, quick["val"]), cut(test, quick["test"])
        full = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    return Data(train=train, val=val, full=full, test=test, mean=mean, std=std)


# ---------------------------------------------------------------------------------------------------
# 3. Batches and augmentation (everything on the model's device, whole batches at a time)
# ---------------------------------------------------------------------------------------------------


def crop_flip(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None,
              return_params: bool = False):
    """Random crop after zero padding by `pad` pixels, and random horizontal flip, for a whole batch.

    Same distribution as torchvision's RandomCrop(32, padding=pad) + RandomHorizontalFlip(), but one gather
    on the device instead of Python work per image. The flip is folded into the column index of the crop.
    Returns the augmented batch (and, with return_params, the row offsets, column offsets and flip flags).
    """
    b, _, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    flip = torch.randint(0, 2, (b,), device=dev, generator=generator).bool()
    ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = dy[:, None] + ys[None, :]                                            # (b, h)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - xs[None, :], xs[None, :])  # (b, w)
    # Advanced indices on dims 0, 2, 3 around a slice: the result comes out as (b, h, w, c).
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)  # (b, c, h, w) with channels_last strides
    return (out, dy, dx, flip) if return_params else out


def cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
           return_mask: bool = False):
    """Cutout (DeVries & Taylor, 2017) for a whole batch of normalised images: a `size` x `size` square at a
    uniformly random centre of each image is set to zero, i.e. to the training mean colour; near a border the
    square is clipped. One mask on the device, no Python work per image. Returns the batch (and, with
    return_mask, the (B, 1, H, W) mask of the zeroed pixels)."""
    b, _, h, w = images.shape
    dev = images.device
    top = torch.randint(0, h, (b, 1, 1), device=dev, generator=generator) - size // 2
    left = torch.randint(0, w, (b, 1, 1), device=dev, generator=generator) - size // 2
    ys, xs = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
    mask = ((ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)).unsqueeze(1)
    out = images.masked_fill(mask, 0.0).contiguous(memory_format=torch.channels_last)
    return (out, mask) if return_mask else out


class Batches:
    """Mini-batches of a dataset held on the device as uint8.

    Each batch is shuffled (optional), augmented (optional: crop_flip), converted to float and normalised on
    the device, and laid out channels_last; with `cutout` > 0, a square of that size is then blanked in each
    augmented image (`cutout`). The random state lives in one generator on the device, so that it
    can be saved in a checkpoint and restored (`state_dict` / `load_state_dict`).

    `whole_epoch=True` augments and normalises the whole shuffled epoch in one pass at the start of the epoch
    and then only slices it: a dozen kernel launches per epoch instead of per batch, for when the training step
    itself is so cheap (a CUDA graph) that per-batch preparation would dominate. Same distribution, another
    order of random draws, so the two modes give different (equally valid) runs.
    """

    def __init__(self, x, y, batch_size: int, mean, std, device, shuffle: bool = False,
                 augment: bool = False, pad: int = 4, seed: int = 0, whole_epoch: bool = False,
                 cutout: int = 0):
        self.x = x.to(device)
        self.y = y.to(device)
        self.batch_size, self.shuffle, self.augment, self.pad = batch_size, shuffle, augment, pad
        self.cutout = cutout
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

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> what the model sees: augmented (when asked) and normalised."""
        if not self.augment:
            return self.normalise(images)
        images = self.normalise(crop_flip(images, self.pad, self.generator))
        return cutout(images, self.cutout, self.generator) if self.cutout else images

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, size = len(self.x), self.batch_size
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        if self.whole_epoch:
            images, labels = self.prepare(self.x[order]), self.y[order]
            for start in range(0, n, size):
                yield images[start:start + size], labels[start:start + size]
        else:
            for start in range(0, n, size):
                index = order[start:start + size]
                yield self.prepare(self.x[index]), self.y[index]

    def fixed_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first `count` full batches in dataset order, normalised, not augmented, drawing nothing from
        the generator: for checks that must not change the training run's random stream."""
        count = min(count, len(self.x) // self.batch_size)
        return [(self.normalise(self.x[k * self.batch_size:(k + 1) * self.batch_size]),
                 self.y[k * self.batch_size:(k + 1) * self.batch_size]) for k in range(count)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------------------------
# 4. Models from the notebook
# ---------------------------------------------------------------------------------------------------


def notebook_namespace(path: str | Path = "mini_project.ipynb", tag: str = "model") -> dict:
    """Execute the notebook's code cells tagged `tag` and return their namespace.

    The architectures are defined once, in the notebook, where graders read them; tests and the benchmark
    take them from there with this function instead of keeping a second copy.
    """
    notebook = json.loads(Path(path).read_text())
    namespace: dict = {"__name__": "notebook_models"}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and tag in cell.get("metadata", {}).get("tags", []):
            exec(compile("".join(cell["source"]), f"{path}:{tag}", "exec"), namespace)
    return namespace


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torchsummary_total(model: nn.Module, device: torch.device) -> int:
    """Trainable parameters as torchsummary counts them (its table is not printed), checked against
    `count_parameters`, so that the number shown is the number asserted."""
    import contextlib
    import io

    from torchsummary import summary

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        summary(model.to(device), (3, 32, 32), device=torch.device(device).type)
    line = next(line for line in text.getvalue().splitlines() if line.startswith("Trainable params:"))
    total = int(line.split(":")[1].replace(",", ""))
    assert total == count_parameters(model), (total, count_parameters(model))
    return total


# ---------------------------------------------------------------------------------------------------
# 5. Training engine
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
    """SGD, fused into one kernel or multi-tensor (foreach), with its momentum buffers created as zeros before
    the first step, which then computes what a first step without buffers does (buffer = gradient)."""
    optimizer = torch.optim.SGD(params, lr=float(lr), momentum=momentum, weight_decay=weight_decay,
                                nesterov=nesterov, fused=fused or None, foreach=None if fused else True)
    if momentum:
        for group in optimizer.param_groups:
            for p in group["params"]:
                # fused SGD would create them with empty_like on its first step; a step that the gradient
                # scaler skips (inf or NaN gradients) leaves them uninitialised, and the next one reads garbage
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


@dataclass
class Engine:
    """How the arithmetic runs on a device.

    On CUDA: channels_last, autocast in bf16 (compute capability 8.0 and newer) or fp16 with a gradient scaler
    (older GPUs, e.g. a T4), `precision` to force one ("bf16", "fp16", "fp32"); optional torch.compile; with
    bf16, the training step of full batches captured once as a CUDA graph and replayed (`graphs`: None =
    automatic, True/False to force), compiled or not, after a check against eager steps. On the CPU: fp32, eager.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    compile: bool = False
    graphs: bool | None = None
    why: str = ""  # how the precision was chosen

    @classmethod
    def for_device(cls, device, compile: bool = False, graphs: bool | None = None,
                   precision: str | None = None) -> "Engine":
        """The engine for `device`; `precision` None picks it from the device (`auto_precision`)."""
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
        """Mixed precision on CUDA, a no-op on the CPU. `cache=False` re-casts the weights at every use
        instead of caching their bf16 copies: required inside a CUDA graph capture, and free in a training
        step, where each weight is used once."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None,
                              cache_enabled=cache)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler that is active only for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move to the device in channels_last; returns the module to call (compiled when asked)."""
        model.to(self.device, memory_format=torch.channels_last)
        return torch.compile(model) if self.compile else model

    def optimizer(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                  nesterov: bool = False) -> torch.optim.SGD:
        """`sgd`, fused on CUDA, multi-tensor elsewhere. The learning rate is a tensor on the device, so that a
        schedule can change it between replays of a CUDA graph."""
        optimizer = sgd(params, lr, momentum, weight_decay, nesterov, fused=self.device.type == "cuda")
        self.lr_on_device(optimizer)
        return optimizer

    def lr_on_device(self, optimizer) -> None:
        """Make every group's learning rate a float32 tensor on the device (again after load_state_dict, which
        brings back a CPU tensor): fused SGD reads it there, and a CUDA graph sees its updates."""
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=self.device)

    def graph_plan(self) -> tuple[bool, str]:
        """Whether to capture the training step as a CUDA graph, and the reason when not."""
        if self.graphs is False:
            return False, "eager (GRAPHS=False)"
        if self.device.type != "cuda":
            return False, "eager (no CUDA device)"
        if self.amp_dtype == torch.float16:
            return False, "eager (fp16 needs a gradient scaler, whose inf checks are not graph-safe)"
        if self.amp_dtype is None:
            return False, "eager (fp32: the graph is captured for bf16 only)"
        return True, "cuda-graph"  # with torch.compile too: its kernels are captured like eager ones


def train_step(model, images, labels, optimizer, engine: Engine, scaler, label_smoothing: float = 0.0,
               set_to_none: bool = True):
    """Forward in the engine's precision, backward (scaled for fp16), one optimizer step.
    Returns the loss and the logits, still on the device. `set_to_none=False` zeroes the gradients in place
    instead of freeing them: an eager step beside a CUDA graph must keep the graph's gradient tensors."""
    with engine.autocast(cache=False):
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=set_to_none)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


class EpochSums:
    """Loss and correct predictions summed on the device over an epoch, read once at its end, so that the
    loop never waits for the GPU (no .item() per step). The tensors stay in place: a CUDA graph adds to them."""

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


class StaticStep:
    """The training step of full batches on static buffers: what a CUDA graph captures and replays.

    Eager PyTorch launches the ~200 kernels of a step one by one from Python, a few microseconds each, which
    on a fast GPU takes longer than the arithmetic of a batch of 128. A CUDA graph records the kernels once
    and replays them with one launch. Everything the kernels touch must stay at fixed addresses: the input
    buffers (each batch is copied in), the weights, the gradients, the momentum buffers, the learning rate (a
    device tensor that the schedule fills) and the epoch sums. Capture follows PyTorch's whole-network recipe:
    warm-up steps on a side stream (cuDNN autotuning, gradient memory), gradients set to None, then capture.

    With `capture=False` the same body runs eagerly on the same buffers: the CPU test of this path.
    """

    def __init__(self, model, optimizer, engine: Engine, scaler, sums: EpochSums, label_smoothing: float,
                 warmup: list[tuple[torch.Tensor, torch.Tensor]], capture: bool = True):
        self.model, self.optimizer, self.engine, self.scaler = model, optimizer, engine, scaler
        self.sums, self.label_smoothing = sums, label_smoothing
        self.images = torch.empty_like(warmup[0][0])  # keeps the channels_last layout
        self.labels = torch.empty_like(warmup[0][1])
        self.batch_size = len(self.labels)
        self.graph = None
        if not capture:
            return
        side = torch.cuda.Stream(engine.device)
        side.wait_stream(torch.cuda.current_stream(engine.device))
        with torch.cuda.stream(side):
            for images, labels in warmup:
                self.load(images, labels)
                self.body()
        torch.cuda.current_stream(engine.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.body()

    def load(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images.copy_(images)
        self.labels.copy_(labels)

    def body(self) -> torch.Tensor:
        """One step on the static buffers; returns the loss detached, so that no autograd graph outlives the
        step: a captured graph kept alive by its loss would keep the capture stream's gradient accumulators,
        and every later eager backward (the check, the epoch's last batch) would meet them on another stream
        (PyTorch warns, and synchronises)."""
        loss, logits = train_step(self.model, self.images, self.labels, self.optimizer, self.engine,
                                  self.scaler, self.label_smoothing)
        self.sums.add(loss, logits, self.labels)
        return loss.detach()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training step on a full batch; returns the loss tensor (overwritten by the next step)."""
        self.load(images, labels)
        if self.graph is None:
            return self.body()
        self.graph.replay()
        return self.loss


def _state_tensors(model: nn.Module, optimizer) -> list[torch.Tensor]:
    """Every tensor a training step changes: weights, buffers, momentum buffers, learning rates."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [s["momentum_buffer"] for s in optimizer.state.values() if s.get("momentum_buffer") is not None]
    return tensors + [g["lr"] for g in optimizer.param_groups if isinstance(g["lr"], torch.Tensor)]


def snapshot(model: nn.Module, optimizer) -> dict:
    """Copies of the training state, to be written back in place by `restore`."""
    return {id(t): (t, t.detach().clone()) for t in _state_tensors(model, optimizer)}


@torch.no_grad()
def restore(model: nn.Module, optimizer, saved: dict) -> None:
    """Write a snapshot back into the same tensors (a CUDA graph keeps their addresses). Momentum buffers
    created after the snapshot are zeroed: with no dampening, SGD's first step from a zero buffer equals
    its first step without one (buffer = gradient)."""
    for t in _state_tensors(model, optimizer):
        if id(t) in saved:
            t.copy_(saved[id(t)][1])
        else:
            t.zero_()


def compare_steps(losses_a, losses_b, weights_a, weights_b, start) -> str | None:
    """None when two runs of the same steps agree within the bf16 tolerance the tests use (each loss within
    1%; the weight updates with cosine similarity > 0.95 and norms within 10%), else what differs."""
    for k, (a, b) in enumerate(zip(losses_a, losses_b)):
        a, b = float(a), float(b)
        if not (math.isfinite(a) and abs(a - b) <= 0.01 * abs(b)):
            return f"loss of step {k + 1}: {a:.5f} vs {b:.5f}"
    update_a = torch.cat([(w - s).float().flatten() for w, s in zip(weights_a, start)])
    update_b = torch.cat([(w - s).float().flatten() for w, s in zip(weights_b, start)])
    cosine = F.cosine_similarity(update_a, update_b, 0).item()
    ratio = (update_a.norm() / update_b.norm()).item()
    if not (cosine > 0.95 and abs(ratio - 1) <= 0.1):
        return f"weight updates: cosine {cosine:.4f}, norm ratio {ratio:.4f}"
    return None


def checked_static_step(model, optimizer, engine: Engine, scaler, sums: EpochSums, label_smoothing: float,
                        batches: Batches, capture: bool = True, warmup: int = 3, compare: int = 3):
    """Build the static (CUDA graph) step, then trust but check: from the same state and on the same fixed
    batches, `compare` replayed steps must match eager steps (`compare_steps`). Returns (step, path) where path
    is "cuda-graph" (or "static-buffers" without capture), or (None, "eager (reason)") after one warning when
    capture raised or the check failed. Either way the model, optimizer and sums are left as they were."""
    samples = batches.fixed_batches(warmup + compare)
    if len(samples) < warmup + compare:
        return None, f"eager (fewer than {warmup + compare} full batches for the graph's warm-up and check)"
    start = snapshot(model, optimizer)
    try:
        step = StaticStep(model, optimizer, engine, scaler, sums, label_smoothing, samples[:warmup], capture)
        checked = snapshot(model, optimizer)
        params = list(model.parameters())
        before = [checked[id(p)][1] for p in params]
        replayed = [step(x, y).detach().clone() for x, y in samples[warmup:]]
        after_replay = [p.detach().clone() for p in params]
        restore(model, optimizer, checked)
        eager = [train_step(model, x, y, optimizer, engine, scaler, label_smoothing, set_to_none=False)[0]
                 .detach().clone() for x, y in samples[warmup:]]
        mismatch = compare_steps(replayed, eager, after_replay, [p.detach() for p in params], before)
    except Exception as error:  # noqa: BLE001 - any failure of capture means: train eagerly
        mismatch = f"capture failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    restore(model, optimizer, start)
    sums.reset()
    if mismatch:
        warnings.warn(f"CUDA graph step not used ({mismatch}); training eagerly", stacklevel=2)
        return None, f"eager ({mismatch})"
    return step, "cuda-graph" if capture else "static-buffers"


def training_step(model, optimizer, engine: Engine, scaler, label_smoothing: float, batches: Batches):
    """The step a training run uses: (a checked CUDA-graph StaticStep, "cuda-graph") when the engine's plan
    allows it and the check passes, else (None, "eager (why)") for the plain eager step."""
    use_graph, path = engine.graph_plan()
    if not use_graph:
        return None, path
    return checked_static_step(model, optimizer, engine, scaler, EpochSums(engine.device), label_smoothing,
                               batches)


def train_epoch(model, batches, optimizer, engine: Engine, scaler, scheduler=None,
                label_smoothing: float = 0.0, ema: "ModelEMA | None" = None,
                step: StaticStep | None = None) -> dict:
    """One pass over `batches`; returns the mean training loss and accuracy.

    With a `step` (StaticStep, a CUDA graph on a GPU) its full batches run through it; the epoch's last,
    smaller batch runs eagerly on the same weights, keeping the graph's gradient tensors in place."""
    model.train()
    sums = step.sums if step is not None else EpochSums(engine.device)
    sums.reset()
    for images, labels in batches:
        if step is not None and len(labels) == step.batch_size:
            step(images, labels)
        else:
            loss, logits = train_step(model, images, labels, optimizer, engine, scaler, label_smoothing,
                                      set_to_none=step is None)
            sums.add(loss, logits, labels)
        sums.seen += len(labels)
        if scheduler is not None:
            scheduler.step()  # fills the lr tensor in place: the graph reads the new value
        if ema is not None:
            ema.update(model)
    return sums.read()


@torch.no_grad()
def predict(model, batches, engine: Engine, tta: bool = False) -> torch.Tensor:
    """Logits (float32, on the device) for every image of `batches`, in order.

    With `tta`, the logits are averaged over test-time views: the image, its mirror, and both shifted by one
    pixel right and down (zero fill), i.e. the views of `tta_views`."""
    model.eval()
    outputs = []
    for images, _ in batches:
        with engine.autocast():
            views = tta_views(images) if tta else [images]
            outputs.append(torch.stack([model(v).float() for v in views]).mean(0))
    return torch.cat(outputs)


def tta_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The test-time views of a normalised batch: identity, horizontal flip, and both translated by one pixel
    down and right (the vacated row and column are zero, i.e. the mean colour after normalisation)."""
    flipped = images.flip(-1)
    shift = lambda x: F.pad(x, (1, 0, 1, 0))[..., :-1, :-1]  # noqa: E731
    return [images, flipped, shift(images), shift(flipped)]


@torch.no_grad()
def evaluate(model, batches, engine: Engine, tta: bool = False) -> dict:
    """Mean cross-entropy and accuracy over `batches` (no augmentation, eval mode)."""
    logits = predict(model, batches, engine, tta=tta)
    labels = batches.y
    return {"loss": F.cross_entropy(logits, labels).item(),
            "acc": (logits.argmax(1) == labels).float().mean().item()}


class ModelEMA:
    """Exponential moving average of a model's weights: ema = d * ema + (1 - d) * weights.

    Updated every `every` optimizer steps (fewer small kernels). The decay warms up as
    d = min(decay, (1 + n) / (10 + n)) after n updates, so that a short run is not dominated by the random
    initial weights.

    `buffers="average"`: the floating-point buffers (BatchNorm running statistics) are averaged with the same
    decay, so that the statistics the averaged network normalises with belong to the same stretch of training
    as its weights; integer buffers (batch counters) are copied. `buffers="copy"` copies every buffer from
    the live model, as the first sweep of the final recipe did: the live model's statistics then normalise
    averaged weights they were not measured with, which costs accuracy when the weights move fast (measured
    on the GPU: `results/exploration/`)."""

    def __init__(self, model: nn.Module, decay: float = 0.99, every: int = 5, buffers: str = "average"):
        if buffers not in ("average", "copy"):
            raise ValueError(f"buffers must be 'average' or 'copy', not {buffers!r}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
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
            else:
                ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = state["steps"]


def make_scheduler(optimizer, kind: str, epochs: int, steps_per_epoch: int, warmup: float = 0.0):
    """Per-step learning-rate schedule, as a multiplier of the base lr.

    'constant': 1 throughout. 'cosine': cosine decay from 1 to 0 over all steps. 'onecycle': linear warm-up
    from 0.1 to 1 over the first `warmup` fraction of the steps, then linear decay to 0."""
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if kind == "onecycle":
            rise = max(1, int(warmup * total))
            if step < rise:
                return 0.1 + 0.9 * step / rise
            return max(0.0, (total - step) / max(1, total - rise))
        raise ValueError(f"unknown schedule {kind!r}")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class FitResult(NamedTuple):
    """What `fit` returns: the model to evaluate (the weight average when there is one), the per-epoch
    history, the training seconds, and the path the training step took ("cuda-graph" or "eager (why)")."""

    model: nn.Module
    history: list[dict]
    seconds: float
    path: str


def is_diverged(row: dict) -> bool:
    """An epoch diverged when its training loss, or its validation loss (when measured), is not finite: NaN or
    infinite weights or batch-norm statistics, from which no later epoch recovers."""
    return not (math.isfinite(row["train_loss"]) and math.isfinite(row.get("val_loss", 0.0)))


def diverged_epoch(history: list[dict]) -> int | None:
    """The first diverged epoch (`is_diverged`), or None."""
    return next((row["epoch"] for row in history if is_diverged(row)), None)


def read_checkpoint(path: Path) -> dict | None:
    """A checkpoint's contents; None when there is none. Tensors and plain data only (`weights_only`): a results
    folder shared through Drive or a fork cannot run code. An unreadable one (cut short by a disconnect, damaged
    by a sync, or holding anything else) is moved aside to `<name>.corrupt` with one warning."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # generator states stay CPU tensors
    except Exception as error:  # noqa: BLE001 - a damaged file raises many kinds of errors
        quarantine(path, f"checkpoint unreadable ({type(error).__name__}); training starts afresh")
        return None


def joined_path(before: str | None, now: str, training: bool) -> str:
    """The training-step path of a run that may have been resumed: `before` is what its checkpoint recorded
    (None for a fresh run or an older checkpoint), `now` the path this session takes while `training`.
    A run resumed on another path records both, in order ("cuda-graph, then eager (...)")."""
    if before is None or before.split(", then ")[-1] == now:
        return before or now
    return f"{before}, then {now}" if training else before


def training_state(model: nn.Module, config: dict, engine: Engine, steps_per_epoch: int):
    """A fresh run's optimizer, learning-rate schedule, gradient scaler and weight average (None without one)."""
    optimizer = engine.optimizer(model.parameters(), lr=config["lr"], momentum=config.get("momentum", 0.9),
                                 weight_decay=config.get("weight_decay", 0.0),
                                 nesterov=config.get("nesterov", False))
    scheduler = make_scheduler(optimizer, config.get("schedule", "constant"), config["epochs"], steps_per_epoch,
                               config.get("warmup", 0.0))
    ema = (ModelEMA(model, config["ema_decay"], buffers=config.get("ema_buffers", "copy"))
           if config.get("ema_decay") else None)
    return optimizer, scheduler, engine.scaler(), ema


def resume(state: dict, model, optimizer, scheduler, scaler, ema, train: Batches, engine: Engine) -> str:
    """Load a checkpoint's state in place; returns what changed since it was written ('' when nothing).
    A checkpoint of another precision resumes: its scaler state is empty (bf16, fp32) or unused."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    engine.lr_on_device(optimizer)
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # empty when written without a gradient scaler: an fp16 run then starts a fresh one
        scaler.load_state_dict(state["scaler"])
    train.load_state_dict(state["batches"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["cpu_rng"])
    before = state.get("precision", "a precision not recorded")
    if before == engine.precision:
        return ""
    fresh = "; the gradient scaler starts fresh" if scaler.is_enabled() and not state["scaler"] else ""
    return f" (written in {before}, continuing in {engine.precision}{fresh})"


def fit(model: nn.Module, train: Batches, val: Batches | None, config: dict, engine: Engine,
        checkpoint: Path | None = None, checkpoint_seconds: float = 20.0, log_every: int = 10,
        on_epoch_end: Callable[[int], None] | None = None, label: str = "training") -> FitResult:
    """Train `model` for config["epochs"] epochs and return a FitResult.

    config keys: epochs, lr, momentum, weight_decay, nesterov, schedule, warmup, label_smoothing, ema_decay,
    ema_buffers ("average" or "copy"; a config without the key means "copy", how every stored run made before
    the key existed was trained, so that a stored result keeps meaning what its config says).
    At the end of an epoch, when `checkpoint_seconds` have passed since the last one, a checkpoint is written
    (model, optimizer, schedule, scaler, EMA, data order, CPU random state, the history, the training-step
    path and the precision so far): a later call with the same checkpoint file resumes after that epoch, in
    any precision; one that does not fit this run is moved aside with a warning and the run starts afresh.
    (Saving ~40 MB after each of the 600 one-second epochs of a GPU run would cost about as much as ten
    epochs; after every epoch that takes 20 s or more it is free.)
    The training step runs as a CUDA graph when `engine.graph_plan()` allows it and the graph passes its
    check against eager steps (`checked_static_step`). A non-finite training or validation loss ends the run
    at that epoch (`is_diverged`).
    Prints a line before training (`label`, epochs, images, precision, step path), the remaining time after
    its first epoch, and one line for the first epoch, every `log_every` epochs, the last one, a diverged one.
    """
    module = engine.prepare(model)
    optimizer, scheduler, scaler, ema = training_state(model, config, engine, len(train))
    history: list[dict] = []
    seconds = 0.0
    state = read_checkpoint(checkpoint) if checkpoint is not None else None
    if state is not None:
        fresh_weights, fresh_order = copy.deepcopy(model.state_dict()), train.state_dict()  # if it does not fit
        try:
            changed = resume(state, model, optimizer, scheduler, scaler, ema, train, engine)
            history, seconds = state["history"], state["seconds"]
            print(f"resumed from {checkpoint} after epoch {len(history)}{changed}")
        except Exception as error:  # noqa: BLE001 - another model, an older layout: never stop a Run all
            quarantine(checkpoint, f"checkpoint does not fit this run ({type(error).__name__}); training starts afresh")
            model.load_state_dict(fresh_weights)  # a failed load may have filled part of the model
            train.load_state_dict(fresh_order)
            optimizer, scheduler, scaler, ema = training_state(model, config, engine, len(train))
            state = None
    step, path = None, engine.graph_plan()[1]
    training = len(history) < config["epochs"]  # something left to train
    if training:
        step, path = training_step(module, optimizer, engine, scaler, config.get("label_smoothing", 0.0), train)
        print(textwrap.fill(f"{label}: {count_text(config['epochs'] - len(history), 'epoch')} x "
                            f"{len(train.x):,} images, {engine.precision}, {path}", 80, subsequent_indent="  "))
    path = joined_path(state.get("path") if state is not None else None, path, training)
    last_save, first = time.perf_counter(), len(history) + 1
    for epoch in range(first, config["epochs"] + 1):
        start = time.perf_counter()
        stats = train_epoch(module, train, optimizer, engine, scaler, scheduler,
                            config.get("label_smoothing", 0.0), ema, step)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        seconds += time.perf_counter() - start
        row = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"]), "train_loss": stats["loss"],
               "train_acc": stats["acc"], "seconds": seconds}
        if val is not None:
            scores = evaluate(ema.module if ema else module, val, engine)
            row.update(val_loss=scores["loss"], val_acc=scores["acc"])
        history.append(row)
        if is_diverged(row):
            print(f"{format_epoch(row)}\nDIVERGED: a loss is not finite; the run stops here")
            break
        if log_line(epoch, config["epochs"], log_every):
            print(format_epoch(row))
        if epoch == first < config["epochs"]:  # the first epoch of this session sets the pace
            left = (config["epochs"] - epoch) * (time.perf_counter() - start)  # validation included
            print(f"about {format_duration(left)} left ({count_text(config['epochs'] - epoch, 'more epoch')})")
        if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_seconds:
            last_save = time.perf_counter()
            saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "batches": train.state_dict(), "ema": ema.state_dict() if ema else None,
                     "cpu_rng": torch.get_rng_state(), "history": history, "seconds": seconds, "path": path,
                     "precision": engine.precision}
            atomic_write(checkpoint, lambda target: torch.save(saved, target))
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    return FitResult(ema.module if ema else module, history, seconds, path)


def log_line(epoch: int, epochs: int, log_every: int = 10) -> bool:
    """Whether an epoch gets a line in the log: the first, every `log_every`-th and the last."""
    return epoch == 1 or epoch % log_every == 0 or epoch == epochs


def format_epoch(row: dict) -> str:
    """One compact log line for an epoch (at most 80 characters with the marker of a stored log)."""
    text = (f"epoch {row['epoch']:3d}  lr {row['lr']:.4f}  loss {row['train_loss']:.3f} "
            f"acc {row['train_acc']:.3f}")  # training loss and accuracy, under augmentation
    if "val_acc" in row:
        text += f"  val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}"
    return text + f"  {row['seconds']:.1f} s"


# ---------------------------------------------------------------------------------------------------
# 6. Results store
# ---------------------------------------------------------------------------------------------------


def config_hash(config: dict) -> str:
    """A short stable digest of a configuration: a changed configuration is a different experiment."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Write a file all at once or not at all: `write(tmp)` fills a temporary file in the same folder, which
    is then renamed over `path` (a rename is atomic). A crash or a disconnect in the middle leaves the old
    file, or none, never half of one. The temporary name keeps the suffix, so writers that go by it still work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def quarantine(path: Path, reason: str) -> None:
    """Move an unreadable file aside to `<name>.corrupt` (kept for inspection) with one warning."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    warnings.warn(f"{path}: {reason}; moved aside to {aside.name}", stacklevel=3)


class ResultsStore:
    """Results on disk, one experiment per name:

        {root}/{name}.csv            per-epoch history
        {root}/{name}.json           summary: config and its hash, parameters, accuracies, device, versions, date
        {root}/{name}.pt             final weights (fp16 state dict), for the experiments that keep them
        {root}/summary.json          all summaries together
        {root}/checkpoints/{name}.pt checkpoint while training (not committed)

    Every file is written atomically. A summary or history that cannot be read is moved aside (`.corrupt`)
    with a warning and treated as missing, so that its experiment is trained again, never silently skipped.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str, suffix: str) -> Path:
        return self.root / f"{name}{suffix}"

    def checkpoint(self, name: str) -> Path:
        return self.root / "checkpoints" / f"{name}.pt"

    def load(self, name: str) -> dict | None:
        """The summary of `name`, or None when it is missing or unreadable."""
        path = self.path(name, ".json")
        if not path.exists():
            return None
        try:
            summary = json.loads(path.read_text())
            if not isinstance(summary, dict) or "config_hash" not in summary:
                raise ValueError("not a summary")
            return summary
        except (ValueError, UnicodeDecodeError) as error:
            quarantine(path, f"summary unreadable ({type(error).__name__}); the experiment will be retrained")
            return None

    def history(self, name: str):
        """The per-epoch history as a DataFrame, or None when it is missing or unreadable (cut short)."""
        import pandas as pd

        path = self.path(name, ".csv")
        if not path.exists():
            return None
        try:
            history = pd.read_csv(path)
            epochs = history["epoch"].tolist()
            if epochs != list(range(1, len(history) + 1)) or history[["lr", "seconds"]].isna().any().any():
                raise ValueError("incomplete rows")
            return history
        except (ValueError, KeyError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
            quarantine(path, f"history unreadable ({type(error).__name__}); the experiment will be retrained")
            return None

    def complete(self, name: str, config: dict, needs_weights: bool = False):
        """(summary, history) when a finished (or diverged) result exists for exactly this configuration, with
        its whole history (and its weights, with `needs_weights`); None otherwise."""
        summary = self.load(name)
        if summary is None or summary["config_hash"] != config_hash(config):
            return None
        if summary["epochs_completed"] != config["epochs"] and not summary.get("diverged"):
            return None
        history = self.history(name)
        if (history is None or len(history) != summary["epochs_completed"]
                or (needs_weights and not summary.get("diverged") and not self.path(name, ".pt").exists())):
            return None
        return summary, history

    def save(self, name: str, summary: dict, history: list[dict]) -> None:
        import pandas as pd

        atomic_write(self.path(name, ".csv"), lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
        atomic_write(self.path(name, ".json"), lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
        self.write_index()

    def summaries(self) -> dict[str, dict]:
        """Every readable summary, by experiment name."""
        names = [p.stem for p in sorted(self.root.glob("*.json"))
                 if p.name != "summary.json" and not p.name.startswith(".")]  # not temporary files
        found = {name: self.load(name) for name in names}
        return {name: summary for name, summary in found.items() if summary is not None}

    def write_index(self) -> None:
        index = json.dumps(self.summaries(), indent=2)
        atomic_write(self.root / "summary.json", lambda tmp: tmp.write_text(index))


def save_weights(model: nn.Module, path: Path) -> None:
    """Save the state dict with floating tensors in fp16 (half the bytes; the accuracy is checked on reload)."""
    model = getattr(model, "_orig_mod", model)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load fp16 weights saved by `save_weights` into `model` (in the model's own dtype)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a diverged run's non-finite numbers are stored as null."""
    return value if math.isfinite(value) else None


def replay_log(name: str, summary: dict, history, root: Path, log_every: int = 10) -> None:
    """Print a stored run's log lines as training printed them, under a line that says they were read from
    the store and marked with '| ': a notebook executed across several sessions then reads like one run."""
    print(f"{name}: read from {root}/ (trained on {summary['device']}, {summary['date'][:10]}; "
          f"delete {root / (name + '.json')} to retrain):")
    rows = history.to_dict("records")
    for row in rows:
        if log_line(row["epoch"], len(rows), log_every) or row["epoch"] == summary.get("diverged_epoch"):
            print(f"| {format_epoch(row)}")
    print(result_line(name, summary))


def result_line(name: str, summary: dict) -> str:
    """The line that closes an experiment's log: its test accuracy, or where it diverged."""
    if summary.get("diverged"):
        return f"{name}: DIVERGED at epoch {summary['diverged_epoch']} (a loss is not finite); not tested"
    if summary.get("test_acc") is None:
        return f"{name}: final validation accuracy {summary['final_val_acc']:.4f}"
    return (f"{name}: test acc {summary['test_acc']:.4f} after {summary['train_seconds']:.1f} s of training "
            f"({summary.get('path', 'path not recorded')})")


def best_by_validation(summaries: dict[str, dict], names) -> str | None:
    """The experiment among `names` with the highest final-epoch validation accuracy, never a diverged one;
    None when every one of them diverged."""
    usable = [name for name in names if not summaries[name].get("diverged")]
    return max(usable, key=lambda name: summaries[name]["final_val_acc"]) if usable else None


def paths_taken(summaries: dict[str, dict]) -> str:
    """Which path the training step took, over the stored runs: 'cuda-graph (10 runs)', or each path with
    its count ('eager (no CUDA device) (10 runs)'); runs stored before paths were recorded are counted too."""
    counts: dict[str, int] = {}
    for summary in summaries.values():
        path = summary.get("path", "not recorded")
        counts[path] = counts.get(path, 0) + 1
    return "; ".join(f"{path} ({count_text(n, 'run')})" for path, n in counts.items()) or "no run yet"


def training_batches(x, y, config: dict, data: Data, device) -> Batches:
    """The shuffled, augmented batches a run of `config` trains on (crop and flip, cutout when set)."""
    return Batches(x, y, config["batch_size"], data.mean, data.std, device, shuffle=True, augment=True,
                   pad=config.get("pad", 4), seed=config["seed"], cutout=config.get("cutout", 0))


def run_experiment(name: str, config: dict, build_model: Callable[[], nn.Module], data: Data, engine: Engine,
                   store: ResultsStore, train_split: str = "train", keep_weights: bool = False,
                   tta: bool = False, evaluate_test: bool = True, checkpoint_seconds: float = 20.0,
                   on_epoch_end=None) -> dict:
    """Train and test one configuration, or serve it from the store when it is complete.

    Skips a model whose results are complete for the same config hash (printing its stored log), resumes an
    interrupted one from its checkpoint, and retrains when the config changed or a stored file is unreadable.
    Evaluates on the validation split every epoch (when training on `train`, the 45k split) and, with
    `evaluate_test`, on the test split once, at the end, with the final-epoch weights. `tta` adds test-time
    augmentation to those final evaluations. With `keep_weights` the final weights are saved (fp16) and the
    final evaluations use them exactly as saved. A run whose loss stops being finite is stored as diverged
    (with its epoch), is not tested, and keeps no weights. Returns the summary.
    """
    stored = store.complete(name, config, needs_weights=keep_weights)
    if stored is not None:
        summary, history = stored
        replay_log(name, summary, history, store.root)
        return summary
    digest = config_hash(config)
    checkpoint = store.checkpoint(f"{name}-{digest}")
    set_seed(config["seed"])
    model = build_model()
    train_x, train_y = getattr(data, train_split)
    train = training_batches(train_x, train_y, config, data, engine.device)
    val = Batches(*data.val, 1024, data.mean, data.std, engine.device) if train_split == "train" else None
    final, history, seconds, path = fit(model, train, val, config, engine, checkpoint, checkpoint_seconds,
                                        on_epoch_end=on_epoch_end, label=name)
    diverged = diverged_epoch(history)
    summary = {
        "name": name, "config": config, "config_hash": digest,
        "trainable_params": count_parameters(model), "epochs_completed": len(history),
        "train_images": len(train_x), "device": device_name(engine.device),
        "precision": engine.precision, "path": path,
        "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": round(seconds, 2), "final_train_acc": finite_or_none(history[-1]["train_acc"]),
        "diverged": diverged is not None, "diverged_epoch": diverged,
    }
    if diverged is not None:
        summary.update(best_val_acc=None, final_val_acc=None, test_acc=None)
    else:
        if keep_weights:  # evaluate the weights exactly as saved (fp16), so that a reload reproduces the number
            save_weights(final, store.path(name, ".pt"))
            load_weights(getattr(final, "_orig_mod", final), store.path(name, ".pt"))
        if val is not None:
            summary.update(best_val_acc=max(r["val_acc"] for r in history),
                           final_val_acc=history[-1]["val_acc"])
            if tta:
                summary["final_val_acc_tta"] = evaluate(final, val, engine, tta=True)["acc"]
        if evaluate_test:
            scores = evaluate(final, Batches(*data.test, 1024, data.mean, data.std, engine.device), engine,
                              tta=tta)
            summary.update(test_acc=scores["acc"], test_loss=scores["loss"], tta=tta)
    print(result_line(name, summary))
    store.save(name, summary, history)
    checkpoint.unlink(missing_ok=True)
    return summary


class Planned(NamedTuple):
    """A run that Run all will make: its config, model factory and training images. `decided` names the config
    keys that earlier runs decide (Model 5's learning rate, the final recipe's choices): the config holds a
    stand-in for them, and a stored result matches whatever they are."""

    config: dict
    build: Callable[[], nn.Module]
    images: int
    decided: frozenset = frozenset()


def served(store: ResultsStore, name: str, planned: Planned) -> bool:
    """Whether the store holds a complete result of `name` for the planned config (`decided` keys aside)."""
    summary = store.load(name)
    if summary is None or set(summary["config"]) != set(planned.config):
        return False
    if any(summary["config"][k] != v for k, v in planned.config.items() if k not in planned.decided):
        return False
    return store.complete(name, summary["config"]) is not None


def training_rate(build: Callable[[], nn.Module], config: dict, data: Data, engine: Engine,
                  batches: int = 6) -> float:
    """Training images per second of `build` under `config` on this device, on the step its run would take
    (CUDA graph or eager): one timed pass over `batches` batches of real images, after a warm-up pass on CUDA."""
    model = build()
    module = engine.prepare(model)
    n = min(len(data.train[1]), batches * config["batch_size"])  # 6 full batches: the graph's warm-up and check
    train = training_batches(data.train[0][:n], data.train[1][:n], config, data, engine.device)
    optimizer, scheduler, scaler, ema = training_state(model, {**config, "lr": 0.0}, engine, len(train))
    step, _ = training_step(module, optimizer, engine, scaler, config.get("label_smoothing", 0.0), train)
    for _ in range(2 if engine.device.type == "cuda" else 1):  # on CUDA, the first pass pays for autotuning
        start = time.perf_counter()
        train_epoch(module, train, optimizer, engine, scaler, scheduler, config.get("label_smoothing", 0.0),
                    ema, step)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
    return n / (time.perf_counter() - start)


def training_cost(plan: dict[str, Planned], store: ResultsStore, data: Data, engine: Engine) -> str:
    """What training the runs of `plan` (in order) will cost on this device: how many the store serves, and
    the time to train the others, from a timed probe of each of their architectures (`training_rate`) times
    epochs x images. A run with `decided` keys is served only when every run before it is."""
    left, rates, seconds = [], {}, 0.0
    for name, planned in plan.items():
        if served(store, name, planned) and not (planned.decided and left):
            continue
        left.append(name)
        config = planned.config
        key = (config.get("arch"), "-".join(map(str, config.get("widths") or [])), str(config.get("blocks")),
               config["batch_size"])
        if key not in rates:
            rates[key] = training_rate(planned.build, config, data, engine)
        seconds += config["epochs"] * planned.images / rates[key]
    text = f"{len(plan) - len(left)} of {count_text(len(plan), 'run')} served from {store.root}/"
    if not left:
        return text + "; nothing to train"
    measured = ", ".join(f"{arch}{' ' + widths if widths else ''} at batch {batch}: {rate:,.0f} img/s"
                         for (arch, widths, _, batch), rate in rates.items())
    return (f"{text}; {len(left)} to train: about {format_duration(seconds)} of training on "
            f"{device_name(engine.device)} in {engine.precision} (measured here: {measured})")


# ---------------------------------------------------------------------------------------------------
# 7. Plots and tables
# ---------------------------------------------------------------------------------------------------


def save_figure(fig, path: str | Path, **options) -> None:
    """fig.savefig(path, **options), written atomically (`atomic_write`)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, **options))


def plot_pair(store: ResultsStore, names: tuple[str, str], labels: tuple[str, str], path: Path):
    """Validation accuracy and validation loss against epoch for two experiments, side by side; saved to path.
    A diverged run is drawn up to its last finite epoch, with a dotted line at the epoch where it diverged."""
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(7.5, 3.2))  # fits an A4/letter page
    for name, label in zip(names, labels):
        h = store.history(name)
        rows = h.to_dict("records")
        finite = h[[not is_diverged(row) for row in rows]]
        stop = diverged_epoch(rows)
        if stop is not None:
            label = f"{label}, diverged at epoch {stop}"
        for ax, values in ((ax_acc, finite["val_acc"] * 100), (ax_loss, finite["val_loss"])):
            line, = ax.plot(finite["epoch"], values, label=label, marker="." if len(h) < 10 else None)
            if stop is not None:
                ax.axvline(stop, color=line.get_color(), linestyle=":")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="validation loss", title="Validation loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{labels[0]} vs {labels[1]}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return fig


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]."""
    pred = logits.argmax(1).cpu()
    return torch.bincount(labels.cpu() * classes + pred, minlength=classes * classes).view(classes, classes)


def plot_confusion(counts: torch.Tensor, path: Path, title: str):
    """The confusion matrix as a heat map with the counts written in; saved to path."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))  # fits an A4/letter page
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xticks(range(10), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(10), CLASSES)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = counts.max().item()
    for i in range(10):
        for j in range(10):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if counts[i, j] > top / 2 else "black")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return fig


def render_tables(tables: dict, path: Path):
    """Render pandas tables (title -> DataFrame) one under the other into an image; saved to path."""
    import matplotlib.pyplot as plt

    heights = [0.6 + 0.32 * (len(t) + 1) for t in tables.values()]
    fig, axes = plt.subplots(len(tables), 1, figsize=(11, sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (title, table) in zip(axes[:, 0], tables.items()):
        ax.axis("off")
        ax.set_title(title, loc="left", fontweight="bold")
        shown = ax.table(cellText=table.astype(str).values, colLabels=list(table.columns),
                         rowLabels=list(table.index), loc="center", cellLoc="center")
        shown.auto_set_font_size(False)
        shown.set_fontsize(9)
        shown.auto_set_column_width(list(range(len(table.columns))))
        shown.scale(1, 1.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=130, bbox_inches="tight")
    return fig


def results_table(summaries: dict[str, dict]):
    """One row per experiment: parameters, epochs, images, validation and test accuracy (%; 'diverged at
    epoch k' for a diverged run), training time, the path of the training step and the device."""
    import pandas as pd

    rows = []
    for name, s in summaries.items():
        rows.append({
            "model": name, "trainable params": f"{s['trainable_params']:,}",
            "epochs": s["epochs_completed"], "train images": s["train_images"],
            "best val acc (%)": accuracy_text(s, "best_val_acc"),
            "final val acc (%)": accuracy_text(s, "final_val_acc"),
            "test acc (%)": accuracy_text(s, "test_acc"),
            "train time (s)": round(s["train_seconds"], 1),
            "training step": s.get("path", "not recorded"), "device": s["device"],
        })
    return pd.DataFrame(rows).set_index("model")


def markdown_table(table) -> str:
    """A pandas DataFrame as a GitHub Markdown table (index included), without extra packages."""
    columns = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for index, row in table.iterrows():
        cells = [str(index)] + ["" if v is None or v != v else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def final_seeds(summaries: dict[str, dict]) -> tuple[list[dict], list[float], list[str]]:
    """The final model's seeds: the tested runs' summaries, their test accuracies (%), and a note for each
    seed that diverged (left out of the mean)."""
    runs = [s for name, s in sorted(summaries.items()) if name.startswith("final seed")]
    diverged = [f"{s['name']} diverged at epoch {s['diverged_epoch']}" for s in runs if s.get("diverged")]
    tested = [s for s in runs if not s.get("diverged") and s.get("test_acc") is not None]
    return tested, [100 * s["test_acc"] for s in tested], diverged


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def final_model_line(summaries: dict[str, dict]) -> str | None:
    """'mean +- std over N seeds' of the final model's test accuracy, from its per-seed summaries."""
    seeds, accs, diverged = final_seeds(summaries)
    if not seeds:
        return f"FastResNet: {'; '.join(diverged)}" if diverged else None
    left_out = f"; left out: {'; '.join(diverged)}" if diverged else ""
    mean, std = mean_and_std(accs)
    views = ", test-time augmentation" if seeds[0].get("tta") else ""
    epochs = seeds[0]["config"]["epochs"]
    return (f"FastResNet, {seeds[0]['trainable_params']:,} parameters, {count_text(epochs, 'epoch')} on "
            f"{seeds[0]['train_images']:,} images: test accuracy {mean:.2f} +- {std:.2f}% over "
            f"{len(seeds)} seeds ({', '.join(f'{a:.2f}' for a in accs)}), final epoch{views}, "
            f"{sum(s['train_seconds'] for s in seeds) / len(seeds):.1f} s of training per seed on "
            f"{seeds[0]['device']}{left_out}")


SWEEP_BASE = "starting recipe"  # the sweep tables' label of the final recipe's base run ("final validation")
SWEEP_PREFIX = "final sweep - "  # a tuning run of the final recipe is stored as SWEEP_PREFIX + its label


def validation_score(summary: dict) -> tuple[float, bool]:
    """A tuning run's final validation accuracy as a recipe would use it: the better of plain and test-time
    augmented (when measured), and whether that is the augmented one. NaN for a diverged run."""
    if summary.get("diverged") or summary.get("final_val_acc") is None:
        return float("nan"), False
    plain, views = summary["final_val_acc"], summary.get("final_val_acc_tta")
    return (views, True) if views is not None and views > plain else (plain, False)


def combine_changes(changes: dict[str, dict], runs: dict[str, dict], base: str) -> tuple[str, dict] | None:
    """The second round of a one-change-at-a-time sweep: every change that beat `base` on validation, merged
    into one (where two changes set the same key, the better one's value), as (label, change); None unless
    at least two changes merge. `changes` holds the change of every label of `runs`."""
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


def sweep_table(runs: dict[str, dict]):
    """One row per tuning run (trained on the 45k split, scored on validation only): parameters, epochs,
    training time, final validation accuracy without and with test-time augmentation, and the change in
    points of the better of the two against the first row (the base recipe)."""
    import pandas as pd

    base = validation_score(next(iter(runs.values())))[0]
    rows = []
    for label, s in runs.items():
        score = validation_score(s)[0]
        rows.append({
            "configuration": label, "trainable params": f"{s['trainable_params']:,}",
            "epochs": s["epochs_completed"], "train time (s)": round(s["train_seconds"], 1),
            "val acc (%)": accuracy_text(s, "final_val_acc"),
            "val acc, TTA (%)": accuracy_text(s, "final_val_acc_tta"),
            "change (points)": f"{100 * (score - base):+.2f}" if math.isfinite(score) else "",
        })
    return pd.DataFrame(rows).set_index("configuration")


def sweep_runs(summaries: dict[str, dict]) -> dict[str, dict]:
    """The tuning runs of the final recipe in a results store, labelled as in the notebook: the base recipe
    ("final validation") first, then each SWEEP_PREFIX + <change> in the order they were trained (their
    summaries' dates; name order among undated ones), so that the combined round comes last, as in the
    notebook's table."""
    runs = {SWEEP_BASE: summaries["final validation"]} if "final validation" in summaries else {}
    tried = [(name, s) for name, s in summaries.items() if name.startswith(SWEEP_PREFIX)]
    runs.update({name[len(SWEEP_PREFIX):]: s for name, s in by_date(tried)})
    return runs


def by_date(named: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """(name, summary) pairs in training order: by the summaries' dates, keeping the given order among equal
    or missing dates."""
    return sorted(named, key=lambda item: item[1].get("date", ""))


FIRST_SWEEP = "first-sweep"  # results/ subfolder: the first sweep, its chosen recipe and seeds, kept as run


def sweep_text(summaries: dict[str, dict], intro: str, outcome: str) -> list[str]:
    """README's paragraphs for the tuning sweep of a results store: `intro` and the sweep table (when the store
    has tuning runs), then `outcome` and the final model's line (when it has tested seeds)."""
    runs, line = sweep_runs(summaries), final_model_line(summaries)
    return ([f"{intro}:\n\n{markdown_table(sweep_table(runs))}"] if runs else []) + (
        [f"{outcome}: {line}."] if line else [])


def exploration_table(path: str | Path = "results/exploration/summary.json") -> str | None:
    """README's table of the exploration runs made outside the notebook (benchmarks/exploration.py), in
    training order, or None when there are none."""
    path = Path(path)
    if not path.exists():
        return None
    runs = dict(by_date(list(json.loads(path.read_text()).items())))
    cards = sorted({s.get("device", "?") for s in runs.values()})
    return (f"Exploration outside the notebook (`benchmarks/exploration.py`, `{path.parent.as_posix()}/`, on "
            f"{', '.join(cards)}), trained on the 45k split and scored on validation only, to plan the next "
            f"sweep; change against its first row:\n\n{markdown_table(sweep_table(runs))}")


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "±": r"$\pm$", "×": r"$\times$"}


def latex_escape(text) -> str:
    """Plain text -> LaTeX source that prints it."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _is_number(text: str) -> bool:
    import re

    return re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?", text) is not None


def _float_decimals(values) -> int:
    """The fewest decimals (at most 4) that show every value of a float column."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return next((d for d in range(4) if all(abs(v - round(v, d)) < 5e-5 for v in finite)), 4)


def _table_cell(value, decimals: int | None = None) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:g}"
    return str(value)


LATEX_WRAP = 36  # characters: a longer text cell wraps in a LATEX_WRAP // 2 em wide column of the PDF's tables


def latex_table(table) -> str:
    """A DataFrame (or Series) as a LaTeX table for the PDF export: booktabs rules, the index name in the
    top-left corner, text escaped, each float column with the fewest decimals (at most 4) that show its values,
    numeric columns right-aligned; a text column with a cell longer than `LATEX_WRAP` characters (a long
    configuration label) wraps in a ragged-right paragraph column instead of widening the table, so that the
    table is not shrunk to an unreadable size; centred, and shrunk to the line width only if it would still
    overflow."""
    import pandas as pd

    frame = table.to_frame() if isinstance(table, pd.Series) else table
    columns = []
    for j in range(frame.shape[1]):
        column = frame.iloc[:, j]
        decimals = _float_decimals(column) if pd.api.types.is_float_dtype(column.dtype) else None
        columns.append([_table_cell(v, decimals) for v in column.tolist()])

    def text_align(cells) -> str:
        wrap = max(map(len, cells), default=0) > LATEX_WRAP
        return rf">{{\raggedright\arraybackslash}}p{{{LATEX_WRAP // 2}em}}" if wrap else "l"

    align = text_align([str(i) for i in frame.index]) + "".join(
        "r" if all(_is_number(c) for c in cells if c) and any(cells) else text_align(cells) for cells in columns)
    corner = "" if frame.index.name is None else frame.index.name

    def row(cells) -> str:
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    lines = [r"\begin{center}", r"\begin{adjustbox}{max width=\linewidth}", rf"\begin{{tabular}}{{{align}}}",
             r"\toprule", row([corner, *map(str, frame.columns)]), r"\midrule"]
    lines += [row([str(index), *(cells[i] for cells in columns)]) for i, index in enumerate(frame.index)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{adjustbox}", r"\end{center}"]
    return "\n".join(lines)


def report_tables() -> None:
    """From now on, every DataFrame this IPython session displays carries a LaTeX table (`latex_table`) beside
    its HTML: the PDF export (nbconvert prefers text/latex) typesets a real table, while Jupyter, Colab and
    GitHub keep showing the HTML. Outside IPython it does nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        import pandas as pd

        shell.display_formatter.formatters["text/latex"].for_type(pd.DataFrame, latex_table)


class Report:
    """A heading, an optional table and a few lines of text, with an HTML form (Jupyter, Colab, GitHub), a LaTeX
    form (the PDF export) and a plain-text one. `display(report, display_id=...)` shows it and
    `update_display(report, display_id=...)` replaces what that display shows, wherever it is."""

    def __init__(self, title: str, lines: list[str], table=None):
        self.title, self.lines, self.table = title, [line for line in lines if line], table

    @property
    def text(self) -> str:
        table = [] if self.table is None else [self.table.to_string()]
        return "\n".join([self.title, *table, *self.lines])

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        import html

        table = [] if self.table is None else [self.table.to_html()]
        return "\n".join([f"<p><b>{html.escape(self.title)}</b></p>", *table,
                          *(f"<p>{html.escape(line)}</p>" for line in self.lines)])

    def _repr_latex_(self) -> str:
        table = [] if self.table is None else [latex_table(self.table)]
        return "\n\n".join([rf"\noindent\textbf{{{latex_escape(self.title)}}}", *table,
                            *(rf"\noindent {latex_escape(line)}" for line in self.lines)])


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


def _recipe(config: dict) -> str:
    """'option2, lr 0.01, weight decay 0.0005, cosine' from an experiment's configuration."""
    parts = [str(config.get("arch", "?")), f"lr {config.get('lr', '?')}"]
    if config.get("weight_decay"):
        parts.append(f"weight decay {config['weight_decay']}")
    if config.get("schedule") not in (None, "constant"):
        parts.append(str(config["schedule"]))
    return ", ".join(parts)


def accuracy_text(summary: dict | None, key: str = "test_acc") -> str:
    """An accuracy of a run's summary in % as tables show it: the number, 'diverged at epoch k' (a diverged
    run has no accuracy to show), 'pending' (no run yet) or 'not measured'."""
    if summary is None:
        return "pending"
    if summary.get("diverged"):
        return f"diverged at epoch {summary.get('diverged_epoch', '?')}"
    if summary.get(key) is None:
        return "not measured"
    return f"{100 * summary[key]:.2f}"


def results_at_a_glance(results_dir: str | Path = "results", quick: bool = False) -> Report:
    """The notebook's summary near its top, computed from the full-scale results store `results_dir` (never
    quick mode's subfolder): the six models' test accuracy, the final model's mean +- std over its seeds, the
    card, and the total training time. Says plainly when no full-scale result exists yet, and, with `quick`,
    that the render around it is a quick-mode smoke test. A diverged run shows as 'diverged at epoch k'."""
    import pandas as pd

    root = Path(results_dir)
    summaries = {name: s for name, s in ResultsStore(root).summaries().items()
                 if not s.get("config", {}).get("quick")}
    note = ("This render is a quick-mode smoke test (tiny subsets, one or two epochs): the numbers further "
            "down show only that the code runs, nothing about the models." if quick else "")
    six = [f"model {i}" for i in range(1, 7)]
    seeds, tested, diverged = final_seeds(summaries)
    if not any(name in summaries for name in six) and not seeds and not diverged:
        return Report("Full-scale results: pending",
                      [f"No full-scale run has landed in {root}/ yet; this summary fills in from there once "
                       "the notebook has run on a CUDA GPU (it is refreshed by the last cell).", note])
    table = pd.DataFrame({
        "recipe": [_recipe(summaries[n]["config"]) if n in summaries else "" for n in six],
        "epochs": [str(summaries[n].get("epochs_completed", "")) if n in summaries else "" for n in six],
        "test acc (%)": [accuracy_text(summaries.get(n)) for n in six],
    }, index=pd.Index(six, name="model"))
    final = "Final model (FastResNet, Going further): pending."
    if tested:
        mean, std = mean_and_std(tested)
        views = ", with test-time augmentation" if seeds[0].get("tta") else ""
        final = (f"Final model (FastResNet, Going further): test accuracy {mean:.2f} ± "
                 f"{std:.2f}% (mean ± std over {count_text(len(tested), 'seed')}, "
                 f"final epoch{views}).")
    if diverged:
        final += " " + "; ".join(diverged).capitalize() + "."
    cards = sorted({s["device"] for s in summaries.values() if s.get("device")})
    seconds = sum(s.get("train_seconds") or 0 for s in summaries.values())
    return Report(f"Full-scale results (from {root}/)", [
        final, f"{'Cards' if len(cards) > 1 else 'Card'}: {', '.join(cards) or 'not recorded'}.",
        f"Total training time: {format_duration(seconds)} over {len(summaries)} runs.", note], table)


def readme_results(results_dir: str | Path = "results") -> str:
    """The results section of README.md, generated from the results store (full scale, else quick mode)."""
    root = Path(results_dir)
    parts = []
    for folder, title in ((root, "Full scale"), (root / "quick", "Quick mode (CPU smoke test)")):
        summaries = ResultsStore(folder).summaries()
        six = {name: s for name, s in summaries.items() if name.startswith("model ")}
        if not six:
            parts.append(f"**{title}: pending.** No run of this kind has landed in `{folder}/` yet.")
            continue
        note = (" These numbers come from tiny subsets and one or two epochs: they show that the code runs, "
                "nothing about the models." if folder != root else "")
        parts.append(f"**{title}** (`{folder}/`).{note}\n\n{markdown_table(results_table(six))}")
        parts += sweep_text(summaries, "Going further, the recipe tuned on the 45k split and scored on validation "
                            "only", "Going further")
        if folder == root:
            first = folder / FIRST_SWEEP
            parts += sweep_text(ResultsStore(first).summaries(),
                                f"The first sweep (`{first.as_posix()}/`; its weight average copied the live "
                                "BatchNorm statistics), trained on the 45k split and scored on validation only",
                                "Its chosen recipe")
            explored = [exploration_table(p / "summary.json") for p in sorted(folder.glob("exploration*"))]
            parts += filter(None, explored)
    return "\n\n".join(parts)


def readme_figures(doc_dir: str | Path = "documentation") -> str:
    """Markdown that shows the notebook's saved figures: full scale when there are any, else quick mode."""
    root = Path(doc_dir)
    folder = root if any(root.glob("*.jpg")) else root / "quick"
    figures = sorted(folder.glob("model * and * val acc and loss.jpg")) + sorted(folder.glob("*.png"))
    if not figures:
        return "No figures yet."
    label = "" if folder == root else "Quick mode (smoke test, not results): "
    return "\n\n".join(f"{label}{p.stem}  \n![{p.stem}]({p.as_posix().replace(' ', '%20')})" for p in figures)


def readme_benchmarks(folder: str | Path = "benchmarks/results") -> str:
    """The tables that benchmarks/train_speed.py wrote, one per device."""
    files = sorted(Path(folder).glob("train_speed_*.md"), key=lambda p: ("-compile" in p.stem, p.name))  # plain first
    tables = [p.read_text().replace("# Training speed", "#### Training speed") for p in files]
    if all("cpu" in p.name for p in files):
        tables.append("**GPU figures: pending.** The benchmark has not run on a GPU yet; no GPU number is estimated.")
    return "\n\n".join(tables)


def colab_badge(notebook: str | Path = "mini_project.ipynb") -> str:
    """README's *Open in Colab* badge, built from the GitHub URL that the notebook's parameters cell names once
    (`REPOSITORY`); while none is named, the line that says where to set it."""
    repository = notebook_namespace(notebook, tag="parameters").get("REPOSITORY") or ""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", repository)
    if match is None:
        return ("*Open in Colab*: no badge yet, because no GitHub repository is named: set `REPOSITORY` in the "
                "notebook's parameters cell to this project's GitHub URL and run `python3 helpers.py readme`.")
    owner, name = match.groups()
    target = f"https://colab.research.google.com/github/{owner}/{name}/blob/main/{Path(notebook).name}"
    return f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def update_readme(readme: str | Path = "README.md") -> None:
    """Regenerate the marked blocks of README.md (Colab badge, results, figures, benchmark) from the files on
    disk."""
    path = Path(readme)
    text = path.read_text()
    for key, body in (("colab", colab_badge()), ("results", readme_results()), ("figures", readme_figures()),
                      ("benchmark", readme_benchmarks())):
        start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
        head, rest = text.split(start)
        _, tail = rest.split(end)
        text = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] != ["readme"]:
        sys.exit("usage: python helpers.py readme    # regenerate README.md's badge, results, figures, benchmark")
    update_readme()
