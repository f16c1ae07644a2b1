"""The report's tables and summaries, computed from the results store (its figures: `figures.py`). Accuracies are
shown in percent.

The notebook passes the names it gives its experiments; nothing here knows them. Every table has an HTML form
(Jupyter, Colab, GitHub) and a LaTeX form (the PDF export: `report_tables`, `latex_table`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .choices import (NOISE, SeedSpread, difference_error, diverged_epoch, is_diverged, mean_and_std, seed_spread,
                      standard_error, validation_score, verdict)
from .data import CLASSES
from .networks import count_parameters
from .store import ResultsStore
from .text import count_text

# ---------------------------------------------------------------------------------------------------
# 1. Names and numbers as text
# ---------------------------------------------------------------------------------------------------

# the team's names, the one place they are set (documentation/, beside the reports they sign)
AUTHORS = Path(__file__).resolve().parents[1] / "documentation" / "AUTHORS"


def authors(path: str | Path = AUTHORS) -> list[str]:
    """The names under the report's title: the lines of `path` that are not blank or comments (#)."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [line for line in lines if line and not line.startswith("#")]
    if not names:
        raise ValueError(f"{path} names nobody: write one name per line (the project's name until you do)")
    return names



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


def recipe_text(config: dict) -> str:
    """'option2, lr 0.01, weight decay 0.0005, cosine' from an experiment's configuration."""
    parts = [str(config.get("arch", "?")), f"lr {config.get('lr', '?')}"]
    if config.get("weight_decay"):
        parts.append(f"weight decay {config['weight_decay']}")
    if config.get("schedule") not in (None, "constant"):
        parts.append(str(config["schedule"]))
    return ", ".join(parts)


def difference_text(a: float, b: float, images: int, jitter: tuple[float, float] = (0.0, 0.0)) -> str:
    """'+2.78 points = 2.6 SE, higher': accuracy `a` minus `b` (fractions, each on `images` images), in standard
    errors of that difference (with each run's epoch-to-epoch `jitter` when given: `choices.difference_error`), and
    `choices.verdict` (under choices.NOISE standard errors: within noise)."""
    errors = abs(a - b) / difference_error(a, b, images, jitter)
    # near the NOISE line one decimal could print a verdict beside a number that seems to contradict it
    shown = f"{errors:.2f}" if abs(errors - NOISE) < 0.05 else f"{errors:.1f}"
    return f"{100 * (a - b):+.2f} points = {shown} SE, {verdict(a, b, images, jitter)}"


def compare_line(a: str, b: str, summaries: dict[str, dict], images: int,
                 jitter: dict[str, float] | None = None) -> str:
    """'a 88.10 vs b 85.32: +2.78 points = 2.6 SE, higher': the final validation accuracies (%) of runs `a` and
    `b`, each measured on `images` validation images, and their difference (`difference_text`); `jitter` maps a run
    to its epoch-to-epoch standard deviation of validation accuracy (a fraction; `jitters`), counted as noise."""
    if summaries[a].get("diverged") or summaries[b].get("diverged"):
        text = {n: accuracy_text(summaries[n], "final_val_acc") for n in (a, b)}
        return f"{a} {text[a]} vs {b} {text[b]}: no verdict"
    va, vb = summaries[a]["final_val_acc"], summaries[b]["final_val_acc"]
    pair = (jitter[a], jitter[b]) if jitter else (0.0, 0.0)
    return f"{a} {100 * va:.2f} vs {b} {100 * vb:.2f}: {difference_text(va, vb, images, pair)}"


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
    """'95.12 ± 0.08' (%): the mean and standard deviation of an accuracy over a recipe's seeds, or why not."""
    if not runs:
        return "pending"
    texts = [accuracy_text(run, key) for run in runs]
    if any(run.get("diverged") or run.get(key) is None for run in runs):
        return "; ".join(sorted(set(t for t in texts if not t[0].isdigit())))
    mean, std = mean_and_std([100 * run[key] for run in runs])
    return f"{mean:.2f} ± {std:.2f}"


def trials_table(trials: dict[str, list[dict]], costs: dict[str, float] | None = None):
    """One row per recipe of a round with seeds (trained on the 45k split, scored on validation only): seeds,
    parameters, training GFLOP per image (`costs`), time per seed, validation accuracy mean ± std, plain and TTA."""
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


