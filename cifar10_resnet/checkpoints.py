"""Checkpoints: everything a run needs to continue after its last finished epoch, written atomically and read
back without running code; one that does not fit the run is set aside and the run starts afresh. Nothing runs
at import.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .engine import Engine
from .store import atomic_write, quarantine


# ---------------------------------------------------------------------------------------------------
# 1. Writing, reading, resuming
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


def load_parts(saved: dict, parts: dict, engine: Engine) -> None:
    """Load each of `parts` from `saved` in place (a scaler saved empty, by a run without one, is left fresh)."""
    for name, part in parts.items():
        if part is not None and (name != "scaler" or saved[name]):
            part.load_state_dict(saved[name])
    engine.lr_on_device(parts["optimizer"])  # load_state_dict brings back a CPU tensor


def resume(checkpoint: Path | None, parts: dict, engine: Engine) -> tuple[list[dict], float, str | None]:
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


def joined_kind(before: str | None, now: str, training: bool) -> str:
    """The step kind of a run that may have been resumed: `before` is what its checkpoint recorded, `now` this
    session's while `training`; a run resumed on another kind records both ("cuda-graph, then eager (...)")."""
    if before is None or before.split(", then ")[-1] == now:
        return before or now
    return f"{before}, then {now}" if training else before
