"""The results store: every experiment's history, summary and weights on disk, written atomically.

    {root}/{name}.csv            per-epoch history
    {root}/{name}.json           summary: config and its hash, parameters, accuracies, device, versions, date
    {root}/{name}.pt             final weights (fp16 state dict), for the experiments that keep them
    {root}/summary.json          all summaries together
    {root}/checkpoints/{name}.pt checkpoint while training (not committed)

A run is served only when it is whole: a summary with every field of its type (SUMMARY_FIELDS), a history
that agrees with it and, where it keeps them, weights that load into its architecture. A file that fails is moved
aside (`.corrupt`) with one warning and treated as missing, so that its run is trained again, never silently
skipped and never a bare exception. `ResultsStore.open` proves the folder writable before anything trains.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .checks import BadInput, writable_folder
from .networks import unwrap

# ---------------------------------------------------------------------------------------------------
# 1. Files
# ---------------------------------------------------------------------------------------------------


def config_hash(config: dict) -> str:
    """A short stable digest of a configuration: a changed configuration is a different experiment."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


FULL = 1 << 20  # bytes: a disk with less free than this after a failed write is full


class DiskFull(OSError):
    """A write that a full disk refused: the message says so, and that the earlier file is kept."""

    _render_traceback_ = BadInput._render_traceback_


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which is then renamed over it: a crash or a disconnect
    leaves the old file or none, never half of one; a full disk raises DiskFull, saying so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # same suffix: writers go by it
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)  # a rename is atomic
    # torch.save on a full disk says only "unexpected pos 128 vs 0": the disk is asked instead
    except (OSError, RuntimeError) as error:
        free = shutil.disk_usage(path.parent).free
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < FULL:
            raise DiskFull(errno.ENOSPC, f"{path} could not be written: its disk is full ({free:,} bytes free); the "
                                         f"file it would replace is untouched; free some space and run again") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def quarantine(path: Path, reason: str) -> None:
    """Move an unreadable file aside to `<name>.corrupt` (kept for inspection) with one warning; a file that
    another process moved first is left to it."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    # two Run alls found the same file: the first one set it aside and warned
    except FileNotFoundError:
        return
    warnings.warn(f"{path}: {reason}; moved aside to {aside.name}", stacklevel=3)


# `atomic_write`'s temporary files, by writer's pid
PARTIAL = re.compile(r"^\..+\.partial-(\d+)(\.[^.]*)?$")
# a temporary file lives for one write: one this old whose writer is gone is a leftover
STALE_SECONDS = 60


def process_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the temporary files of writes killed half-way (`atomic_write`): their process is gone and they
    are older than STALE_SECONDS (a results folder synced from another machine may be mid-write). Returns them."""
    removed = []
    for path in [*folder.glob(".*.partial-*"), *folder.glob("checkpoints/.*.partial-*")]:
        match = PARTIAL.match(path.name)
        if match is None or int(match[1]) == os.getpid() or process_alive(int(match[1])):
            continue
        try:
            if time.time() - path.stat().st_mtime >= STALE_SECONDS:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # removed by another process meanwhile
            pass
    return removed


