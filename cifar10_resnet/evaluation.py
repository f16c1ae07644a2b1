"""Evaluation: a model's logits for a split, with test-time views, and its scores (`evaluate`, `confusion_matrix`).

`predict` runs in eval mode in the engine's precision (`engine.Engine.autocast`); `evaluate_recipe` scores a
run as its recipe is tested. Nothing here trains, draws random numbers or runs at import.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import Batches
from .recipe import Recipe

# ---------------------------------------------------------------------------------------------------
# 1. Predictions and scores
# ---------------------------------------------------------------------------------------------------


# views -> each view's weight
TTA_WEIGHTS = {1: (1.0,), 4: (1 / 4,) * 4, 6: (1 / 4, 1 / 4) + (1 / 8,) * 4}


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
def predict(model, batches: Batches, engine, tta: bool = False, views: int = 4) -> torch.Tensor:
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
def evaluate(model, batches: Batches, engine, tta: bool = False, views: int = 4) -> dict:
    """Mean cross-entropy and accuracy (a fraction) over `batches`, in eval mode."""
    logits = predict(model, batches, engine, tta=tta, views=views)
    labels = batches.y
    return {"loss": F.cross_entropy(logits, labels).item(),
            "acc": (logits.argmax(1) == labels).float().mean().item()}


def evaluate_recipe(model, batches: Batches, engine, recipe: Recipe) -> dict:
    """`evaluate` as a run of `recipe` is tested: over its test-time views when `recipe.tta` (`tta_views`)."""
    return evaluate(model, batches, engine, tta=recipe.tta, views=recipe.tta_views)


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]."""
    pred = logits.argmax(1).cpu()
    return torch.bincount(labels.cpu() * classes + pred, minlength=classes * classes).view(classes, classes)
