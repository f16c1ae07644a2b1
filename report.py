"""The report's tables, figures and summaries, computed from the results store. Accuracies are shown in percent.

The notebook passes the names it gives its experiments; nothing here knows them. Every table has an HTML form
(Jupyter, Colab, GitHub) and a LaTeX form (the PDF export: `report_tables`, `latex_table`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from choices import difference_error, diverged_epoch, is_diverged, validation_score, verdict
from data import CLASSES
from networks import count_parameters
from store import ResultsStore, atomic_write
from text import count_text

# ---------------------------------------------------------------------------------------------------
# 1. Numbers as text
# ---------------------------------------------------------------------------------------------------


def accuracy_text(summary: dict | None, key: str = "test_acc") -> str:
    """An accuracy of a run's summary in % as tables show it: the number, 'diverged at epoch k', 'pending' (no
    run yet) or 'not measured'."""
    if summary is None:
        return "pending"
    if summary.get("diverged"):
        return f"diverged at epoch {summary.get('diverged_epoch', '?')}"
    if summary.get(key) is None:
        return "not measured"
    return f"{100 * summary[key]:.2f}"


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def recipe_text(config: dict) -> str:
    """'option2, lr 0.01, weight decay 0.0005, cosine' from an experiment's configuration."""
    parts = [str(config.get("arch", "?")), f"lr {config.get('lr', '?')}"]
    if config.get("weight_decay"):
        parts.append(f"weight decay {config['weight_decay']}")
    if config.get("schedule") not in (None, "constant"):
        parts.append(str(config["schedule"]))
    return ", ".join(parts)


def difference_text(a: float, b: float, images: int) -> str:
    """'+2.78 points = 2.6 SE, higher': accuracy `a` minus `b` (fractions, each on `images` images), in standard
    errors of that difference, and `choices.verdict` (under choices.NOISE standard errors: within noise)."""
    errors = (a - b) / difference_error(a, b, images)
    return f"{100 * (a - b):+.2f} points = {abs(errors):.1f} SE, {verdict(a, b, images)}"


def compare_line(a: str, b: str, summaries: dict[str, dict], images: int) -> str:
    """'a 88.10 vs b 85.32: +2.78 points = 2.6 SE, higher': the final validation accuracies (%) of runs `a` and
    `b`, each measured on `images` validation images, and their difference (`difference_text`)."""
    if summaries[a].get("diverged") or summaries[b].get("diverged"):
        text = {n: accuracy_text(summaries[n], "final_val_acc") for n in (a, b)}
        return f"{a} {text[a]} vs {b} {text[b]}: no verdict"
    va, vb = summaries[a]["final_val_acc"], summaries[b]["final_val_acc"]
    return f"{a} {100 * va:.2f} vs {b} {100 * vb:.2f}: {difference_text(va, vb, images)}"


def cards(summaries: dict[str, dict]) -> list[str]:
    """The cards (device names, e.g. "NVIDIA H200") that trained these runs, sorted."""
    return sorted({s["device"] for s in summaries.values() if s.get("device")})


def trained_on(summaries: dict[str, dict]):
    """The machines that trained these runs: one row per card, precision, step kind and torch, with the number
    of runs and the dates of the first and last (a table beside the machine that renders the report)."""
    import pandas as pd

    groups: dict[tuple, list[str]] = {}
    for s in summaries.values():
        key = (s.get("device", "not recorded"), s.get("precision", "not recorded"),
               s.get("step_kind", "not recorded"), s.get("torch", "not recorded"))
        groups.setdefault(key, []).append(s.get("date", "")[:10])
    rows = [{"card": card, "precision": precision, "training step": step, "torch": torch, "runs": len(dates),
             "dates": " to ".join(sorted({min(dates), max(dates)}))}
            for (card, precision, step, torch), dates in groups.items()]
    return pd.DataFrame(rows, columns=["card", "precision", "training step", "torch", "runs", "dates"]).set_index(
        "card")


# ---------------------------------------------------------------------------------------------------
# 2. Tables
# ---------------------------------------------------------------------------------------------------