def spread_text(spread: SeedSpread) -> str:
    """'95.48% (3 seeds: seed std ± 0.04, test-set SE ± 0.21)': a tested recipe's mean and both of its errors."""
    return (f"{spread.mean:.2f}% ({count_text(spread.seeds, 'seed')}: seed std ± {spread.seed_std:.2f}, test-set SE "
            f"± {spread.test_se:.2f})")


def final_spread(seeds: list[dict], images: int) -> SeedSpread | None:
    """`choices.seed_spread` of the seeds' test accuracies (diverged seeds left out), each on the same `images` test
    images, or None when none was tested."""
    _, accs, _ = final_seeds({s["name"]: s for s in seeds}, "")
    return seed_spread(accs, images) if accs else None


def final_model_line(seeds: list[dict], networks: dict[str, str], images: int) -> str | None:
    """'Network, N parameters, ...: test accuracy mean (seed std, test-set SE) over N seeds (...)' from the seeds'
    summaries, tested on `images` test images; `networks` names each "arch" of a config."""
    arch = seeds[0]["config"]["arch"]
    network = networks.get(arch, arch)
    tested, accs, diverged = final_seeds({s["name"]: s for s in seeds}, "")
    if not tested:
        return f"{network}: {'; '.join(diverged)}" if diverged else None
    left_out = f"; left out: {'; '.join(diverged)}" if diverged else ""
    views = ", test-time augmentation" if tested[0].get("tta") else ""
    epochs = tested[0]["config"]["epochs"]
    return (f"{network}, {tested[0]['trainable_params']:,} parameters, {count_text(epochs, 'epoch')} on "
            f"{tested[0]['train_images']:,} images: test accuracy {spread_text(final_spread(tested, images))}, seeds "
            f"{', '.join(f'{a:.2f}' for a in accs)}, final epoch{views}, "
            f"{sum(s['train_seconds'] for s in tested) / len(tested):.1f} s of training per seed on "
            f"{tested[0]['device']}{left_out}")


def target_line(seeds: list[dict], target: float, images: int) -> str:
    """'95.48% mean test accuracy against the 96.00% target: missed by 0.52 points = 2.5 SE' (`target` in %): the
    distance in standard errors of the mean, seeds and the `images` test images both counted (`SeedSpread.error`)."""
    spread = final_spread(seeds, images)
    if spread is None:
        return f"no tested seed: the {target:.2f}% target is not measured"
    gap = spread.mean - target
    units = f" = {abs(gap) / spread.error:.1f} SE" if spread.error > 0 else ""
    met = f"met, by {gap:.2f} points{units}" if gap >= 0 else f"missed by {-gap:.2f} points{units}"
    return f"{spread.mean:.2f}% mean test accuracy against the {target:.2f}% target: {met}"


# ---------------------------------------------------------------------------------------------------
# 5. Analysis: what the stored histories and a model's predictions show
# ---------------------------------------------------------------------------------------------------

LAST = 20  # epochs: the window in which a run's late fluctuation and trend of validation accuracy are measured
JITTER = f"val acc std, last {LAST} (points)"  # training_dynamics' column: a single run's epoch-to-epoch noise
SLOPE = f"val acc slope, last {LAST} (points/10 epochs)"  # its column of the late trend (least squares)


def slope_per_10(epochs, values) -> float:
    """The least-squares slope of `values` against `epochs`, per 10 epochs."""
    return late_slope(epochs, values)[0]