def save_weights(model: nn.Module, path: Path) -> None:
    """Save the state dict with floating tensors in fp16 (half the bytes; the accuracy is checked on reload)."""
    model = unwrap(model)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load fp16 weights saved by `save_weights` into `model` (in the model's own dtype); weights of another
    architecture raise ValueError naming the tensors that differ."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(reference):
        found = set(state) if isinstance(state, dict) else set()
        missing, unexpected = sorted(set(reference) - found), sorted(found - set(reference))
        raise ValueError(f"{path} holds weights of another architecture: {len(missing)} of this model's "
                         f"{len(reference)} tensors missing {missing[:2]}, {len(unexpected)} unexpected "
                         f"{unexpected[:2]}")
    shapes = [k for k, v in state.items() if v.shape != reference[k].shape]
    if shapes:
        raise ValueError(f"{path} holds weights of another architecture: {len(shapes)} tensors of another shape, "
                         f"such as {shapes[0]} {tuple(state[shapes[0]].shape)} against "
                         f"{tuple(reference[shapes[0]].shape)}")
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{path} holds weights that are not finite numbers ({len(broken)} tensors, such as "
                         f"{broken[0]}): a damaged file or a run that diverged")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model


# ---------------------------------------------------------------------------------------------------
# 2. What a whole run holds
# ---------------------------------------------------------------------------------------------------

NUMBER, MAYBE = (int, float), (int, float, type(None))
SUMMARY_FIELDS = {  # every field a served summary is read for, and its types
    "name": (str,), "config": (dict,), "config_hash": (str,), "trainable_params": (int,),
    "epochs_completed": (int,), "train_images": (int,), "device": (str,), "precision": (str,), "step_kind": (str,),
    "torch": (str,), "date": (str,), "train_seconds": NUMBER, "final_train_acc": MAYBE, "diverged": (bool,),
    "diverged_epoch": (int, type(None)),
}
SCORES = {"best_val_acc": MAYBE, "final_val_acc": MAYBE, "final_val_acc_tta": MAYBE, "test_acc": MAYBE,
          "test_loss": MAYBE, "tta": (bool,), "normalisation": (dict,)}  # present when measured (or recorded)
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "seconds")
VALIDATION_COLUMNS = ("val_loss", "val_acc")  # in the history of every run that has a validation split
ACCURACIES = ("final_train_acc", "best_val_acc", "final_val_acc", "final_val_acc_tta", "test_acc")  # fractions
AMOUNTS = ("trainable_params", "epochs_completed", "train_images", "train_seconds", "test_loss")  # never negative
RENAMED = {"path": "step_kind"}  # summary keys stored under an older name: read under the new one


def upgraded(summary):
    """A stored summary with its keys as this code names them (RENAMED); its config, and so its hash, untouched."""
    if not isinstance(summary, dict):
        return summary
    return {RENAMED.get(key, key): value for key, value in summary.items()}


def summary_fault(summary) -> str | None:
    """What makes `summary` unfit to serve (a missing field, a field of the wrong type or outside its domain, a
    configuration that no longer hashes to its hash), or None."""
    if not isinstance(summary, dict):
        return f"not a summary (a JSON {type(summary).__name__})"
    for key, kinds in {**SUMMARY_FIELDS, **SCORES}.items():
        if key not in summary:
            if key in SUMMARY_FIELDS:
                return f"no {key!r}"
        elif not isinstance(summary[key], kinds) or (isinstance(summary[key], bool) and bool not in kinds):
            return f"{key!r} is {summary[key]!r}, not of type {' or '.join(k.__name__ for k in kinds)}"
    for key in ACCURACIES + AMOUNTS:
        value, low, high = summary.get(key), 0, 1 if key in ACCURACIES else math.inf
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            return f"{key!r} is {value!r}, outside [{low}, {high}]"
    fault = normalisation_fault(summary["normalisation"]) if "normalisation" in summary else None
    if fault is not None:
        return f"'normalisation' {fault}"
    if config_hash(summary["config"]) != summary["config_hash"]:
        return (f"its configuration hashes to {config_hash(summary['config'])}, not to its stored "
                f"{summary['config_hash']}: it was edited after the run")
    return None


def normalisation_fault(record: dict) -> str | None:
    """What makes a recorded normalisation unusable (`data.Normalisation.record`: three finite means and three
    positive finite standard deviations), or None."""
    for key, low in (("mean", -math.inf), ("std", 0.0)):
        values = record.get(key)
        if not (isinstance(values, list) and len(values) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and low < v < math.inf for v in values)):
            return f"has no three {'positive ' if low == 0 else ''}numbers as its {key!r}: {values!r}"
    return None


