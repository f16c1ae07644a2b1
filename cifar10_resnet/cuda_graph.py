"""A training step recorded once as a CUDA graph and replayed, trusted only after a check against eager steps.

Eager PyTorch launches the ~200 kernels of a step one by one from Python, a few microseconds each, which on a
fast GPU takes longer than the arithmetic of a batch of 128. A CUDA graph records the kernels once and replays
them with one launch. Everything they touch must then stay at fixed addresses: the input buffers (each batch is
copied in), the weights, the gradients, the momentum buffers, the learning rate (a device tensor the schedule
fills in place) and the epoch's running sums.

`checked_capture(step, sums, samples)` wraps any training step: a callable `step(images, labels) -> (loss,
logits)` with attributes `model` and `optimizer` that zeroes the gradients in place rather than freeing them
(see `step.EagerStep`), and running sums with `add(loss, logits, labels)` and `reset()`. It changes neither:
nothing here knows the model, the precision or the loss.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

# eager steps of warm-up before capture, then as many replays checked against eager steps
CHECK_STEPS = 3

# ---------------------------------------------------------------------------------------------------
# 1. The captured step
# ---------------------------------------------------------------------------------------------------


class CapturedStep:
    """`step` and `sums.add` on static input buffers, captured as a CUDA graph (`capture=False`: run eagerly on
    the same buffers, the CPU test of this path). Calling it with a full batch returns the loss tensor."""

    def __init__(self, step, sums, warmup: list[tuple[torch.Tensor, torch.Tensor]], capture: bool = True):
        self.step, self.sums = step, sums
        self.images = torch.empty_like(warmup[0][0])  # keeps the channels_last layout
        self.labels = torch.empty_like(warmup[0][1])
        self.batch_size = len(self.labels)
        self.graph = None
        if not capture:
            return
        device = self.images.device
        side = torch.cuda.Stream(device)  # PyTorch's whole-network recipe: warm up on a side stream
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            # cuDNN autotuning and the gradients' memory, outside the graph
            for images, labels in warmup:
                self.load(images, labels)
                self.body()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # the gradients made in the warm-up keep their addresses: zeroed in place
        with torch.cuda.graph(self.graph):
            self.loss = self.body()

    def load(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images.copy_(images)
        self.labels.copy_(labels)

    def body(self) -> torch.Tensor:
        """One step on the static buffers, added to the sums; the loss comes back detached."""
        loss, logits = self.step(self.images, self.labels)
        self.sums.add(loss, logits, self.labels)
        # detached: a captured autograd graph kept alive by its loss would pin the capture stream's gradient
        # accumulators, and every later eager backward would meet them on another stream (a warning and a sync)
        return loss.detach()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.load(images, labels)
        if self.graph is None:
            return self.body()
        self.graph.replay()
        return self.loss  # overwritten by the next replay


# ---------------------------------------------------------------------------------------------------
# 2. Trust but check: replayed steps against eager steps from the same state
# ---------------------------------------------------------------------------------------------------


def state_tensors(model, optimizer) -> list[torch.Tensor]:
    """Every tensor a training step changes: weights, buffers, momentum buffers, learning rates."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [s["momentum_buffer"] for s in optimizer.state.values() if s.get("momentum_buffer") is not None]
    return tensors + [g["lr"] for g in optimizer.param_groups if isinstance(g["lr"], torch.Tensor)]


def snapshot(model, optimizer) -> dict:
    """Copies of the training state, to be written back in place by `restore`."""
    return {id(t): (t, t.detach().clone()) for t in state_tensors(model, optimizer)}


@torch.no_grad()
def restore(model, optimizer, saved: dict) -> None:
    """Write a snapshot back into the same tensors (a CUDA graph keeps their addresses)."""
    for t in state_tensors(model, optimizer):
        if id(t) in saved:
            t.copy_(saved[id(t)][1])
        # a momentum buffer made after the snapshot: SGD's first step from zero equals one without it
        else:
            t.zero_()


def compare_steps(losses_a, losses_b, weights_a, weights_b, start) -> str | None:
    """None when two runs of the same steps agree within bf16's tolerance, else what differs."""
    for k, (a, b) in enumerate(zip(losses_a, losses_b)):
        a, b = float(a), float(b)
        if not (math.isfinite(a) and abs(a - b) <= 0.01 * abs(b)):  # each loss within 1%
            return f"loss of step {k + 1}: {a:.5f} vs {b:.5f}"
    update_a = torch.cat([(w - s).float().flatten() for w, s in zip(weights_a, start)])
    update_b = torch.cat([(w - s).float().flatten() for w, s in zip(weights_b, start)])
    cosine = F.cosine_similarity(update_a, update_b, 0).item()
    ratio = (update_a.norm() / update_b.norm()).item()
    # the weight updates point the same way, with a like size
    if not (cosine > 0.95 and abs(ratio - 1) <= 0.1):
        return f"weight updates: cosine {cosine:.4f}, norm ratio {ratio:.4f}"
    return None


def checked_capture(step, sums, samples: list[tuple[torch.Tensor, torch.Tensor]], warmup: int = CHECK_STEPS,
                    capture: bool = True) -> tuple[CapturedStep | None, str]:
    """(CapturedStep, "cuda-graph" or "static-buffers") when `warmup` replays of `samples` after `warmup` steps
    match eager steps, else (None, "eager (why)"). Either way the model, optimizer and sums are left as they were."""
    if len(samples) < 2 * warmup:
        return None, f"eager (fewer than {2 * warmup} full batches for the graph's warm-up and check)"
    model, optimizer = step.model, step.optimizer
    start = snapshot(model, optimizer)
    try:
        captured = CapturedStep(step, sums, samples[:warmup], capture)
        checked = snapshot(model, optimizer)
        params = list(model.parameters())
        before = [checked[id(p)][1] for p in params]
        replayed = [captured(x, y).detach().clone() for x, y in samples[warmup:]]
        after_replay = [p.detach().clone() for p in params]
        restore(model, optimizer, checked)
        eager = [step(x, y)[0].detach().clone() for x, y in samples[warmup:]]
        mismatch = compare_steps(replayed, eager, after_replay, [p.detach() for p in params], before)
    except Exception as error:  # noqa: BLE001 - any failure of capture means: train eagerly
        mismatch = f"capture failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    restore(model, optimizer, start)
    sums.reset()
    if mismatch:
        warnings.warn(f"CUDA graph step not used ({mismatch}); training eagerly", stacklevel=2)
        return None, f"eager ({mismatch})"
    return captured, "cuda-graph" if capture else "static-buffers"
