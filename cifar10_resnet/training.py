"""Training one model: where the arithmetic runs, the step, the averages of the weights, checkpoints, and `fit`.

`fit(model, train, val, recipe, engine)` is the loop, on one screen: it builds the optimizer, the schedule, the
weight averages and the step (eager, or a checked CUDA graph, chosen once before the first epoch), resumes from a
checkpoint, and runs the epochs. Everything above it is one ingredient each: the engine (device, precision, SGD),
the step, evaluation, the averages, the schedule and its parameter groups, checkpoints. Nothing runs at import.
"""
from __future__ import annotations

import copy
import math
import os
import platform
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import choice
from .choices import is_diverged
from .cuda_graph import CHECK_STEPS, CapturedStep, checked_capture
from .data import Batches
from .evaluation import evaluate
from .networks import parameter_roles, unwrap
from .recipe import CHOICES, Recipe
from .store import atomic_write, quarantine
from .text import count_text, format_duration, format_epoch, log_line, wrapped


# ---------------------------------------------------------------------------------------------------
# 1. The machine: device, versions, seeds
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
# 2. Engine: where and in which precision the arithmetic runs
# ---------------------------------------------------------------------------------------------------


# PRECISION -> autocast dtype
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


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
    # momentum multiplies a constant gradient's step by 1 / (1 - m)
    examples = 1024 * (1 + 1 / (1 - momentum))
    # SGD's decay is applied times the learning rate
    return lr * batch_size / examples, weight_decay / lr


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
            # fixed 32x32 shapes: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
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
        # so that a schedule can change it between replays of a CUDA graph
        self.lr_on_device(optimizer)
        return optimizer

    def synchronize(self) -> None:
        """Wait for the kernels queued on a CUDA device (a no-op on the CPU), so that a timing includes them."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

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
        # with torch.compile too: its kernels are captured like eager ones
        return True, "cuda-graph"

    def step(self, model: nn.Module, optimizer, scaler, label_smoothing: float, train: Batches | None) -> "Step":
        """The run's training step, chosen once: a CUDA graph when `graph_plan` says so and its replays of
        `train`'s first batches match eager steps (`cuda_graph.checked_capture`), else eager. `train` None:
        nothing left to train, so nothing is captured (the kind is the plan's)."""
        eager, sums = TrainStep(model, optimizer, scaler, self, label_smoothing), EpochSums(self.device)
        use_graph, kind = self.graph_plan()
        if not (use_graph and train is not None):
            return Step(eager, sums, None, kind)
        # warm-up, then checks
        graph, kind = checked_capture(eager, sums, train.fixed_batches(2 * CHECK_STEPS))
        return Step(eager, sums, graph, kind)


# ---------------------------------------------------------------------------------------------------
# 3. The step: one SGD update of a batch, eager or replayed as a CUDA graph
# ---------------------------------------------------------------------------------------------------


class TrainStep:
    """One SGD step on a batch: `step(images, labels)` runs the forward pass in the engine's precision, the
    loss, the backward pass (scaled for fp16) and the update, and returns the loss and logits on the device."""

    def __init__(self, model, optimizer, scaler, engine: Engine, label_smoothing: float = 0.0):
        self.model, self.optimizer, self.scaler, self.engine = model, optimizer, scaler, engine
        self.label_smoothing = label_smoothing

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        with self.engine.autocast(cache=False):
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        # zeroed in place, never freed: a CUDA graph of this step keeps the gradients' addresses
        self.optimizer.zero_grad(set_to_none=False)
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
        """The epoch's mean training loss and accuracy (a fraction), as its history row names them."""
        return {"train_loss": self.loss.item() / self.seen, "train_acc": self.correct.item() / self.seen}


class Step:
    """The training step of a run (`Engine.step`): a full batch through `graph` when one was captured, any
    other eagerly; either way its loss and correct predictions are added to `sums`. `kind` is what the run
    records: "cuda-graph" or "eager (why)"."""

    def __init__(self, eager: TrainStep, sums: EpochSums, graph: CapturedStep | None, kind: str):
        self.eager, self.sums, self.graph, self.kind = eager, sums, graph, kind

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.graph is not None and len(labels) == self.graph.batch_size:
            self.graph(images, labels)  # the graph adds to the sums itself
        else:  # the last, smaller batch of an epoch, or every batch of an eager run
            self.sums.add(*self.eager(images, labels), labels)
        self.sums.seen += len(labels)


# ---------------------------------------------------------------------------------------------------
# 4. Averages of the weights: an exponential moving average, lookahead
# ---------------------------------------------------------------------------------------------------


class ModelEMA:
    """Exponential moving average of a model's weights, ema = d * ema + (1 - d) * weights, updated every `every`
    steps with d = min(decay, (1 + n) / (10 + n)) after n updates (a short run is not dominated by the start)."""

    def __init__(self, model: nn.Module, decay: float = 0.99, every: int = 5, buffers: str = "average"):
        choice(CHOICES["ema_buffers"])("buffers", buffers)
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
        model = unwrap(model)
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
        model = unwrap(model)
        return list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Called after every optimizer step; pulls on every `every`-th, and hands over the slow weights at the end."""
        self.steps += 1
        live = [t.detach() for t in self.tensors(model)]
        if self.steps % self.every == 0:
            torch._foreach_lerp_(self.slow, live, 1 - 0.95 ** 5 * (self.steps / self.total) ** 3)
            # in place: a CUDA graph keeps reading the same tensors
            torch._foreach_copy_(live, self.slow)
        # the run ends on the slow weights, as airbench's final update(decay=1.0)
        if self.steps == self.total:
            torch._foreach_copy_(live, self.slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        torch._foreach_copy_(self.slow, state["slow"])
        self.steps = state["steps"]


# ---------------------------------------------------------------------------------------------------
# 5. The schedule and the parameter groups it drives
# ---------------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, recipe: Recipe, steps_per_epoch: int) -> list[dict]:
    """The optimizer's parameter groups under `recipe`: one, unless it sets airbench's BatchNorm options or the
    network names parameters to treat apart (`networks.parameter_roles`: a whitening stem's filters, its bias)."""
    roles, scale = parameter_roles(model), recipe.bias_lr_scale
    if scale == 1 and not recipe.freeze_bn_scale and not roles:
        # every run before these options: one group, as it was
        return [{"params": list(model.parameters())}]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    scales, biases = [m.weight for m in norms], [m.bias for m in norms]
    frozen = roles.get("frozen", []) + (scales if recipe.freeze_bn_scale else [])
    stem_bias = roles.get("whitening bias", [])
    special = {id(p) for p in frozen + biases + stem_bias}
    bias_group = {"lr": recipe.lr * scale, "weight_decay": recipe.weight_decay / scale}
    groups = [  # the weights first: fit logs group 0's learning rate
        {"name": "weights", "params": [p for p in model.parameters() if id(p) not in special]},
        {"name": "BatchNorm biases", "params": biases, **bias_group},
        # lr 0, not requires_grad: a CUDA graph stays valid
        {"name": "frozen", "params": frozen, "lr": 0.0},
        # trained for its first epochs only: a learning rate of 0 afterwards (`make_scheduler`)
        {"name": "whitening bias", "params": stem_bias, "frozen_after": recipe.whiten_bias_epochs * steps_per_epoch},
    ]
    return [group for group in groups if group["params"]]


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
# 6. Checkpoints
# ---------------------------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> dict | None:
    """A checkpoint's contents, or None when there is none or it is unreadable (moved aside with a warning).
    Tensors and plain data only: a results folder shared through Drive or a fork cannot run code."""
    if not path.exists():
        return None
    try:
        # generator states stay CPU tensors
        return torch.load(path, map_location="cpu", weights_only=True)
    # cut short by a disconnect, damaged by a sync, anything else
    except Exception as error:  # noqa: BLE001
        quarantine(path, f"checkpoint unreadable ({type(error).__name__}); training starts afresh")
        return None


def write_checkpoint(path: Path, parts: dict, history: list[dict], seconds: float, step_kind: str,
                     precision: str) -> None:
    """Everything `resume` needs to continue after the last epoch of `history`, written atomically: the
    state of each of `parts` (model, optimizer, ..., None for a part the run has not), the CPU's random state."""
    saved = {name: part.state_dict() if part is not None else None for name, part in parts.items()}
    saved |= {"cpu_rng": torch.get_rng_state(), "history": history, "seconds": seconds, "step_kind": step_kind,
              "precision": precision}
    atomic_write(path, lambda target: torch.save(saved, target))


def load_parts(saved: dict, parts: dict, engine: "Engine") -> None:
    """Load each of `parts` from `saved` in place (a scaler saved empty, by a run without one, is left fresh)."""
    for name, part in parts.items():
        if part is not None and (name != "scaler" or saved[name]):
            part.load_state_dict(saved[name])
    engine.lr_on_device(parts["optimizer"])  # load_state_dict brings back a CPU tensor


def resume(checkpoint: Path | None, parts: dict, engine: "Engine") -> tuple[list[dict], float, str | None]:
    """(history, training seconds, step kind) of the run that `checkpoint` holds, its state loaded into `parts`;
    ([], 0.0, None) without one. A checkpoint that does not fit (another model, an older layout) is moved aside
    with a warning and `parts` are put back as they were. One of another precision resumes."""
    saved = read_checkpoint(checkpoint) if checkpoint is not None else None
    if saved is None:
        return [], 0.0, None
    fresh = {name: copy.deepcopy(part.state_dict()) if part is not None else None for name, part in parts.items()}
    try:
        load_parts(saved, parts, engine)
    except Exception as error:  # noqa: BLE001 - never stop a Run all over an old checkpoint
        quarantine(checkpoint, f"checkpoint does not fit this run ({type(error).__name__}); training starts afresh")
        load_parts(fresh, parts, engine)  # a failed load may have filled part of the model
        return [], 0.0, None
    torch.set_rng_state(saved["cpu_rng"])
    before, scaler = saved.get("precision", "a precision not recorded"), parts["scaler"]
    fresh_scaler = "; the gradient scaler starts fresh" if scaler.is_enabled() and not saved["scaler"] else ""
    changed = ("" if before == engine.precision
               else f" (written in {before}, continuing in {engine.precision}{fresh_scaler})")
    print(f"resumed from {checkpoint} after epoch {len(saved['history'])}{changed}")
    return saved["history"], saved["seconds"], saved.get("step_kind")


# ---------------------------------------------------------------------------------------------------
# 7. fit: the loop
# ---------------------------------------------------------------------------------------------------


def joined_kind(before: str | None, now: str, training: bool) -> str:
    """The step kind of a run that may have been resumed: `before` is what its checkpoint recorded, `now` this
    session's while `training`; a run resumed on another kind records both ("cuda-graph, then eager (...)")."""
    if before is None or before.split(", then ")[-1] == now:
        return before or now
    return f"{before}, then {now}" if training else before


@dataclass(frozen=True)
class Progress:
    """What a run prints and when it saves: `label` heads its log (None: silent), an epoch line every
    `log_every` epochs (`text.log_line`), a checkpoint at most every `checkpoint_seconds`, then `on_epoch_end`."""

    label: str | None = "training"
    log_every: int = 10
    # ~40 MB after each of a GPU run's 600 one-second epochs would cost ten epochs; after 20 s it is free
    checkpoint_seconds: float = 20.0
    on_epoch_end: Callable[[int], None] | None = None

    def start(self, epochs: int, images: int, engine: "Engine", kind: str) -> None:
        """The run's first line: what this session trains (nothing when `epochs` is 0), how and where."""
        if self.label is not None and epochs:
            print(wrapped(f"{self.label}: {count_text(epochs, 'epoch')} x {images:,} images, {engine.precision}, "
                          f"{kind}"))

    def epoch(self, row: dict, left: range, seconds: float) -> None:
        """Log the epoch `row` (of `left`, this session's epochs, which took `seconds`) when its turn comes, and
        after the first of this session the time left (its pace includes the validation)."""
        if log_line(row["epoch"], left.stop - 1, self.log_every):
            print(format_epoch(row))
        if self.label is not None and row["epoch"] == left.start < left.stop - 1:
            more = left.stop - 1 - row["epoch"]
            print(f"about {format_duration(more * seconds)} left ({count_text(more, 'more epoch')})")


class FitResult(NamedTuple):
    """What `fit` returns: the model to evaluate (the weight average when there is one), the per-epoch history,
    the training seconds, and the step kind ("cuda-graph" or "eager (why)"; both, in order, after a resume)."""

    model: nn.Module
    history: list[dict]
    seconds: float
    step_kind: str


def fit(model: nn.Module, train: Batches, val: Batches | None, recipe: Recipe, engine: Engine,
        checkpoint: Path | None = None, progress: Progress = Progress()) -> FitResult:
    """Train `model` for `recipe.epochs` epochs on `train`, scored on `val` after each (when given), resuming from
    `checkpoint` and writing it as `progress` says; a non-finite loss ends the run at that epoch."""
    module = engine.prepare(model)  # called (compiled when asked); `model` holds the weights
    optimizer = engine.optimizer(parameter_groups(model, recipe, len(train)), recipe.lr, recipe.momentum,
                                 recipe.weight_decay, recipe.nesterov)
    schedule = make_scheduler(optimizer, recipe.schedule, recipe.epochs, len(train), recipe.warmup,
                              recipe.lr_start, recipe.lr_end)
    ema = ModelEMA(model, recipe.ema_decay, buffers=recipe.ema_buffers) if recipe.ema_decay else None
    lookahead = Lookahead(model, recipe.lookahead, recipe.epochs * len(train)) if recipe.lookahead else None
    parts = {"model": model, "optimizer": optimizer, "scheduler": schedule, "scaler": engine.scaler(),
             "batches": train, "ema": ema, "lookahead": lookahead}
    history, seconds, resumed_kind = resume(checkpoint, parts, engine)
    left = range(len(history) + 1, recipe.epochs + 1)  # this session's epochs
    step = engine.step(module, optimizer, parts["scaler"], recipe.label_smoothing, train if left else None)
    progress.start(len(left), len(train.x), engine, step.kind)
    step_kind, saved_at = joined_kind(resumed_kind, step.kind, bool(left)), time.perf_counter()
    for epoch in left:
        start = time.perf_counter()
        module.train()
        step.sums.reset()
        for images, labels in train:
            step(images, labels)
            schedule.step()  # fills the lr tensors in place: a CUDA graph reads the new values
            for average in (lookahead, ema):  # outside the graph: copies in place
                if average is not None:
                    average.update(model)
        engine.synchronize()  # the epoch's time includes the kernels it queued
        seconds += time.perf_counter() - start
        row = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"]), **step.sums.read(), "seconds": seconds}
        if val is not None:
            scores = evaluate(ema.module if ema else module, val, engine)
            row.update(val_loss=scores["loss"], val_acc=scores["acc"])
        history.append(row)
        if is_diverged(row):
            print(f"{format_epoch(row)}\nDIVERGED: a loss is not finite; the run stops here")
            break
        progress.epoch(row, left, time.perf_counter() - start)
        if checkpoint is not None and time.perf_counter() - saved_at >= progress.checkpoint_seconds:
            write_checkpoint(checkpoint, parts, history, seconds, step_kind, engine.precision)
            saved_at = time.perf_counter()
        if progress.on_epoch_end is not None:
            progress.on_epoch_end(epoch)
    return FitResult(ema.module if ema else module, history, seconds, step_kind)
