"""The engine: the machine a run trains on (device, versions, seeds), and how its arithmetic runs there (precision,
channels_last, SGD). `Engine.for_device(device)` picks the precision; nothing runs at import.
"""
from __future__ import annotations

import os
import platform
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn


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