def results_table(summaries: dict[str, dict]):
    """One row per experiment: parameters, epochs, images, validation and test accuracy (%), training time, the
    kind of training step and the device."""
    import pandas as pd

    rows = []
    for name, s in summaries.items():
        rows.append({
            "model": name, "trainable params": f"{s['trainable_params']:,}",
            "epochs": s["epochs_completed"], "train images": s["train_images"],
            "best val acc (%)": accuracy_text(s, "best_val_acc"),
            "final val acc (%)": accuracy_text(s, "final_val_acc"),
            "test acc (%)": accuracy_text(s, "test_acc"),
            "train time (s)": round(s["train_seconds"], 1),
            "training step": s.get("step_kind", "not recorded"), "device": s["device"],
        })
    return pd.DataFrame(rows).set_index("model")


def sweep_table(runs: dict[str, dict], images: int | None = None):
    """One row per tuning run (trained on the 45k split, scored on validation only): parameters, epochs, time,
    validation accuracy without and with test-time augmentation, the better one's change against row one, and
    with `images` (validation images) that change's `choices.verdict`."""
    import pandas as pd

    base = validation_score(next(iter(runs.values()))).acc
    rows = []
    for label, s in runs.items():
        score = validation_score(s).acc
        finite = math.isfinite(score) and math.isfinite(base)
        rows.append({
            "configuration": label, "trainable params": f"{s['trainable_params']:,}",
            "epochs": s["epochs_completed"], "train time (s)": round(s["train_seconds"], 1),
            "val acc (%)": accuracy_text(s, "final_val_acc"),
            "val acc, TTA (%)": accuracy_text(s, "final_val_acc_tta"),
            "change (points)": f"{100 * (score - base):+.2f}" if finite else "",
            **({"verdict": verdict(score, base, images) if finite and s is not next(iter(runs.values())) else ""}
               if images else {}),
        })
    return pd.DataFrame(rows).set_index("configuration")


def seeds_text(runs: list[dict], key: str) -> str:
    """'95.12 +- 0.08' (%): the mean and standard deviation of an accuracy over a recipe's seeds, or why not."""
    if not runs:
        return "pending"
    texts = [accuracy_text(run, key) for run in runs]
    if any(run.get("diverged") or run.get(key) is None for run in runs):
        return "; ".join(sorted(set(t for t in texts if not t[0].isdigit())))
    mean, std = mean_and_std([100 * run[key] for run in runs])
    return f"{mean:.2f} +- {std:.2f}"


def trials_table(trials: dict[str, list[dict]], costs: dict[str, float] | None = None):
    """One row per recipe of a round with seeds (trained on the 45k split, scored on validation only): seeds,
    parameters, training GFLOP per image (`costs`), time per seed, validation accuracy mean +- std, plain and TTA."""
    import pandas as pd

    rows = []
    for label, runs in trials.items():
        rows.append({
            "recipe": label, "seeds": len(runs),
            "trainable params": f"{runs[0]['trainable_params']:,}" if runs else "",
            **({"training GFLOP per image": f"{costs[label]:,.0f}"} if costs else {}),
            "train time per seed (s)": f"{sum(r['train_seconds'] for r in runs) / len(runs):.1f}" if runs else "",
            "val acc (%)": seeds_text(runs, "final_val_acc"),
            "val acc, TTA (%)": seeds_text(runs, "final_val_acc_tta"),
        })
    return pd.DataFrame(rows).set_index("recipe")


def trial_runs(summaries: dict[str, dict], prefix: str) -> dict[str, list[dict]]:
    """A store's runs of a round with seeds, named `prefix` + label + " - seed " + k: label -> its seeds' summaries,
    in order of first training and of seed."""
    trials: dict[str, list[tuple[int, dict]]] = {}
    for name, s in by_date([(n, s) for n, s in summaries.items() if n.startswith(prefix) and " - seed " in n]):
        label, seed = name[len(prefix):].rsplit(" - seed ", 1)
        trials.setdefault(label, []).append((int(seed), s))
    return {label: [s for _, s in sorted(runs, key=lambda run: run[0])] for label, runs in trials.items()}


