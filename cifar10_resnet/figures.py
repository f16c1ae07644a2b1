"""The report's figures, drawn from the results store: sized for the PDF's page (FIGURE_WIDTH) with no text under
FONT points, each saved to the file the notebook names (atomically) and returned for the notebook to show.

The numbers they draw come from `report.py`; nothing here computes a finding of its own.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from .choices import standard_error
from .data import CLASSES
from .report import finite_history
from .store import ResultsStore, atomic_write
from .text import count_text

# ---------------------------------------------------------------------------------------------------
# 1. The page: size, style, saving
# ---------------------------------------------------------------------------------------------------


# inches: 0.9 of the PDF's 6.5 in line, where nbconvert shows a figure at its own size (a wider one is shrunk)
FIGURE_WIDTH = 5.8
FONT = 8  # points: the smallest text of a figure, and so of the PDF (never shrunk at FIGURE_WIDTH)
STYLE = {"font.size": FONT, "axes.titlesize": FONT + 1, "axes.labelsize": FONT, "xtick.labelsize": FONT,
         "ytick.labelsize": FONT, "legend.fontsize": FONT, "figure.titlesize": FONT + 1,
         "pdf.fonttype": 42}  # a vector figure embeds TrueType fonts: publishers refuse Type 3
ZOOM_FROM = 0.25  # of the epochs: accuracy and loss axes span the values after this share, where the runs differ


def styled(plot):
    """Run a plotting function under the report's STYLE, so that every text it makes is at least FONT points."""
    @functools.wraps(plot)
    def in_style(*args, **kwargs):
        import matplotlib.pyplot as plt

        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)
    return in_style


def figure(rows: int = 1, columns: int = 1, height: float = 2.2, width: float = FIGURE_WIDTH, **options):
    """A new figure `width` inches wide (the notebook's FIGURE_WIDTH unless the paper's column asks less); its tick
    labels keep FONT points when it is drawn outside STYLE (inline)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, columns, figsize=(width, height), **options)
    for ax in fig.axes:
        ax.tick_params(labelsize=FONT)
    return fig, axes


def save_figure(fig, path: str | Path, **options) -> None:
    """fig.savefig(path, **options), written atomically; a vector PDF carries no creation date, so that the same
    results always make the same file."""
    if Path(path).suffix == ".pdf":
        options = {**options, "metadata": {"CreationDate": None}}
    atomic_write(path, lambda tmp: fig.savefig(tmp, **options))


def above_legend(entries: int, columns: int, height: float) -> tuple[float, float, float, float]:
    """`tight_layout`'s rect for axes above a legend of `entries` in `columns` under them, in a figure `height`
    inches tall: 0.17 in kept free a row of the legend, and 0.1 in of margin."""
    return 0, (0.1 + 0.17 * math.ceil(entries / columns)) / height, 1, 1


def zoom(ax, series: list, epochs: int, pad: float = 0.08) -> None:
    """Set `ax`'s y range to the values of `series` (epoch, value) after ZOOM_FROM of the `epochs`, padded."""
    late = [v for x, values in series for e, v in zip(x, values) if e > ZOOM_FROM * epochs and math.isfinite(v)]
    if late:
        low, high = min(late), max(late)
        margin = pad * (high - low or 1.0)
        ax.set_ylim(low - margin, high + margin)


# ---------------------------------------------------------------------------------------------------
# 2. Curves from the stored histories
# ---------------------------------------------------------------------------------------------------


@styled
def plot_pair(store: ResultsStore, names: tuple[str, str], labels: tuple[str, str], path: Path):
    """Validation accuracy and loss against epoch for two experiments, side by side, saved to `path`; the y axes
    are zoomed on the epochs after ZOOM_FROM of the run (where the two differ); the legend sits under the panels;
    a diverged run is drawn to its last finite epoch, with a dotted line where it diverged."""
    fig, (ax_acc, ax_loss) = figure(1, 2, height=1.75)
    epochs, drawn = 1, {ax_acc: [], ax_loss: []}
    for name, label in zip(names, labels):
        finite, stop = finite_history(store, name)
        epochs = max(epochs, int(finite["epoch"].max()) if len(finite) else 1)
        if stop is not None:
            label = f"{label}, diverged at epoch {stop}"
        for ax, values in ((ax_acc, finite["val_acc"] * 100), (ax_loss, finite["val_loss"])):
            line, = ax.plot(finite["epoch"], values, label=label, marker="." if len(finite) < 10 else None)
            drawn[ax].append((finite["epoch"].tolist(), values.tolist()))
            if stop is not None:
                ax.axvline(stop, color=line.get_color(), linestyle=":")
    for ax, ylabel, title in ((ax_acc, "accuracy (%)", "Validation accuracy"),
                              (ax_loss, "cross-entropy loss", "Validation loss")):
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        zoom(ax, drawn[ax], epochs)
    # one legend for both panels, under them: it never covers a curve or an axis label
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="lower center", ncol=1, frameon=False)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    save_figure(fig, path, dpi=110)
    return fig


