"""Input checked before anything trains: the notebook's parameters and the folders it writes to.

Every check here either returns the value as the project uses it or raises `BadInput`, one message that names
the parameter or the path, what was found and the fix. In a notebook that message is the whole error (no
traceback), so that a mistyped parameter reads as one line, not as a stack of library frames.
Nothing runs at import time.
"""
from __future__ import annotations

import errno
import numbers
import os
import shutil
from pathlib import Path
from typing import Callable

# ---------------------------------------------------------------------------------------------------
# 1. The error
# ---------------------------------------------------------------------------------------------------


class BadInput(ValueError):
    """Input that the project cannot use: the message names it, what was found and the fix."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a traceback: the message is the whole story
        return [f"{type(self).__name__}: {self}"]


class TorchTooOld(ImportError):
    """A torch older than the project runs on: the message names the version found and the one needed."""

    _render_traceback_ = BadInput._render_traceback_


# CPU fused SGD and schedules that fill a tensor lr in place (README: the versions tried)
TORCH_FLOOR = (2, 4)
TORCHVISION_FLOOR = "0.19"  # torchvision's release for torch 2.4


def require_torch(version: str, floor: tuple[int, int] = TORCH_FLOOR) -> None:
    """Refuse a torch `version` ("2.1.2+cu121") older than `floor` with one line naming both and the fix: older
    ones fail later, inside training (torch 2.2 has no fused SGD, 2.3 none on the CPU)."""
    found = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    if found < floor:
        needed = ".".join(map(str, floor))
        raise TorchTooOld(f"torch {version} found; this project needs torch >= {needed} (with torchvision >= "
                          f"{TORCHVISION_FLOOR}): pip install -U 'torch>={needed}' 'torchvision>={TORCHVISION_FLOOR}'")


def shown(value) -> str:
    """A value as the message shows it, with its type when that is the trouble: "'0.1' (type str)"."""
    return f"{value!r} (type {type(value).__name__})"


# ---------------------------------------------------------------------------------------------------
# 2. Values
# ---------------------------------------------------------------------------------------------------

# what papermill's -p and a hand-typed value may say
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


def flag(name: str, value, none: bool = False) -> bool | None:
    """True or False from a bool, 0 or 1 or one of their usual strings (TRUE, FALSE; any case); None too when
    `none` allows it (an automatic choice)."""
    if value is None and none:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE + (("none",) if none else ()):
        word = value.strip().lower()
        return None if word == "none" else word in TRUE
    allowed = "True or False" + (", or None" if none else "")
    raise BadInput(f"{name} must be {allowed} (or one of the strings {', '.join(TRUE + FALSE)}), "
                   f"not {shown(value)}")


SEED_LIMIT = 2**32 - 1  # the largest seed numpy's generators take (torch takes more): a run's seed stays under it


def whole(name: str, value, least: int = 1, most: int | None = None) -> int:
    """An integer of at least `least` and at most `most` (a bool is not one: True would train one epoch)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        kind = "a positive whole number" if least == 1 else f"a whole number of at least {least}"
        raise BadInput(f"{name} must be {kind}, not {shown(value)}")
    if most is not None and value > most:
        raise BadInput(f"{name} must be at most {most:,}, not {value:,}")
    return int(value)


def positive(name: str, value) -> float:
    """A number above 0 (a string is not one: "0.1" would be hashed and stored as text)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
        raise BadInput(f"{name} must be a positive number, not {shown(value)}")
    return value


def rate_pair(name: str, value) -> list[float]:
    """Two learning rates, the low one first: Models 1 and 3 take the first, 2 and 4 the second."""
    papermill = " (with papermill, give a list as YAML: -y 'LEARNING_RATES: [0.001, 0.01]')"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BadInput(f"{name} must be a list of two learning rates, low then high, such as [0.001, 0.01], not "
                       f"{shown(value)}" + (papermill if isinstance(value, str) else ""))
    low, high = (positive(f"{name}[{k}]", rate) for k, rate in enumerate(value))
    if not low < high:
        raise BadInput(f"{name} must hold the low rate first and the high rate second, not {list(value)}")
    return [low, high]


def one_of(options: tuple) -> Callable[[str, object], object]:
    """A check that admits exactly one of `options`."""
    def check(name: str, value):
        if value not in options:
            raise BadInput(f"{name} must be one of {', '.join(map(repr, options))}, not {shown(value)}")
        return value
    return check


def path_text(name: str, value) -> str:
    """A path, as a non-empty string."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise BadInput(f"{name} must be a folder or file path (a non-empty string), not {shown(value)}")
    return str(value)