def history_fault(history, summary: dict) -> str | None:
    """Where a history disagrees with its summary (its columns, epochs, the last epoch's accuracies, the time) or
    holds an accuracy outside [0, 1], or None."""
    needed = VALIDATION_COLUMNS if any(key in summary for key in ("best_val_acc", "final_val_acc")) else ()
    missing = [column for column in needed if column not in history]
    if missing:
        return f"no {' or '.join(missing)} column, which a run with a validation split records"
    for column in ("train_acc", "val_acc"):
        values = history[column].dropna() if column in history else []
        if len(values) and not ((values >= 0) & (values <= 1)).all():
            return f"its {column} leaves [0, 1]"
    if len(history) != summary["epochs_completed"]:
        return f"{len(history)} epochs against the summary's {summary['epochs_completed']}"
    last = history.iloc[-1]
    pairs = [("train_acc", "final_train_acc", 1e-9), ("seconds", "train_seconds", 0.01)]
    if "val_acc" in history and summary.get("final_val_acc") is not None:
        pairs.append(("val_acc", "final_val_acc", 1e-9))
    for column, key, tolerance in pairs:
        if summary[key] is not None and not math.isclose(last[column], summary[key], abs_tol=tolerance):
            return f"the last epoch's {column} {last[column]!r} against the summary's {key} {summary[key]!r}"
    return None


# ---------------------------------------------------------------------------------------------------
# 3. The store
# ---------------------------------------------------------------------------------------------------


class ResultsStore:
    """Results on disk, one experiment per name (the layout is in this module's docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | Path, name: str = "RESULTS_DIR") -> "ResultsStore":
        """The store of a run that will write: `root` proven writable (`checks.writable_folder`, or BadInput
        naming it as `name`), and the temporary files of killed writes removed (`remove_stale_partials`)."""
        store = cls(writable_folder(root, name))
        remove_stale_partials(store.root)
        return store

    def path(self, name: str, suffix: str) -> Path:
        return self.root / f"{name}{suffix}"

    def checkpoint(self, name: str) -> Path:
        return self.root / "checkpoints" / f"{name}.pt"

    def load(self, name: str) -> dict | None:
        """The summary of `name`, or None when it is missing or unfit to serve (`summary_fault`)."""
        path = self.path(name, ".json")
        if not path.exists():
            return None
        try:
            summary = upgraded(json.loads(path.read_text()))
        except (ValueError, UnicodeDecodeError) as error:
            fault = f"unreadable ({type(error).__name__})"
        else:
            fault = summary_fault(summary)
            if fault is None:
                return summary
        quarantine(path, f"summary {fault}; the experiment will be retrained")
        return None

    def history(self, name: str, summary: dict | None = None):
        """The per-epoch history as a DataFrame, or None when it is missing, unreadable (cut short) or at odds with
        its summary (`history_fault`; `summary` when the caller has loaded it, else read here)."""
        import pandas as pd

        path = self.path(name, ".csv")
        if not path.exists():
            return None
        try:
            history = pd.read_csv(path)
            epochs = history["epoch"].tolist()
            if epochs != list(range(1, len(history) + 1)) or history[["lr", "seconds"]].isna().any().any():
                raise ValueError("incomplete rows")
            history[[c for c in (*HISTORY_COLUMNS, *VALIDATION_COLUMNS) if c in history]].astype(float)  # numbers
        # pandas' parser errors are ValueErrors
        except (ValueError, KeyError, UnicodeDecodeError) as error:
            quarantine(path, f"history unreadable ({type(error).__name__}); the experiment will be retrained")
            return None
        summary = summary if summary is not None else self.load(name)
        fault = history_fault(history, summary) if summary is not None else None
        if fault is not None:
            quarantine(path, f"history disagrees with its summary ({fault}); the experiment will be retrained")
            return None
        return history

    def complete(self, name: str, config: dict, build: Callable[[], nn.Module] | None = None):
        """(summary, history) when a whole finished (or diverged) result exists for exactly this configuration:
        its history agrees with its summary and, with `build`, its weights load into `build()`. None otherwise,
        with a part that fails set aside (`quarantine`)."""
        summary = self.load(name)
        if summary is None or summary["config_hash"] != config_hash(config):
            return None
        if summary["epochs_completed"] != config["epochs"] and not summary.get("diverged"):
            return None
        history = self.history(name, summary)  # checked against the summary
        if history is None:
            return None
        if build is not None and not summary["diverged"]:
            weights = self.path(name, ".pt")
            if not weights.exists():
                return None
            try:
                load_weights(build(), weights)
            # garbage, cut short, another architecture: retrain
            except Exception as error:  # noqa: BLE001
                quarantine(weights, f"weights cannot serve the run ({type(error).__name__}: "
                                    f"{str(error)[:160]}); the experiment will be retrained")
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
