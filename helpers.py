"""Shared loops for `mini_project.ipynb`: a ResNet under 5M parameters on CIFAR-10.

The notebook holds the story and the model definitions; this module holds the machinery it calls.

Sections
  1. Environment and seeding     pick_device, environment_report, set_seed
  2. Data                        load_cifar10, split_train_val, channel_stats, prepare_data
  3. Batches and augmentation    crop_flip, Batches (dataset kept on the device as uint8)
  4. Models from the notebook    notebook_namespace, count_parameters
  5. Training engine             Engine, train_step, train_epoch, predict, evaluate, ModelEMA, fit
  6. Results store               config_hash, ResultsStore, run_experiment
  7. Plots and tables            plot_pair, plot_confusion, render_tables, confusion_matrix, results_table

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
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

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
        report["bf16 supported"] = torch.cuda.is_bf16_supported()
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


class Batches:
    """Mini-batches of a dataset held on the device as uint8.

    Each batch is shuffled (optional), augmented (optional: crop_flip), converted to float and normalised on
    the device, and laid out channels_last. The random state lives in one generator on the device, so that it
    can be saved in a checkpoint and restored (`state_dict` / `load_state_dict`).
    """

    def __init__(self, x, y, batch_size: int, mean, std, device, shuffle: bool = False,
                 augment: bool = False, pad: int = 4, seed: int = 0):
        self.x = x.to(device)
        self.y = y.to(device)
        self.batch_size, self.shuffle, self.augment, self.pad = batch_size, shuffle, augment, pad
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            images = self.x[index]
            if self.augment:
                images = crop_flip(images, self.pad, self.generator)
            yield self.normalise(images), self.y[index]

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


@dataclass
class Engine:
    """How the arithmetic runs on a device.

    On CUDA: channels_last, bf16 autocast where the GPU supports it (Ampere and newer), else fp16 autocast
    with a gradient scaler (a T4); optional torch.compile. On the CPU: plain fp32.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    compile: bool = False

    @classmethod
    def for_device(cls, device, compile: bool = False) -> "Engine":
        device = torch.device(device)
        amp = None
        if device.type == "cuda":
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            torch.backends.cudnn.benchmark = True  # fixed 32x32 shapes: let cuDNN pick its fastest kernels once
        return cls(device=device, amp_dtype=amp, compile=compile)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler that is active only for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move to the device in channels_last; returns the module to call (compiled when asked)."""
        model.to(self.device, memory_format=torch.channels_last)
        return torch.compile(model) if self.compile else model

    def optimizer(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                  nesterov: bool = False) -> torch.optim.SGD:
        """SGD, fused into one kernel on CUDA, multi-tensor (foreach) elsewhere."""
        fused = self.device.type == "cuda"
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov, fused=fused or None, foreach=None if fused else True)


def train_step(model, images, labels, optimizer, engine: Engine, scaler, label_smoothing: float = 0.0):
    """Forward in the engine's precision, backward (scaled for fp16), one optimizer step.
    Returns the loss and the logits, still on the device."""
    with engine.autocast():
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


def train_epoch(model, batches, optimizer, engine: Engine, scaler, scheduler=None,
                label_smoothing: float = 0.0, ema: "ModelEMA | None" = None) -> dict:
    """One pass over `batches`. Loss and correct counts accumulate on the device and are read once at the end,
    so the loop never waits for the GPU (no .item() per step)."""
    model.train()
    total_loss = torch.zeros((), device=engine.device)
    correct = torch.zeros((), device=engine.device, dtype=torch.long)
    seen = 0
    for images, labels in batches:
        loss, logits = train_step(model, images, labels, optimizer, engine, scaler, label_smoothing)
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        total_loss += loss.detach().float() * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
    return {"loss": total_loss.item() / seen, "acc": correct.item() / seen}


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
    initial weights. Buffers (BatchNorm running statistics) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float = 0.99, every: int = 5):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.every, self.steps = decay, every, 0

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
        torch._foreach_lerp_(ema_params, params, 1 - self.current_decay())
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
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


def fit(model: nn.Module, train: Batches, val: Batches | None, config: dict, engine: Engine,
        checkpoint: Path | None = None, checkpoint_seconds: float = 20.0, log_every: int = 10,
        on_epoch_end: Callable[[int], None] | None = None) -> tuple[nn.Module, list[dict], float]:
    """Train `model` for config["epochs"] epochs; returns (the model to evaluate, history, training seconds).

    config keys: epochs, lr, momentum, weight_decay, nesterov, schedule, warmup, label_smoothing, ema_decay.
    At the end of an epoch, when `checkpoint_seconds` have passed since the last one, a checkpoint is written
    (model, optimizer, schedule, scaler, EMA, data order, CPU random state and the history): a later call with
    the same path resumes after that epoch. (Saving ~40 MB after each of the 600 one-second epochs of a GPU
    run would cost about as much as ten epochs; after every epoch that takes 20 s or more it is free.)
    Prints one line for the first epoch, every `log_every` epochs and the last one.
    """
    module = engine.prepare(model)
    optimizer = engine.optimizer(model.parameters(), lr=config["lr"], momentum=config.get("momentum", 0.9),
                                 weight_decay=config.get("weight_decay", 0.0),
                                 nesterov=config.get("nesterov", False))
    scheduler = make_scheduler(optimizer, config.get("schedule", "constant"), config["epochs"], len(train),
                               config.get("warmup", 0.0))
    scaler = engine.scaler()
    ema = ModelEMA(model, config["ema_decay"]) if config.get("ema_decay") else None
    history: list[dict] = []
    seconds = 0.0
    if checkpoint is not None and checkpoint.exists():
        # on the CPU: random-generator states must stay CPU byte tensors; weights are copied to the device
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        train.load_state_dict(state["batches"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["cpu_rng"])
        history, seconds = state["history"], state["seconds"]
        print(f"resumed from {checkpoint} after epoch {len(history)}")
    last_save = time.perf_counter()
    for epoch in range(len(history) + 1, config["epochs"] + 1):
        start = time.perf_counter()
        stats = train_epoch(module, train, optimizer, engine, scaler, scheduler,
                            config.get("label_smoothing", 0.0), ema)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        seconds += time.perf_counter() - start
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": stats["loss"],
               "train_acc": stats["acc"], "seconds": seconds}
        if val is not None:
            scores = evaluate(ema.module if ema else module, val, engine)
            row.update(val_loss=scores["loss"], val_acc=scores["acc"])
        history.append(row)
        if epoch % log_every == 0 or epoch == config["epochs"] or epoch == 1:
            print(format_epoch(row))
        if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_seconds:
            last_save = time.perf_counter()
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                        "batches": train.state_dict(), "ema": ema.state_dict() if ema else None,
                        "cpu_rng": torch.get_rng_state(), "history": history, "seconds": seconds},
                       checkpoint)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    return (ema.module if ema else module), history, seconds


def format_epoch(row: dict) -> str:
    """One compact log line for an epoch."""
    text = (f"epoch {row['epoch']:3d}  lr {row['lr']:.4f}  train loss {row['train_loss']:.3f} "
            f"acc {row['train_acc']:.3f}")
    if "val_acc" in row:
        text += f"  val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}"
    return text + f"  {row['seconds']:6.1f} s"


# ---------------------------------------------------------------------------------------------------
# 6. Results store
# ---------------------------------------------------------------------------------------------------


def config_hash(config: dict) -> str:
    """A short stable digest of a configuration: a changed configuration is a different experiment."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ResultsStore:
    """Results on disk, one experiment per name:

        {root}/{name}.csv            per-epoch history
        {root}/{name}.json           summary: config and its hash, parameters, accuracies, device, versions, date
        {root}/{name}.pt             final weights (fp16 state dict), for the experiments that keep them
        {root}/summary.json          all summaries together
        {root}/checkpoints/{name}.pt per-epoch checkpoint while training (not committed)
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str, suffix: str) -> Path:
        return self.root / f"{name}{suffix}"

    def checkpoint(self, name: str) -> Path:
        return self.root / "checkpoints" / f"{name}.pt"

    def load(self, name: str) -> dict | None:
        path = self.path(name, ".json")
        return json.loads(path.read_text()) if path.exists() else None

    def is_complete(self, name: str, config: dict, needs_weights: bool = False) -> bool:
        """True when a finished result exists for exactly this configuration."""
        summary = self.load(name)
        return (summary is not None and summary["config_hash"] == config_hash(config)
                and summary["epochs_completed"] == config["epochs"]
                and self.path(name, ".csv").exists()
                and (not needs_weights or self.path(name, ".pt").exists()))

    def history(self, name: str):
        import pandas as pd

        return pd.read_csv(self.path(name, ".csv"))

    def save(self, name: str, summary: dict, history: list[dict]) -> None:
        import pandas as pd

        self.root.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(history).to_csv(self.path(name, ".csv"), index=False)
        self.path(name, ".json").write_text(json.dumps(summary, indent=2))
        self.write_index()

    def summaries(self) -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.root.glob("*.json"))
                if p.name != "summary.json"}

    def write_index(self) -> None:
        (self.root / "summary.json").write_text(json.dumps(self.summaries(), indent=2))


def save_weights(model: nn.Module, path: Path) -> None:
    """Save the state dict with floating tensors in fp16 (half the bytes; the accuracy is checked on reload)."""
    model = getattr(model, "_orig_mod", model)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load fp16 weights saved by `save_weights` into `model` (in the model's own dtype)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model


def run_experiment(name: str, config: dict, build_model: Callable[[], nn.Module], data: Data, engine: Engine,
                   store: ResultsStore, train_split: str = "train", keep_weights: bool = False,
                   tta: bool = False, evaluate_test: bool = True, checkpoint_seconds: float = 20.0,
                   on_epoch_end=None) -> dict:
    """Train and test one configuration, or serve it from the store when it is complete.

    Skips a model whose results are complete for the same config hash, resumes an interrupted one from its
    checkpoint, and retrains when the config changed. Evaluates on the validation split every epoch (when
    training on `train`, the 45k split) and, with `evaluate_test`, on the test split once, at the end, with
    the final-epoch weights. `tta` adds test-time augmentation to those final evaluations. With `keep_weights`
    the final weights are saved (fp16) and the final evaluations use them exactly as saved. Returns the summary.
    """
    if store.is_complete(name, config, needs_weights=keep_weights):
        summary = store.load(name)
        print(f"{name}: complete results found in {store.root} (config {summary['config_hash']}, "
              f"{summary['epochs_completed']} epochs); delete {store.path(name, '.json')} to retrain")
        return summary
    digest = config_hash(config)
    checkpoint = store.checkpoint(f"{name}-{digest}")
    set_seed(config["seed"])
    model = build_model()
    batch_size = config["batch_size"]
    train_x, train_y = getattr(data, train_split)
    train = Batches(train_x, train_y, batch_size, data.mean, data.std, engine.device, shuffle=True,
                    augment=True, pad=config.get("pad", 4), seed=config["seed"])
    val = Batches(*data.val, 1024, data.mean, data.std, engine.device) if train_split == "train" else None
    final, history, seconds = fit(model, train, val, config, engine, checkpoint, checkpoint_seconds,
                                  on_epoch_end=on_epoch_end)
    if keep_weights:  # evaluate the weights exactly as saved (fp16), so that a reload reproduces the number
        store.root.mkdir(parents=True, exist_ok=True)
        save_weights(final, store.path(name, ".pt"))
        load_weights(getattr(final, "_orig_mod", final), store.path(name, ".pt"))
    summary = {
        "name": name, "config": config, "config_hash": digest,
        "trainable_params": count_parameters(model), "epochs_completed": len(history),
        "train_images": len(train_x), "device": device_name(engine.device),
        "precision": str(engine.amp_dtype or torch.float32).replace("torch.", ""),
        "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": round(seconds, 2), "final_train_acc": history[-1]["train_acc"],
    }
    if val is not None:
        summary.update(best_val_acc=max(r["val_acc"] for r in history), final_val_acc=history[-1]["val_acc"])
        if tta:
            summary["final_val_acc_tta"] = evaluate(final, val, engine, tta=True)["acc"]
    if evaluate_test:
        scores = evaluate(final, Batches(*data.test, 1024, data.mean, data.std, engine.device), engine, tta=tta)
        summary.update(test_acc=scores["acc"], test_loss=scores["loss"], tta=tta)
        print(f"{name}: test acc {scores['acc']:.4f} after {seconds:.1f} s of training")
    store.save(name, summary, history)
    checkpoint.unlink(missing_ok=True)
    return summary


# ---------------------------------------------------------------------------------------------------
# 7. Plots and tables
# ---------------------------------------------------------------------------------------------------


def plot_pair(store: ResultsStore, names: tuple[str, str], labels: tuple[str, str], path: Path):
    """Validation accuracy and validation loss against epoch for two experiments, side by side; saved to path."""
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, label in zip(names, labels):
        h = store.history(name)
        ax_acc.plot(h["epoch"], h["val_acc"] * 100, label=label, marker="." if len(h) < 10 else None)
        ax_loss.plot(h["epoch"], h["val_loss"], label=label, marker="." if len(h) < 10 else None)
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="validation loss", title="Validation loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{labels[0]} vs {labels[1]}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return fig


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]."""
    pred = logits.argmax(1).cpu()
    return torch.bincount(labels.cpu() * classes + pred, minlength=classes * classes).view(classes, classes)


