"""The training step: one SGD update of a batch, built from the run's `Recipe`, run eagerly or replayed as a CUDA graph.

- `training_loss` is the loss a step minimises. A loss-side option (label smoothing; mixup or another smoothing
  tomorrow) is a `Recipe` field read there and nowhere else.
- `EagerStep` runs it in the engine's precision, then the backward pass and the update.
- `make_step` chooses once per run between it and its CUDA graph (`cuda_graph.checked_capture`); the `Step` it
  returns calls the one chosen and adds each batch's loss and correct predictions to the epoch's sums on the device.
Nothing runs at import.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cuda_graph import CHECK_STEPS, CapturedStep, checked_capture
from .data import Batches
from .engine import Engine
from .recipe import Recipe

# ---------------------------------------------------------------------------------------------------
# 1. The loss
# ---------------------------------------------------------------------------------------------------


def training_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of `model` on a training batch under `recipe`: cross-entropy against targets smoothed by
    `recipe.label_smoothing`. It runs inside autocast and, on a GPU, inside a CUDA graph's capture."""
    logits = model(images)
    return F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing), logits


# ---------------------------------------------------------------------------------------------------
# 2. The step, eager; the epoch's sums
# ---------------------------------------------------------------------------------------------------


class EagerStep:
    """One SGD step on a batch, launched kernel by kernel: `step(images, labels)` runs `training_loss` in the
    engine's precision, the backward pass (scaled for fp16) and the update, and returns the loss and logits."""

    def __init__(self, model: nn.Module, optimizer, scaler, engine: Engine, recipe: Recipe):
        self.model, self.optimizer, self.scaler, self.engine, self.recipe = model, optimizer, scaler, engine, recipe

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.engine.autocast(cache=False):
            loss, logits = training_loss(self.model, images, labels, self.recipe)
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


# ---------------------------------------------------------------------------------------------------
# 3. The run's step: eager, or its CUDA graph
# ---------------------------------------------------------------------------------------------------


class Step:
    """The training step of a run (`make_step`): a full batch through `graph` when one was captured, any other
    eagerly; either way its loss and correct predictions are added to `sums`. `kind` is what the run records:
    "cuda-graph" or "eager (why)"."""

    def __init__(self, eager: EagerStep, sums: EpochSums, graph: CapturedStep | None, kind: str):
        self.eager, self.sums, self.graph, self.kind = eager, sums, graph, kind

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.graph is not None and len(labels) == self.graph.batch_size:
            self.graph(images, labels)  # the graph adds to the sums itself
        else:  # the last, smaller batch of an epoch, or every batch of an eager run
            self.sums.add(*self.eager(images, labels), labels)
        self.sums.seen += len(labels)


def make_step(model: nn.Module, optimizer, scaler, recipe: Recipe, engine: Engine, train: Batches | None) -> Step:
    """The run's training step under `recipe`, chosen once: a CUDA graph when `engine.graph_plan()` says so and its
    replays of `train`'s first batches match eager steps (`cuda_graph.checked_capture`), else eager. `train` None:
    nothing left to train, so nothing is captured (the kind is the plan's)."""
    eager, sums = EagerStep(model, optimizer, scaler, engine, recipe), EpochSums(engine.device)
    use_graph, kind = engine.graph_plan()
    if not (use_graph and train is not None):
        return Step(eager, sums, None, kind)
    # warm-up, then checks
    graph, kind = checked_capture(eager, sums, train.fixed_batches(2 * CHECK_STEPS))
    return Step(eager, sums, graph, kind)