@styled
def plot_pairs(store: ResultsStore, pairs: list[tuple[str, str]], labels: dict[str, str], path: Path):
    """Validation accuracy against epoch for several pairs of experiments, a panel per pair side by side, zoomed as
    in `plot_pair` (a question's pairs on one line; `plot_pair` keeps each pair's accuracy and loss); saved."""
    fig, axes = figure(1, len(pairs), height=2.1, sharey=True, squeeze=False)
    for ax, names in zip(axes[0], pairs):
        drawn, epochs = [], 1
        for name in names:
            h, _ = finite_history(store, name)
            ax.plot(h["epoch"], 100 * h["val_acc"], label=labels[name])
            drawn.append((h["epoch"].tolist(), (100 * h["val_acc"]).tolist()))
            epochs = max(epochs, len(h))
        ax.set(xlabel="epoch", title=f"{names[0]} vs {names[1]}")
        ax.grid(alpha=0.3)
        zoom(ax, drawn, epochs)
    # one range for all panels: the zoom of each, joined
    low = min(ax.get_ylim()[0] for ax in axes[0])
    high = max(ax.get_ylim()[1] for ax in axes[0])
    axes[0, 0].set(ylim=(low, high), ylabel="validation accuracy (%)")
    # each panel's legend under the whole row, in the panel's column: clear of the curves and the axis labels
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    for ax in axes[0]:
        box = ax.get_position()
        fig.legend(*ax.get_legend_handles_labels(), loc="lower center", frameon=False,
                   bbox_to_anchor=(box.x0 + box.width / 2, 0.0))
    save_figure(fig, path, dpi=110)
    return fig


@styled
def plot_curves(store: ResultsStore, names: list[str], labels: list[str], path: Path, width: float = FIGURE_WIDTH):
    """Validation accuracy against epoch for several runs on one axis, zoomed as in `plot_pair`, the legend under
    it in three columns; saved to `path`, `width` inches wide (the paper's column)."""
    height = 2.3
    fig, ax = figure(height=height, width=width)
    drawn, epochs = [], 1
    for k, (name, label) in enumerate(zip(names, labels)):
        h, _ = finite_history(store, name)
        # a line style beside each color: the curves stay apart in a greyscale print
        ax.plot(h["epoch"], 100 * h["val_acc"], label=label, lw=1, linestyle=("-", "--", ":")[k % 3])
        drawn.append((h["epoch"].tolist(), (100 * h["val_acc"]).tolist()))
        epochs = max(epochs, len(h))
    zoom(ax, drawn, epochs)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=above_legend(len(names), 3, height))
    save_figure(fig, path, dpi=110)
    return fig


@styled
def plot_train_val(store: ResultsStore, names: list[str], labels: list[str], path: Path):
    """Training and validation accuracy against epoch, one panel per run (two rows), saved to `path`: the
    distance between the two curves is the run's overfitting."""
    columns = math.ceil(len(names) / 2)
    fig, axes = figure(2, columns, height=2.2, sharex=True, sharey=True, squeeze=False)
    for ax, name, label in zip(axes.flat, names, labels):
        h, _ = finite_history(store, name)
        ax.plot(h["epoch"], 100 * h["train_acc"], label="training (augmented images)")
        ax.plot(h["epoch"], 100 * h["val_acc"], label="validation")
        ax.set_title(label)
        # the first epochs (below 60%) would squeeze the gap that the panel is about
        ax.set_ylim(60, 100.5)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path, dpi=110)
    return fig


# ---------------------------------------------------------------------------------------------------
# 3. Predictions and images
# ---------------------------------------------------------------------------------------------------


@styled
def plot_confusion(counts, path: Path, title: str):
    """The confusion matrix (`evaluation.confusion_matrix`) as a heat map with the counts written in, each true
    class labelled with its accuracy (%, one decimal); saved."""
    fig, ax = figure(height=3.4)
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xticks(range(10), CLASSES, rotation=45, ha="right")
    shares = (100 * counts.diag() / counts.sum(1)).tolist()
    ax.set_yticks(range(10), [f"{name} {share:.1f}%" for name, share in zip(CLASSES, shares)])
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    top = counts.max().item()
    for i in range(10):
        for j in range(10):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=FONT,
                    color="white" if counts[i, j] > top / 2 else "black")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return fig


@styled
def plot_images(rows: list[list], titles: list[list[str]], height: float, title: str | None = None):
    """A grid of uint8 images (3 x H x W tensors), `rows` of them, each under its title (`titles`, row by row),
    the grid under `title` when given."""
    fig, axes = figure(len(rows), len(rows[0]), height=height, squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r, c].imshow(image.permute(1, 2, 0).numpy())
            axes[r, c].set_title(titles[r][c], fontsize=FONT)
            axes[r, c].axis("off")
    if title:
        fig.suptitle(title)
    # the top 0.25 in kept for the title
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, 1 - 0.25 / height if title else 1))
    return fig