def by_date(named: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """(name, summary) pairs in training order: by the summaries' dates, keeping the given order among equal
    or missing dates."""
    return sorted(named, key=lambda item: item[1].get("date", ""))


def sweep_runs(summaries: dict[str, dict], base: str, prefix: str, base_label: str) -> dict[str, dict]:
    """The tuning runs of a store, labelled as the sweep table shows them: run `base` first (as `base_label`),
    then each `prefix` + <change> in training order, so that a combined round comes last."""
    runs = {base_label: summaries[base]} if base in summaries else {}
    tried = [(name, s) for name, s in summaries.items() if name.startswith(prefix)]
    runs.update({name[len(prefix):]: s for name, s in by_date(tried)})
    return runs


def markdown_table(table) -> str:
    """A pandas DataFrame as a GitHub Markdown table (index included), without extra packages."""
    columns = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for index, row in table.iterrows():
        cells = [str(index)] + ["" if v is None or v != v else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# 3. Tables in the PDF: LaTeX beside the HTML
# ---------------------------------------------------------------------------------------------------

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "×": r"$\times$"}
# characters: a longer text cell wraps in a LATEX_WRAP // 2 em wide column of the PDF's tables
LATEX_WRAP = 36


def latex_escape(text) -> str:
    """Plain text -> LaTeX source that prints it."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def is_number(text: str) -> bool:
    return re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?", text) is not None


def float_decimals(values) -> int:
    """The fewest decimals (at most 4) that show every value of a float column."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return next((d for d in range(4) if all(abs(v - round(v, d)) < 5e-5 for v in finite)), 4)


def table_cell(value, decimals: int | None = None) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:g}"
    return str(value)


