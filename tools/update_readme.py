"""Regenerate README.md's marked blocks (Colab badge, headline results) and the pages it links
(documentation/results.md, documentation/speed.md) from the files on disk.

Usage:   python3 tools/update_readme.py
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules sit at the repository root, one level above this file

import helpers as H  # noqa: E402
from cifar10_resnet.experiments import (BASE_LABEL, FIRST_SWEEP, MODEL_PREFIX, REFERENCE_RUN,  # noqa: E402
                                        ROUND3_PREFIX, SEED_PREFIX, SWEEP_PREFIX, TUNING)
from cifar10_resnet import report  # noqa: E402
from cifar10_resnet.store import ResultsStore, upgraded  # noqa: E402

ORIGINAL_BAR = 90.0                     # %: the original project's test-accuracy bar, which Model 6 answers
HEADLINE_FIGURE = "models 1-6 and final model accuracy.png"  # the figure README shows, from documentation/


@functools.cache
def network_labels() -> dict[str, str]:
    """arch -> the name the tables give its network, from the notebook's registry (`NETWORKS`, in its model cells)."""
    return H.notebook_networks(ROOT / "mini_project.ipynb").labels()


def sweep_text(summaries: dict[str, dict], intro: str, outcome: str, test_images: int = H.TEST_IMAGES) -> list[str]:
    """The paragraphs for a store's tuning sweep: `intro` and the sweep table (when it has tuning runs), then
    `outcome` and the final model's line (when it has tested seeds, each on `test_images` test images)."""
    runs = report.sweep_runs(summaries, TUNING, SWEEP_PREFIX, BASE_LABEL)
    trials = report.trial_runs(summaries, ROUND3_PREFIX)
    seeds = [s for name, s in summaries.items() if name.startswith(SEED_PREFIX)]
    line = report.final_model_line(seeds, network_labels(), test_images) if seeds else None
    return ([f"{intro}:\n\n{report.markdown_table(report.sweep_table(runs))}"] if runs else []) + (
        [f"Round 3, airbench's ingredients, each recipe with several seeds (validation only):\n\n"
         f"{report.markdown_table(report.trials_table(trials))}"] if trials else []) + (
        [f"{outcome}: {line}."] if line else [])


def exploration_table(path: str | Path) -> str | None:
    """The table of the exploration runs made outside the notebook (benchmarks/exploration.py), in training
    order, or None when there are none."""
    path = Path(path)
    if not path.exists():
        return None
    runs = {name: upgraded(s) for name, s in report.by_date(list(json.loads(path.read_text()).items()))}
    cards = ", ".join(report.cards(runs)) or "a card not recorded"
    return (f"Exploration outside the notebook (`benchmarks/exploration.py`, `{path.parent.as_posix()}/`, on "
            f"{cards}), trained on the 45k split and scored on validation only, to plan the next "
            f"sweep; change against its first row:\n\n{report.markdown_table(report.sweep_table(runs))}")