# ---------------------------------------------------------------------------------------------------
# 4. Accuracies with their errors
# ---------------------------------------------------------------------------------------------------


def dot_plot(labels: list[str], series: list[tuple], xlabel: str, title: str, path: Path,
             lines: dict[str, float] | None = None, width: float = FIGURE_WIDTH):
    """Dots with horizontal error bars, one row per label (the first on top), the `series` (name, values, bars,
    marker) side by side in each row, with vertical `lines` (label -> x); the legend under the axes; saved."""
    height = 0.3 * len(labels) + 0.9
    fig, ax = figure(height=height, width=width)
    y = np.arange(len(labels))[::-1]
    for k, (name, values, bars, marker) in enumerate(series):
        offset = 0.15 * (1 - 2 * k / max(1, len(series) - 1)) if len(series) > 1 else 0.0
        ax.errorbar(values, y + offset, xerr=bars, fmt=marker, capsize=2, label=name)
    for (label, value), style in zip((lines or {}).items(), (":", "--", "-.")):
        ax.axvline(value, color="grey", linestyle=style, label=label)
    ax.set_yticks(y, labels)
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=above_legend(len(names), 2, height))
    save_figure(fig, path, dpi=110)
    return fig


@styled
def plot_summary(summary, path: Path, lines: dict[str, float], width: float = FIGURE_WIDTH,
                 title: str = "Final-epoch accuracy with two standard errors"):
    """`accuracy_summary` as dots with two-standard-error bars, validation and test side by side per run, with
    vertical `lines` (label -> accuracy in %: a bar, a target); saved to `path`, `width` inches wide."""
    series = [(f"{name} ± 2 SE", summary[f"{split} acc (%)"], summary[f"{split} 2 SE"], marker)
              for name, split, marker in (("validation", "val", "o"), ("test", "test", "s"))]
    return dot_plot(list(summary.index), series, "accuracy (%)", title, path, lines, width)


@styled
def plot_final(store: ResultsStore, seeds: list[str], tuning: str, path: Path):
    """The final model's training: each seed's training accuracy and loss (all 50k images, augmented) and, for the
    same recipe on the 45k split (`tuning`), its validation accuracy; saved to `path`."""
    fig, (ax_acc, ax_loss) = figure(1, 2, height=1.65)
    drawn, epochs = [], 1
    for name in seeds:
        h, _ = finite_history(store, name)
        epochs = max(epochs, len(h))
        ax_acc.plot(h["epoch"], 100 * h["train_acc"], color="C0", alpha=0.6, lw=1)
        ax_loss.plot(h["epoch"], h["train_loss"], color="C0", alpha=0.6, lw=1)
        drawn.append((h["epoch"].tolist(), (100 * h["train_acc"]).tolist()))
    ax_acc.lines[0].set_label(f"training, {count_text(len(seeds), 'seed')} (50k)")
    if store.load(tuning) is not None:  # one summary read, not the whole store
        h, _ = finite_history(store, tuning)
        ax_acc.plot(h["epoch"], 100 * h["val_acc"], color="C1", label="validation, same recipe on 45k")
        drawn.append((h["epoch"].tolist(), (100 * h["val_acc"]).tolist()))
    zoom(ax_acc, drawn, epochs)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Training loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    save_figure(fig, path, dpi=110)
    return fig


@styled
def plot_sweep(runs: dict[str, dict], images: int, chosen: str, path: Path):
    """The sweep's tuning runs: final validation accuracy without and with test-time augmentation, each with two
    standard errors of its `images` validation images; the chosen run's label marked; saved to `path`."""
    series = []
    for name, key, marker in (("one view", "final_val_acc", "o"), ("test-time augmentation", "final_val_acc_tta", "s")):
        accs = [runs[r].get(key) if runs[r].get(key) is not None else math.nan for r in runs]
        bars = [200 * standard_error(a, images) if math.isfinite(a) else math.nan for a in accs]
        series.append((f"{name} ± 2 SE", [100 * a for a in accs], bars, marker))
    labels = [f"{label} (chosen)" if label == chosen else label for label in runs]
    return dot_plot(labels, series, "validation accuracy (%)", "The sweep, on validation only", path)


def render_tables(tables: dict, path: Path):
    """Render pandas tables (title -> DataFrame) one under the other into an image; saved to path."""
    import matplotlib.pyplot as plt

    heights = [0.6 + 0.32 * (len(t) + 1) for t in tables.values()]
    fig, axes = plt.subplots(len(tables), 1, figsize=(11, sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (title, table) in zip(axes[:, 0], tables.items()):
        ax.axis("off")
        ax.set_title(title, loc="left", fontweight="bold")
        shown = ax.table(cellText=table.astype(str).values, colLabels=list(table.columns),
                         rowLabels=list(table.index), loc="center", cellLoc="center")
        shown.auto_set_font_size(False)
        shown.set_fontsize(9)
        shown.auto_set_column_width(list(range(len(table.columns))))
        shown.scale(1, 1.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=130, bbox_inches="tight")
    return fig