def text(name: str, value) -> str:
    """A string, possibly empty."""
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string, not {shown(value)}")
    return value


def percentage(name: str, value) -> float:
    """An accuracy target in percent: above 0, at most 100."""
    if positive(name, value) > 100:
        raise BadInput(f"{name} is a test accuracy in percent: at most 100, not {shown(value)}")
    return value


# ---------------------------------------------------------------------------------------------------
# 3. The notebook's parameters
# ---------------------------------------------------------------------------------------------------

# each name of the notebook's parameters cell and its check (a test holds the two lists equal)
PARAMETERS: dict[str, Callable[[str, object], object]] = {
    "DATA_DIR": path_text, "RESULTS_DIR": path_text, "DOC_DIR": path_text,
    "EPOCHS": whole, "QUICK": lambda n, v: flag(n, v, none=True),
    "SEED": lambda n, v: whole(n, v, least=0, most=SEED_LIMIT),
    "REFERENCE": lambda n, v: flag(n, v, none=True), "LEARNING_RATES": rate_pair,
    "FINAL_EPOCHS": whole, "FINAL_SEEDS": whole, "SWEEP": flag, "TARGET": percentage, "COMPILE": flag,
    "GRAPHS": lambda n, v: flag(n, v, none=True), "PRECISION": one_of((None, "bf16", "fp16", "fp32")),
    "REPOSITORY": text, "DRIVE": flag,
    "PREDICT": lambda n, v: None if v is None else path_text(n, v),
}


def parameters(namespace: dict) -> None:
    """Check every parameter (PARAMETERS) in `namespace`, the notebook's globals, and write the values back as
    the notebook uses them ("false" -> False); the first bad one raises BadInput. Says what it read differently."""
    for name, check in PARAMETERS.items():
        if name not in namespace:
            raise BadInput(f"the parameter {name} is not set: run the parameters cell first (Run all does)")
        value = check(name, namespace[name])
        if type(value) is not type(namespace[name]) and isinstance(namespace[name], str):
            # papermill's -p QUICK false, for one
            print(f"{name}: {namespace[name]!r} read as {value!r}")
        namespace[name] = value
    last = namespace["SEED"] + namespace["FINAL_SEEDS"] - 1  # the final model's seeds are SEED, SEED + 1, ...
    if last > SEED_LIMIT:
        raise BadInput(f"SEED {namespace['SEED']:,} with FINAL_SEEDS {namespace['FINAL_SEEDS']}: the last seed, "
                       f"{last:,}, is over {SEED_LIMIT:,}, the largest numpy takes; choose a smaller SEED")


# ---------------------------------------------------------------------------------------------------
# 4. Folders the project writes to
# ---------------------------------------------------------------------------------------------------

# bytes: a ResNet-18 checkpoint (weights and momentum, ~90 MB) and its atomic copy
FREE_NEEDED = 256 * 2**20


def why_unwritable(error: OSError) -> str:
    """What an OSError from making or writing a folder means, in words."""
    reasons = {errno.EACCES: "it is not writable (permission denied)", errno.EPERM: "writing there is not permitted",
               errno.EROFS: "it is on a read-only file system", errno.ENOSPC: "its disk is full",
               errno.EDQUOT: "the disk quota is exhausted", errno.ENOTDIR: "a part of its path is a file",
               errno.EEXIST: "a part of its path is a file"}
    return reasons.get(error.errno, f"{type(error).__name__}: {error.strerror or error}")


def writable_folder(path: str | Path, name: str, need: int = FREE_NEEDED) -> Path:
    """`path` made (with its parents) and proven to take a file: a probe written, flushed and removed, and `need`
    bytes free on its disk. Otherwise BadInput naming the folder (as `name`, "RESULTS_DIR") and why."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{name} {str(path)!r} is a file, not a folder; move the file away or use another folder")
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())  # a full disk can answer only here
        probe.unlink()
        free = shutil.disk_usage(path).free
    except OSError as error:
        try:
            probe.unlink(missing_ok=True)  # a probe that a full disk refused half-way
        except OSError:
            pass
        raise BadInput(f"{name} {str(path)!r} cannot be written: {why_unwritable(error)}; nothing has been "
                       f"trained yet; use a folder this machine can write to") from None
    if free < need:
        raise BadInput(f"{name} {str(path)!r} has {free / 2**20:,.0f} MiB free on its disk; a run needs about "
                       f"{need / 2**20:,.0f} MiB (checkpoints, weights); free some space or use another folder")
    return path
