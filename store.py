"""The results store: every experiment's history, summary and weights on disk, written atomically.

    {root}/{name}.csv            per-epoch history
    {root}/{name}.json           summary: config and its hash, parameters, accuracies, device, versions, date
    {root}/{name}.pt             final weights (fp16 state dict), for the experiments that keep them
    {root}/summary.json          all summaries together
    {root}/checkpoints/{name}.pt checkpoint while training (not committed)

A file that cannot be read is moved aside (`.corrupt`) with a warning and treated as missing, so that its
experiment is trained again, never silently skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

# ---------------------------------------------------------------------------------------------------
# 1. Files
# ---------------------------------------------------------------------------------------------------


def config_hash(config: dict) -> str:
    """A short stable digest of a configuration: a changed configuration is a different experiment."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which is then renamed over it: a crash or a disconnect
    leaves the old file or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")  # same suffix: writers go by it
    try:
        write(tmp)
        os.replace(tmp, path)  # a rename is atomic
    finally:
        tmp.unlink(missing_ok=True)


def quarantine(path: Path, reason: str) -> None:
    """Move an unreadable file aside to `<name>.corrupt` (kept for inspection) with one warning."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    warnings.warn(f"{path}: {reason}; moved aside to {aside.name}", stacklevel=3)


def save_weights(model: nn.Module, path: Path) -> None:
    """Save the state dict with floating tensors in fp16 (half the bytes; the accuracy is checked on reload)."""
    model = getattr(model, "_orig_mod", model)  # the module behind torch.compile
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load fp16 weights saved by `save_weights` into `model` (in the model's own dtype)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model


# ---------------------------------------------------------------------------------------------------
# 2. The store
# ---------------------------------------------------------------------------------------------------


class ResultsStore:
    """Results on disk, one experiment per name (the layout is in this module's docstring)."""

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