def headline(results_dir: str | Path = "results", notebook: str | Path = "mini_project.ipynb") -> str:
    """README's headline: Model 6 against the original project's bar and the final model against its target
    (the notebook's TARGET), from the full-scale store; 'pending' where a run has not landed."""
    summaries = ResultsStore(results_dir).summaries()
    target = H.notebook_namespace(notebook, ("parameters",))["TARGET"]
    six = summaries.get(f"{MODEL_PREFIX}6")
    seeds = [s for name, s in summaries.items() if name.startswith(SEED_PREFIX)]
    tested, _, _ = report.final_seeds({s["name"]: s for s in seeds}, "")
    rows = ["| model | what it answers | trainable params | test accuracy | bar or target |", "|---|---|---|---|---|"]
    if six and six.get("test_acc") is not None:
        met = "met" if 100 * six["test_acc"] > ORIGINAL_BAR else "not met"
        rows.append(f"| Model 6 ({report.recipe_text(six['config'])}, {six['epochs_completed']} epochs) | the "
                    f"original plan's final model | {six['trainable_params']:,} | {100 * six['test_acc']:.2f}% "
                    f"(1 run) | {ORIGINAL_BAR:.0f}%: {met} |")
    else:
        rows.append("| Model 6 | the original plan's final model | 4,977,226 | pending | |")
    if tested:
        first, spread = tested[0], report.final_spread(tested, H.TEST_IMAGES)
        status = report.target_line(tested, target, H.TEST_IMAGES).split(": ", 1)[1]
        rows.append(f"| Final model ({network_labels()[first['config']['arch']]}, "
                    f"{first['config']['epochs']} epochs) | this project's deliverable | "
                    f"{first['trainable_params']:,} | {report.spread_text(spread)} | {target:.0f}%: {status} |")
    else:
        rows.append(f"| Final model | this project's deliverable | | pending | {target:.0f}% |")
    used = report.cards(summaries)
    seconds = [s["train_seconds"] for s in tested]
    note = (f"All {len(summaries)} stored runs were trained on {', '.join(used) or 'a card not recorded'}; the final "
            f"model takes {sum(seconds) / len(seconds):.0f} s of training per seed there." if seconds else "")
    noise = (f"The seed std is the variation between training runs; the test-set SE is the sampling error of the "
             f"{H.TEST_IMAGES:,} test images that every seed shares, so more seeds do not shrink it; the distance to "
             f"the target is in standard errors of the mean, both counted. Model 6 is one run: its test-set SE "
             f"alone is ± {100 * H.standard_error(six['test_acc'], H.TEST_IMAGES):.2f} points."
             if tested and six and six.get("test_acc") is not None else "")
    return "\n".join(rows) + "".join("\n\n" + part for part in (noise, note) if part)


def readme_results(results_dir: str | Path = "results") -> str:
    """The results section: the six experiments, the sweeps and the final model, at full scale (quick mode's smoke
    tests are written where git ignores them: they are nobody's results)."""
    root = Path(results_dir)
    summaries = ResultsStore(root).summaries()
    six = {name: s for name, s in summaries.items() if name.startswith(MODEL_PREFIX) or name == REFERENCE_RUN}
    if not six:
        return f"**Full scale: pending.** No run of this kind has landed in `{root}/` yet."
    parts = [f"**Full scale** (`{root}/`).\n\n{report.markdown_table(report.results_table(six))}"]
    parts += sweep_text(summaries, "Going further, the recipe tuned on the 45k split and scored on validation only",
                        "Going further")
    first = root / FIRST_SWEEP
    parts += sweep_text(ResultsStore(first).summaries(),
                        f"The first sweep (`{first.as_posix()}/`; its weight average copied the live BatchNorm "
                        "statistics), trained on the 45k split and scored on validation only", "Its chosen recipe")
    parts += filter(None, [exploration_table(p / "summary.json") for p in sorted(root.glob("exploration*"))])
    return "\n\n".join(parts)


def readme_figures(doc_dir: str | Path = "documentation") -> str:
    """Markdown that shows the notebook's saved full-scale figures, linked from a page inside `doc_dir`."""
    root = Path(doc_dir)
    figures = sorted(root.glob("*.jpg")) + sorted(root.glob("*.png"))
    if not figures:
        return "No figures yet."
    return "\n\n".join(f"{p.stem}  \n![{p.stem}]({p.name.replace(' ', '%20')})" for p in figures)


def readme_benchmarks(folder: str | Path = "benchmarks/results") -> str:
    """The tables that benchmarks/train_speed.py wrote, one per device."""
    files = sorted(Path(folder).glob("train_speed_*.md"), key=lambda p: ("-compile" in p.stem, p.name))  # plain first
    tables = [p.read_text().replace("# Training speed", "#### Training speed") for p in files]
    if all("cpu" in p.name for p in files):
        tables.append("**GPU figures: pending.** The benchmark has not run on a GPU yet; no GPU number is estimated.")
    return "\n\n".join(tables)