def late_slope(epochs, values) -> tuple[float, float]:
    """The least-squares slope of `values` against `epochs` and its standard error (from the residuals), both per
    10 epochs; the error is NaN with fewer than three points."""
    x, y = np.asarray(epochs, float), np.asarray(values, float)
    slope, intercept = np.polyfit(x, y, 1)
    if len(x) < 3:
        return 10 * float(slope), math.nan
    residual = y - (slope * x + intercept)
    error = math.sqrt(float(residual @ residual) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    return 10 * float(slope), 10 * error


def slope_text(store: ResultsStore, a: str, b: str) -> str:
    """'model 1 minus model 2: +0.07 points per 10 epochs = 0.3 SE, within noise': the difference of the two runs'
    late trends of validation accuracy (`late_slope` over the LAST epochs), in standard errors of that difference."""
    trends = []
    for name in (a, b):
        h, _ = finite_history(store, name)
        trends.append(late_slope(h["epoch"].iloc[-LAST:], 100 * h["val_acc"].iloc[-LAST:]))
    (sa, ea), (sb, eb) = trends
    error = math.hypot(ea, eb)
    if not math.isfinite(error) or error == 0:
        return f"{a} minus {b}: {sa - sb:+.2f} points per 10 epochs, no error to judge it by"
    shown = abs(sa - sb) / error
    judged = "within noise" if shown < NOISE else "faster" if sa > sb else "slower"
    return f"{a} minus {b}: {sa - sb:+.2f} points per 10 epochs = {shown:.1f} SE, {judged}"


def training_dynamics(store: ResultsStore, names: list[str]):
    """One row per run (its stored history), unrounded (`dynamics_table` formats it): final training loss and
    accuracy, final and best validation accuracy (%), their train-validation gap, the JITTER and SLOPE of validation
    accuracy over the LAST epochs, and the epoch of the lowest validation loss."""
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
            "model": name, "train loss": float(last["train_loss"]), "train acc (%)": 100 * float(last["train_acc"]),
            "val acc (%)": 100 * float(last["val_acc"]),
            "gap (points)": 100 * float(last["train_acc"] - last["val_acc"]),
            "best val acc (%)": 100 * float(finite.loc[best, "val_acc"]), "best at epoch": int(finite.loc[best, "epoch"]),
            JITTER: 100 * float(finite["val_acc"].iloc[-LAST:].std()),
            SLOPE: slope_per_10(finite["epoch"].iloc[-LAST:], 100 * finite["val_acc"].iloc[-LAST:]),
            "min val loss at epoch": int(finite.loc[finite["val_loss"].idxmin(), "epoch"]),
            "final val loss": float(last["val_loss"]),
        })
    return pd.DataFrame(rows, columns=list(max(rows, key=len))).set_index("model")


def finite_history(store: ResultsStore, name: str):
    """A run's stored history up to its last finite epoch, and the epoch where it diverged (None if it did not)."""
    h = store.history(name)
    rows = h.to_dict("records")
    return h[[not is_diverged(row) for row in rows]], diverged_epoch(rows)


def accuracy_summary(summaries: dict[str, dict], names: list[str], jitter: dict[str, float], val_images: int,
                     test_images: int, seeds: list[dict] | None = None):
    """One row per run of `names`, then the final model (`seeds`, when tested): validation and test accuracy (%)
    and two standard errors (points) of each. A single run counts its images' sampling and its epoch-to-epoch
    `jitter`; the final model the SE of its seeds' mean (`choices.SeedSpread.error`)."""
    import pandas as pd

    rows = []
    for name in names:
        s = summaries[name]
        if s.get("diverged"):
            continue
        extra = jitter.get(name, 0.0)
        rows.append({"run": name, "val acc (%)": 100 * s["final_val_acc"],
                     "val 2 SE": 200 * math.hypot(standard_error(s["final_val_acc"], val_images), extra),
                     "test acc (%)": 100 * s["test_acc"],
                     "test 2 SE": 200 * math.hypot(standard_error(s["test_acc"], test_images), extra)})
    spread = final_spread(seeds, test_images) if seeds else None
    if spread is not None:
        rows.append({"run": f"final model ({count_text(spread.seeds, 'seed')})", "val acc (%)": math.nan,
                     "val 2 SE": math.nan, "test acc (%)": spread.mean, "test 2 SE": 2 * spread.error})
    return pd.DataFrame(rows).set_index("run")


def jitters(dynamics) -> dict[str, float]:
    """Each run's epoch-to-epoch standard deviation of validation accuracy (a fraction), from `training_dynamics`:
    the noise of a single run's final epoch beside the sampling of its validation images (`compare_line`); 0 where
    it cannot be measured (a run of one epoch, or one that diverged in its first)."""
    return {name: value / 100 if math.isfinite(value) else 0.0 for name, value in dynamics[JITTER].items()}


def dynamics_table(dynamics):
    """`training_dynamics` transposed for the page (a metric a row, a run a column), each row with one number
    format: losses 3 decimals, accuracies, points and slopes 2, epochs none."""
    def formatted(metric: str, value) -> str:
        if value != value:  # NaN: a run that diverged in its first epoch
            return ""
        decimals = 0 if "epoch" in metric and "/" not in metric else 3 if "loss" in metric else 2
        return f"{value:.{decimals}f}"

    table = dynamics.T.astype(object)
    return table.apply(lambda row: row.map(lambda v: formatted(row.name, v)), axis=1).rename_axis("from the history")


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


