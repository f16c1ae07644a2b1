"""Averages of a model's weights taken while it trains: an exponential moving average (`ModelEMA`) and airbench's
lookahead (`Lookahead`). Each is updated after every optimizer step, outside the step (and its CUDA graph), and
saves its state with the run's checkpoint. Nothing runs at import.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .checks import one_of
from .networks import unwrap
from .recipe import OPTIONS


# ---------------------------------------------------------------------------------------------------
# 1. The exponential moving average, and lookahead
# ---------------------------------------------------------------------------------------------------


class ModelEMA:
    """Exponential moving average of a model's weights, ema = d * ema + (1 - d) * weights, updated every `every`
    steps with d = min(decay, (1 + n) / (10 + n)) after n updates (a short run is not dominated by the start)."""

    def __init__(self, model: nn.Module, decay: float = 0.99, every: int = 5, buffers: str = "average"):
        one_of(OPTIONS["ema_buffers"])("buffers", buffers)
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