def latex_table(table) -> str:
    """A DataFrame (or Series) as a booktabs LaTeX table: text escaped, each float column with the fewest
    decimals that show it, numbers right-aligned, long text wrapped (not shrunk), shrunk only if still too wide."""
    import pandas as pd

    frame = table.to_frame() if isinstance(table, pd.Series) else table
    columns = []
    for j in range(frame.shape[1]):
        column = frame.iloc[:, j]
        decimals = float_decimals(column) if pd.api.types.is_float_dtype(column.dtype) else None
        columns.append([table_cell(v, decimals) for v in column.tolist()])

    def text_align(cells) -> str:
        # a long label wraps: the table keeps a legible size
        wrap = max(map(len, cells), default=0) > LATEX_WRAP
        return rf">{{\raggedright\arraybackslash}}p{{{LATEX_WRAP // 2}em}}" if wrap else "l"

    align = text_align([str(i) for i in frame.index]) + "".join(
        "r" if all(is_number(c) for c in cells if c) and any(cells) else text_align(cells) for cells in columns)
    corner = "" if frame.index.name is None else frame.index.name

    def row(cells) -> str:
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    lines = [r"\begin{center}", r"\begin{adjustbox}{max width=\linewidth}", rf"\begin{{tabular}}{{{align}}}",
             r"\toprule", row([corner, *map(str, frame.columns)]), r"\midrule"]
    lines += [row([str(index), *(cells[i] for cells in columns)]) for i, index in enumerate(frame.index)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{adjustbox}", r"\end{center}"]
    return "\n".join(lines)


def report_tables() -> None:
    """From now on every DataFrame this IPython session displays carries a LaTeX table beside its HTML: the PDF
    export (nbconvert prefers text/latex) typesets a real table. Outside IPython it does nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        import pandas as pd

        shell.display_formatter.formatters["text/latex"].for_type(pd.DataFrame, latex_table)


# ---------------------------------------------------------------------------------------------------
# 4. The final model against its target
# ---------------------------------------------------------------------------------------------------


def final_seeds(summaries: dict[str, dict], prefix: str) -> tuple[list[dict], list[float], list[str]]:
    """The final model's seeds (the runs named `prefix` + k): the tested runs' summaries, their test accuracies
    (%), and a note for each seed that diverged (left out of the mean)."""
    runs = [s for name, s in sorted(summaries.items()) if name.startswith(prefix)]
    diverged = [f"{s['name']} diverged at epoch {s['diverged_epoch']}" for s in runs if s.get("diverged")]
    tested = [s for s in runs if not s.get("diverged") and s.get("test_acc") is not None]
    return tested, [100 * s["test_acc"] for s in tested], diverged


def final_model_line(seeds: list[dict], networks: dict[str, str]) -> str | None:
    """'Network, N parameters, ...: test accuracy mean +- std over N seeds (...)' from the seeds' summaries;
    `networks` names each "arch" of a config."""
    arch = seeds[0]["config"]["arch"]
    network = networks.get(arch, arch)
    tested, accs, diverged = final_seeds({s["name"]: s for s in seeds}, "")
    if not tested:
        return f"{network}: {'; '.join(diverged)}" if diverged else None
    left_out = f"; left out: {'; '.join(diverged)}" if diverged else ""
    mean, std = mean_and_std(accs)
    views = ", test-time augmentation" if tested[0].get("tta") else ""
    epochs = tested[0]["config"]["epochs"]
    return (f"{network}, {tested[0]['trainable_params']:,} parameters, {count_text(epochs, 'epoch')} on "
            f"{tested[0]['train_images']:,} images: test accuracy {mean:.2f} +- {std:.2f}% over "
            f"{len(tested)} seeds ({', '.join(f'{a:.2f}' for a in accs)}), final epoch{views}, "
            f"{sum(s['train_seconds'] for s in tested) / len(tested):.1f} s of training per seed on "
            f"{tested[0]['device']}{left_out}")


def target_line(seeds: list[dict], target: float) -> str:
    """'95.48% mean test accuracy against the 96.00% target: missed by 0.52 points' (`target` in %)."""
    tested, accs, _ = final_seeds({s["name"]: s for s in seeds}, "")
    if not tested:
        return f"no tested seed: the {target:.2f}% target is not measured"
    mean = mean_and_std(accs)[0]
    met = f"met, by {mean - target:.2f} points" if mean >= target else f"missed by {target - mean:.2f} points"
    return f"{mean:.2f}% mean test accuracy against the {target:.2f}% target: {met}"


# ---------------------------------------------------------------------------------------------------
# 5. Analysis: what the stored histories and a model's predictions show
# ---------------------------------------------------------------------------------------------------

LAST = 20  # epochs: the window in which a run's late fluctuation of validation accuracy is measured


def training_dynamics(store: ResultsStore, names: list[str]):
    """One row per run (its stored history): final training loss and accuracy, final and best validation
    accuracy, the gap between training and validation accuracy at the final epoch, the spread of validation
    accuracy over the LAST epochs, and the epoch of the lowest validation loss. Accuracies in %."""
    import pandas as pd

    rows = []
    for name in names:
        h = store.history(name)
        finite = h[[not is_diverged(row) for row in h.to_dict("records")]]
        if finite.empty:  # diverged in its first epoch: nothing to measure
            rows.append({"model": name})
            continue
        last, best = finite.iloc[-1], finite["val_acc"].idxmax()
        rows.append({
            "model": name, "train loss": round(float(last["train_loss"]), 3),
            "train acc (%)": round(100 * float(last["train_acc"]), 2),
            "val acc (%)": round(100 * float(last["val_acc"]), 2),
            "gap (points)": round(100 * float(last["train_acc"] - last["val_acc"]), 2),
            "best val acc (%)": round(100 * float(finite.loc[best, "val_acc"]), 2),
            "best at epoch": int(finite.loc[best, "epoch"]),
            f"val acc std, last {LAST} (points)": round(100 * float(finite["val_acc"].iloc[-LAST:].std()), 2),
            "min val loss at epoch": int(finite.loc[finite["val_loss"].idxmin(), "epoch"]),
            "final val loss": round(float(last["val_loss"]), 3),
        })
    return pd.DataFrame(rows, columns=list(max(rows, key=len))).set_index("model")


def confused_pairs(counts, top: int = 5):
    """The `top` largest off-diagonal cells of a confusion matrix (rows true, columns predicted): true class,
    predicted class, images, and that share of the true class's test images (%)."""
    import pandas as pd

    off = counts.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(top)
    rows = [{"true class": CLASSES[i // 10], "predicted as": CLASSES[i % 10], "images": int(v),
             "share of the true class (%)": round(100 * int(v) / int(counts[i // 10].sum()), 1)}
            for v, i in zip(values.tolist(), flat.tolist())]
    return pd.DataFrame(rows).set_index("true class")


def block_table(model, blocks: list[str], device="cpu"):
    """One row per named submodule of `model` (`blocks`, in order): its output shape for one 32x32 image and its
    trainable parameters; a last row sums them (the caller checks the total against torchsummary's)."""
    import pandas as pd
    import torch

    model = model.to(device).eval()
    shapes: dict[str, tuple] = {}

    def record(name):
        # a hook that returns something replaces the output
        def hook(_module, _inputs, out) -> None:
            shapes[name] = tuple(out.shape[1:])
        return hook

    hooks = [model.get_submodule(name).register_forward_hook(record(name)) for name in blocks]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32, device=device))
    for hook in hooks:
        hook.remove()
    counts = [count_parameters(model.get_submodule(name)) for name in blocks]
    rows = [{"block": f"{name} ({type(model.get_submodule(name)).__name__})",
             "output shape": " x ".join(map(str, shapes[name])), "trainable params": f"{n:,}"}
            for name, n in zip(blocks, counts)]
    rows.append({"block": "total", "output shape": "", "trainable params": f"{sum(counts):,}"})
    return pd.DataFrame(rows).set_index("block")


def choice_text(runs: dict[str, dict], chosen: str, images: int) -> str:
    """What a choice on validation is worth: the chosen run's score (`choices.validation_score`) against the
    runner-up's, with `difference_text` over `images` validation images."""
    scores = {label: validation_score(run).acc for label, run in runs.items()}
    others = [label for label in runs if label != chosen and math.isfinite(scores[label])]
    head = f"{chosen} ({100 * scores[chosen]:.2f}%)"
    if not others:
        return f"{head}, the only run scored"
    second = max(others, key=lambda label: scores[label])
    return (f"{head} against the runner-up, {second} ({100 * scores[second]:.2f}%): "
            f"{difference_text(scores[chosen], scores[second], images)}")


# ---------------------------------------------------------------------------------------------------
# 6. Figures
# ---------------------------------------------------------------------------------------------------


def save_figure(fig, path: str | Path, **options) -> None:
    """fig.savefig(path, **options), written atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, **options))


def plot_pair(store: ResultsStore, names: tuple[str, str], labels: tuple[str, str], path: Path):
    """Validation accuracy and loss against epoch for two experiments, side by side, saved to `path`; a diverged
    run is drawn to its last finite epoch, with a dotted line where it diverged."""
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(7.5, 2.3))  # fits an A4/letter page
    for name, label in zip(names, labels):
        h = store.history(name)
        rows = h.to_dict("records")
        finite = h[[not is_diverged(row) for row in rows]]
        stop = diverged_epoch(rows)
        if stop is not None:
            label = f"{label}, diverged at epoch {stop}"
        for ax, values in ((ax_acc, finite["val_acc"] * 100), (ax_loss, finite["val_loss"])):
            line, = ax.plot(finite["epoch"], values, label=label, marker="." if len(h) < 10 else None)
            if stop is not None:
                ax.axvline(stop, color=line.get_color(), linestyle=":")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Validation loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    # below the rising curves; one legend serves both panels
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{names[0]} vs {names[1]}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return fig


def plot_train_val(store: ResultsStore, names: list[str], labels: list[str], path: Path):
    """Training and validation accuracy against epoch, one panel per run (two rows), saved to `path`: the
    distance between the two curves is the run's overfitting."""
    import matplotlib.pyplot as plt

    columns = math.ceil(len(names) / 2)
    fig, axes = plt.subplots(2, columns, figsize=(7.5, 3.1), sharex=True, sharey=True, squeeze=False)
    for ax, name, label in zip(axes.flat, names, labels):
        h = store.history(name)
        h = h[[not is_diverged(row) for row in h.to_dict("records")]]
        ax.plot(h["epoch"], 100 * h["train_acc"], label="training (augmented)")
        ax.plot(h["epoch"], 100 * h["val_acc"], label="validation")
        ax.set_title(label, fontsize=8)
        # the first epochs (below 60%) would squeeze the gap that the panel is about
        ax.set_ylim(60, 100.5)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Training against validation accuracy", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return fig


def plot_confusion(counts, path: Path, title: str):
    """The confusion matrix (`evaluation.confusion_matrix`) as a heat map with the counts written in; saved."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6))  # fits an A4/letter page
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xticks(range(10), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(10), CLASSES)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    top = counts.max().item()
    for i in range(10):
        for j in range(10):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if counts[i, j] > top / 2 else "black")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return fig


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