def recipe_table(recipes: dict[str, dict]):
    """A final recipe's ingredients, one column per recipe (label -> configuration): network, optimizer, schedule,
    L2, augmentation, weight averaging, test-time augmentation and epochs, as trained."""
    import pandas as pd

    def column(r: dict) -> dict:
        averaging = (f"EMA, decay {r['ema_decay']}, BatchNorm statistics {r.get('ema_buffers', 'average')}d"
                     if r.get("ema_decay") else "none")
        return {
            "network": f"widths {'-'.join(map(str, r['widths']))}, blocks {'-'.join(map(str, r['blocks']))}",
            "optimizer": f"SGD, {'Nesterov ' if r.get('nesterov') else ''}momentum {r['momentum']}, "
                         f"batch {r['batch_size']}",
            "learning rate": (f"one-cycle to {r['lr']} at {r['warmup']:.0%} of the steps, then to 0"
                              if r["schedule"] == "onecycle" else f"{r['schedule']}, {r['lr']}"),
            "L2 (weight decay)": f"{r['weight_decay']}",
            "augmentation": f"crop after {r['pad']}-pixel padding, flip, {r['cutout']}-pixel cutout",
            "weight averaging": averaging,
            "test-time augmentation": "4 views: image, mirror, both shifted 1 pixel" if r.get("tta") else "none",
            "epochs": f"{r['epochs']}",
        }

    return pd.DataFrame({label: column(r) for label, r in recipes.items()}).rename_axis("ingredient")


def runner_up(runs: dict[str, dict], chosen: str) -> str | None:
    """The best-scored run (`choices.validation_score`) other than `chosen`, or None when no other was scored."""
    scores = {label: validation_score(run).acc for label, run in runs.items()}
    others = [label for label in runs if label != chosen and math.isfinite(scores[label])]
    return max(others, key=lambda label: scores[label]) if others else None


def choice_text(runs: dict[str, dict], chosen: str, images: int) -> str:
    """What a choice on validation is worth: the chosen run's score (`choices.validation_score`) against the
    runner-up's, with `difference_text` over `images` validation images."""
    score = {label: validation_score(run).acc for label, run in runs.items()}
    head, second = f"{chosen} ({100 * score[chosen]:.2f}%)", runner_up(runs, chosen)
    if second is None:
        return f"{head}, the only run scored"
    return (f"{head} against the runner-up, {second} ({100 * score[second]:.2f}%): "
            f"{difference_text(score[chosen], score[second], images)}")


def plain_order_text(runs: dict[str, dict], chosen: str, images: int) -> str | None:
    """The same two runs as `choice_text` without test-time augmentation (final validation accuracy, one view),
    and whether their order holds or reverses; None without a runner-up."""
    second = runner_up(runs, chosen)
    if second is None:
        return None
    a, b = runs[chosen]["final_val_acc"], runs[second]["final_val_acc"]
    order = "the order holds" if a >= b else "the order reverses"
    return (f"without test-time augmentation, {chosen} {100 * a:.2f}% vs {second} {100 * b:.2f}%: "
            f"{difference_text(a, b, images)}; {order}")


# ---------------------------------------------------------------------------------------------------
# 6. The code that trains, on the page
# ---------------------------------------------------------------------------------------------------


class Listing:
    """The source of functions and classes, read from their modules when shown (so it never drifts from the
    code that ran): Markdown for Jupyter and GitHub, a line-wrapping Verbatim at 7.2 points for the PDF."""

    def __init__(self, *objects):
        import inspect

        self.parts = [(f"{obj.__module__}.{obj.__qualname__}", inspect.getsource(obj).rstrip()) for obj in objects]

    def __repr__(self) -> str:
        # the plain-text fallback names the listing; its code is in the Markdown and LaTeX forms
        lines = sum(len(source.splitlines()) for _, source in self.parts)
        return f"source of {', '.join(name for name, _ in self.parts)} ({lines} lines)"

    def _repr_markdown_(self) -> str:
        return "\n\n".join(f"`{name}`\n```python\n{source}\n```" for name, source in self.parts)

    def _repr_latex_(self) -> str:
        # 7.2 pt: a module's 120-character line fits the 6.5 in page (nbconvert's Verbatim wraps a longer one)
        return "\n".join(r"\begin{Verbatim}[fontsize=\fontsize{7.2}{7.7}\selectfont]" + f"\n# {name}\n{source}\n"
                         + r"\end{Verbatim}" for name, source in self.parts)