def prediction_speed(folder: str | Path = "benchmarks/results") -> str:
    """The tables that benchmarks/predict_speed.py wrote, one per device."""
    files = sorted(Path(folder).glob("predict_speed_*.md"))
    if not files:
        return "**Pending.** `benchmarks/predict_speed.py` has not run yet; nothing is estimated."
    return "\n\n".join(p.read_text().replace("# Prediction speed", "#### Prediction speed").strip() for p in files)


def readme_peers(folder: str | Path = "benchmarks/results", results_dir: str | Path = "results") -> str:
    """The peer runs that benchmarks/exploration.py --peer wrote, one table per card, each followed by this
    project's final model on the same card (from the results store)."""
    files = sorted(Path(folder).glob("peers_*.md"))
    if not files:
        return ("**Peer comparison: pending.** airbench95 (`airbench` 0.1.8) has not run beside this project on a "
                "GPU yet (`python3 benchmarks/exploration.py --peer`); nothing is estimated.")
    seeds = [s for name, s in ResultsStore(results_dir).summaries().items() if name.startswith(SEED_PREFIX)]
    parts = []
    for path in files:
        card = json.loads(path.with_suffix(".json").read_text())["device"]
        ours = [s for s in seeds if s["device"] == card]
        line = report.final_model_line(ours, network_labels(), H.TEST_IMAGES) if ours else None
        parts.append(path.read_text().replace("# Peer on", "#### Peer on").strip() + "\n\n" +
                     (f"This project on the same card: {line}." if line else
                      "This project's final model has not run on this card."))
    return "\n\n".join(parts)


def colab_badge(notebook: str | Path = "mini_project.ipynb") -> str:
    """The *Open in Colab* badge, built from the GitHub URL the notebook's parameters cell names (`REPOSITORY`);
    while none is named, the line that says where to set it."""
    repository = H.notebook_namespace(notebook, ("parameters",)).get("REPOSITORY") or ""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", repository)
    if match is None:
        return ("*Open in Colab*: no badge yet, because no GitHub repository is named: set `REPOSITORY` in the "
                "notebook's parameters cell to this project's GitHub URL and run `python3 tools/update_readme.py`.")
    owner, name = match.groups()
    target = f"https://colab.research.google.com/github/{owner}/{name}/blob/main/{Path(notebook).name}"
    return f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def pages() -> dict[str, str]:
    """The documentation pages README links, by path: every results table; the speed tables, the peer, and the
    prediction speed."""
    return {
        "documentation/results.md": (
            "# Results\n\nEvery table on this page is generated from `results/` by `python3 tools/update_readme.py`; "
            "the notebook (`mini_project.ipynb`) shows the same runs with its analysis.\n\n"
            f"{readme_results()}\n\n## Figures\n\nSaved by the notebook's full-scale Run all into "
            f"`documentation/`.\n\n{readme_figures()}\n"),
        "documentation/speed.md": (
            "# Training speed and the peer\n\nGenerated from `benchmarks/results/` by `python3 "
            "tools/update_readme.py`. `benchmarks/train_speed.py` times the engine against a usual DataLoader "
            "loop; `benchmarks/exploration.py --peer` trains airbench95 (`airbench` 0.1.8; K. Jordan, arXiv "
            "2404.00498) on the same card.\n\n## Training speed\n\n"
            f"{readme_benchmarks()}\n\n## The peer: airbench95 on the same card\n\n{readme_peers()}\n\n"
            "## Prediction speed\n\n`benchmarks/predict_speed.py` times `tools/predict.py`'s path on the "
            f"stored models with weights.\n\n{prediction_speed()}\n"),
    }


def update_readme(readme: str | Path = "README.md") -> None:
    """Rewrite each `<!-- key:start -->` ... `<!-- key:end -->` block of README.md from the files on disk."""
    path = Path(readme)
    text = path.read_text()
    for key, body in (("colab", colab_badge()), ("headline", headline())):
        start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
        head, rest = text.split(start)
        _, tail = rest.split(end)
        text = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit(__doc__)
    os.chdir(ROOT)  # the blocks name their files relative to the repository root
    update_readme()
    for page, text in pages().items():
        Path(page).write_text(text)