def plot_confusion(counts: torch.Tensor, path: Path, title: str):
    """The confusion matrix as a heat map with the counts written in; saved to path."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return fig


def results_table(summaries: dict[str, dict]):
    """One row per experiment: parameters, validation and test accuracy (%), training time."""
    import pandas as pd

    rows = []
    for name, s in summaries.items():
        rows.append({
            "model": name, "trainable params": f"{s['trainable_params']:,}",
            "epochs": s["epochs_completed"], "train images": s["train_images"],
            "best val acc (%)": round(100 * s["best_val_acc"], 2) if "best_val_acc" in s else None,
            "final val acc (%)": round(100 * s["final_val_acc"], 2) if "final_val_acc" in s else None,
            "test acc (%)": round(100 * s["test_acc"], 2),
            "train time (s)": round(s["train_seconds"], 1), "device": s["device"],
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


def final_model_line(summaries: dict[str, dict]) -> str | None:
    """'mean +- std over N seeds' of the final model's test accuracy, from its per-seed summaries."""
    seeds = [s for name, s in sorted(summaries.items()) if name.startswith("final seed")]
    if not seeds:
        return None
    accs = torch.tensor([100 * s["test_acc"] for s in seeds])
    std = accs.std().item() if len(accs) > 1 else 0.0
    views = ", test-time augmentation" if seeds[0].get("tta") else ""
    return (f"FastResNet, {seeds[0]['trainable_params']:,} parameters, {seeds[0]['config']['epochs']} epochs on "
            f"{seeds[0]['train_images']:,} images: test accuracy {accs.mean():.2f} +- {std:.2f}% over "
            f"{len(seeds)} seeds ({', '.join(f'{a:.2f}' for a in accs.tolist())}), final epoch{views}, "
            f"{sum(s['train_seconds'] for s in seeds) / len(seeds):.1f} s of training per seed on {seeds[0]['device']}")


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
        line = final_model_line(summaries)
        if line:
            parts.append(f"Going further: {line}.")
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
    files = sorted(Path(folder).glob("train_speed_*.md"))
    tables = [p.read_text().replace("# Training speed", "#### Training speed") for p in files]
    if all("cpu" in p.name for p in files):
        tables.append("**GPU figures: pending.** The benchmark has not run on a GPU yet; no GPU number is estimated.")
    return "\n\n".join(tables)


def update_readme(readme: str | Path = "README.md") -> None:
    """Regenerate the marked blocks of README.md (results, figures, benchmark) from the files on disk."""
    path = Path(readme)
    text = path.read_text()
    for key, body in (("results", readme_results()), ("figures", readme_figures()),
                      ("benchmark", readme_benchmarks())):
        start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
        head, rest = text.split(start)
        _, tail = rest.split(end)
        text = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] != ["readme"]:
        sys.exit("usage: python helpers.py readme    # regenerate README.md's results, figures and benchmark")
    update_readme()
