"""Text the notebook, the report and the logs print: counts, durations, lines wrapped to the PDF's page, epoch lines.

Plain Python: the report reads it without loading any training code.
"""
from __future__ import annotations

import textwrap

PAGE = 80  # characters: a line of code output on the PDF's page


def count_text(n: int, noun: str) -> str:
    """'1 seed', '3 seeds': a count with its noun, plural unless the count is one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def wrapped(text: str) -> str:
    """`text` in lines of at most PAGE characters, continued indented; words are never split."""
    return textwrap.fill(text, PAGE, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def log_line(epoch: int, epochs: int, log_every: int = 10) -> bool:
    """Whether an epoch gets a line in the log: the first, every `log_every`-th and the last; none when
    `log_every` is 0 (the run's start and result lines still print)."""
    return log_every > 0 and (epoch == 1 or epoch % log_every == 0 or epoch == epochs)


def format_epoch(row: dict) -> str:
    """One log line for an epoch, accuracies in % (at most 80 characters with the marker of a stored log)."""
    # the training loss and accuracy are measured under augmentation
    text = (f"epoch {row['epoch']:3d}  lr {row['lr']:.4f}  loss {row['train_loss']:.3f} "
            f"acc {100 * row['train_acc']:.1f}%")
    if "val_acc" in row:
        text += f"  val loss {row['val_loss']:.3f} acc {100 * row['val_acc']:.1f}%"
    return text + f"  {row['seconds']:.1f} s"
