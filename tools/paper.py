"""Build the course report, `documentation/paper.pdf`: a four-page, two-column paper whose every number, table and
figure is generated from `results/` by the functions the notebook and README use; only the prose is typed.

Usage:   python3 tools/paper.py           regenerate documentation/paper/generated/ and build documentation/paper.pdf
         python3 tools/paper.py --check   regenerate and check the prose only (no LaTeX run)

It stops with one line when pdflatex or bibtex is missing, when the prose holds a typed number that should be a
macro, when a citation does not resolve, or when the paper runs past PAGES pages (then nothing is written).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]  # the project's modules, and README's generator beside this file

import helpers as H  # noqa: E402
from cifar10_resnet.experiments import (BASE_LABEL, FIRST_SWEEP, MODEL_PREFIX, SEED_PREFIX,  # noqa: E402
                                        SWEEP_PREFIX, TUNING)
from cifar10_resnet import figures  # noqa: E402
from cifar10_resnet import findings  # noqa: E402
from cifar10_resnet import report  # noqa: E402
from cifar10_resnet.store import ResultsStore  # noqa: E402
from update_readme import ORIGINAL_BAR  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------

PAPER = ROOT / "documentation" / "paper"   # paper.tex (the prose, by hand) and references.bib
GENERATED = PAPER / "generated"            # numbers.tex, the tables and the figures: written by this tool only
PDF = ROOT / "documentation" / "paper.pdf"
NOTEBOOK = ROOT / "mini_project.ipynb"     # its parameters (TARGET, REPOSITORY) and its networks
PAGES = 4                                  # the course's limit, references included
COLUMN = 3.3                               # inches: one column of the AAAI page (7.0 in, two columns 0.375 in apart)
BUDGET = H.BUDGET                          # trainable parameters: the course's limit
EXPERIMENT_RUNS = [f"{MODEL_PREFIX}{k}" for k in range(1, 7)]
# numbers the paper quotes from cited works (macro -> value, source): typed once, here, with their source
CITED = {
    "CitedResNetEighteen": ("93.02", "Liu (2017), kuangliu/pytorch-cifar README: ResNet18 test accuracy (%)"),
    "CitedPeer": ("96.04", "Thakur et al. (2023), arXiv 2306.12100, abstract: test accuracy (%) under 5M"),
    "CitedAirbench": ("96.05", "Jordan (2024), cifar10-airbench README: airbench96 mean test accuracy (%)"),
}
# the comparisons of Models 1-6, as the notebook's Analysis makes them: macro -> (question, run a, run b)
QUESTIONS = {
    "VerdictLrOne": ("learning rate, Option 1", "model 2", "model 1"),
    "VerdictLrTwo": ("learning rate, Option 2", "model 4", "model 3"),
    "VerdictCutLow": ("cut, low rate", "model 3", "model 1"),
    "VerdictCutHigh": ("cut, high rate", "model 4", "model 2"),
    "VerdictLtwo": ("L2 at a constant rate", "model 5", "model 4"),
    "VerdictCosine": ("cosine schedule", "model 6", "model 5"),
}
WORDS = ("One", "Two", "Three", "Four", "Five", "Six")  # macro names hold letters only: Model 6 -> ...Six
# names whose digits are part of the name, not a result: the only digits the prose may type
NAMED = re.compile(r"CIFAR-10|ResNet-(?:18|9)|airbench9[456]|Models?[ ~][1-6](?:(?:--|, | and )[1-6])*"
                   r"|Options?[ ~][12]|L2|python3")


def fail(message: str) -> None:
    """Stop with one line naming the cause and the fix."""
    raise SystemExit(f"tools/paper.py: {message}")


# ---------------------------------------------------------------------------------------------------
# The numbers, from results/ (each computed once, by the function the notebook or README uses)
# ---------------------------------------------------------------------------------------------------


class Runs:
    """What the paper reads from a results folder: the stored summaries, the six experiments' histories (their
    jitter), the final model's tested seeds, the sweep, the sizes of the splits, and the notebook's networks."""

    def __init__(self, results_dir: Path):
        self.store = ResultsStore(results_dir)
        self.summaries = self.store.summaries()
        missing = [n for n in [*EXPERIMENT_RUNS, TUNING] if n not in self.summaries]
        if missing:
            fail(f"{results_dir} lacks {', '.join(missing)}: run the notebook at full scale first")
        self.dynamics = report.training_dynamics(self.store, EXPERIMENT_RUNS)
        self.jitter = report.jitters(self.dynamics)
        self.seeds, _, _ = report.final_seeds(self.summaries, SEED_PREFIX)
        if not self.seeds:
            fail(f"{results_dir} holds no tested seed of the final model: run the notebook at full scale first")
        self.n_test = H.TEST_IMAGES
        # the validation split: the images the final model's seeds train on beyond the experiments' 45k
        self.n_val = self.seeds[0]["train_images"] - self.summaries[EXPERIMENT_RUNS[0]]["train_images"]
        self.sweep = report.sweep_runs(self.summaries, TUNING, SWEEP_PREFIX, BASE_LABEL)
        # every accuracy with its errors, as the notebook's summary figure draws them: Table 1 and Figure 2
        self.accuracies = report.accuracy_summary(self.summaries, EXPERIMENT_RUNS, self.jitter, self.n_val,
                                                  self.n_test, self.seeds)
        self.first = ResultsStore(Path(results_dir) / FIRST_SWEEP).summaries()
        self.results_dir = Path(results_dir)
        self.networks = H.notebook_networks(NOTEBOOK)  # its registry: arch -> network and label

    def compare(self, a: str, b: str) -> str:
        """The notebook's `compare`: final validation accuracies and their difference, jitter counted."""
        return report.compare_line(a, b, self.summaries, self.n_val, self.jitter)

    def chosen(self) -> str:
        """The sweep's chosen run: the one whose configuration, the seed aside, the final model's seeds share."""
        def recipe(config: dict) -> dict:
            return {k: v for k, v in config.items() if k != "seed"}
        return next(label for label, s in self.sweep.items() if recipe(s["config"]) == recipe(self.seeds[0]["config"]))


def networks(registry, final: dict) -> dict:
    """The untrained networks the paper counts, from the notebook's registry: arch -> network, for the reference,
    the two options and the final model (at its configuration `final`)."""
    configs = {arch: {"arch": arch} for arch in ("resnet18", "option1", "option2")} | {final["arch"]: final}
    return {arch: registry.build(config) for arch, config in configs.items()}


def numbers(runs: Runs, target: float) -> dict[str, str]:
    """Every number and verdict the prose states: macro name -> its text (plain; escaped when written)."""
    s, seeds = runs.summaries, runs.seeds
    final_config = seeds[0]["config"]
    built, final_arch = networks(runs.networks, final_config), final_config["arch"]
    params = {arch: H.count_parameters(model) for arch, model in built.items()}
    gflop = {arch: H.flops_per_image(model) / 1e9 for arch, model in built.items()}
    for run in [*(s[n] for n in EXPERIMENT_RUNS), seeds[0]]:  # the code counts what the runs stored
        if params[run["config"]["arch"]] != run["trainable_params"]:
            fail(f"{run['name']} stored {run['trainable_params']:,} parameters but the notebook's "
                 f"{run['config']['arch']} has {params[run['config']['arch']]:,}: the stored run is not this network")
    m6, spread = s["model 6"], report.final_spread(seeds, runs.n_test)
    chosen = runs.chosen()
    picked, drop = findings.winners_curse(runs.sweep[chosen], spread)
    gaps, change = runs.dynamics["gap (points)"], findings.gap_changes(runs.dynamics)
    six_row = runs.dynamics.loc["model 6"]
    values = {
        "Budget": f"{BUDGET:,}", "BudgetShort": f"{BUDGET / 1e6:g}M",
        "TrainImages": f"{s['model 1']['train_images']:,}", "ValImages": f"{runs.n_val:,}",
        "FullImages": f"{seeds[0]['train_images']:,}", "TestImages": f"{runs.n_test:,}",
        "Epochs": f"{s['model 1']['epochs_completed']}", "BatchSize": f"{s['model 1']['config']['batch_size']}",
        "Momentum": f"{s['model 1']['config']['momentum']}", "LowLR": f"{s['model 1']['config']['lr']}",
        "HighLR": f"{s['model 2']['config']['lr']}", "WeightDecay": f"{s['model 5']['config']['weight_decay']}",
        "Bar": f"{ORIGINAL_BAR:g}", "Target": f"{target:g}", "Noise": f"{H.NOISE:g}", "Last": f"{report.LAST}",
        "Card": ", ".join(report.cards(s)), "Runs": f"{len(s)}",
        "Precision": ", ".join(sorted({r.get("precision", "not recorded") for r in s.values()})),
        "ParamsResNet": f"{params['resnet18']:,}", "ParamsOptionOne": f"{params['option1']:,}",
        "ParamsOptionTwo": f"{params['option2']:,}", "ParamsFinal": f"{params[final_arch]:,}",
        "GflopResNet": f"{gflop['resnet18']:.2f}", "GflopOptionOne": f"{gflop['option1']:.2f}",
        "GflopOptionTwo": f"{gflop['option2']:.2f}", "GflopFinal": f"{gflop[final_arch]:.2f}",
        "ParamRatio": f"{params['option2'] / params['option1']:.2f}",
        "FlopRatio": f"{gflop['option2'] / gflop['option1']:.2f}",
        "SamplingSE": f"{100 * H.standard_error(m6['final_val_acc'], runs.n_val):.2f}",
        "ModelSixTest": f"{100 * m6['test_acc']:.2f}",
        "ModelSixTestSE": f"{100 * H.standard_error(m6['test_acc'], runs.n_test):.2f}",
        "ModelSixBar": findings.bar_side(m6["test_acc"], ORIGINAL_BAR / 100, runs.n_test),
        "TestCosine": report.difference_text(s["model 6"]["test_acc"], s["model 5"]["test_acc"], runs.n_test,
                                             (runs.jitter["model 6"], runs.jitter["model 5"])),
        "SlopeOne": report.slope_text(runs.store, "model 1", "model 2").split(": ", 1)[1],
        "SlopeTwo": report.slope_text(runs.store, "model 3", "model 4").split(": ", 1)[1],
        "GapLtwo": f"{change['L2']:+.2f}", "GapCosine": f"{change['schedule']:+.2f}",
        "GapLow": f"{gaps.min():.2f}", "GapHigh": f"{gaps.max():.2f}",
        "JitterFive": f"{runs.dynamics.loc['model 5', report.JITTER]:.2f}",
        "JitterSix": f"{six_row[report.JITTER]:.2f}",
        "SixBestGap": f"{six_row['best val acc (%)'] - six_row['val acc (%)']:.2f}",
        "FinalNetwork": runs.networks[final_arch].label,
        "FinalWidths": "-".join(map(str, final_config["widths"])),
        "FinalBlocks": "-".join(map(str, final_config["blocks"])), "FinalEpochs": f"{final_config['epochs']}",
        "FinalBatch": f"{final_config['batch_size']}", "FinalLR": f"{final_config['lr']}",
        "FinalWarmup": f"{final_config['warmup']:.0%}", "FinalCutout": f"{final_config['cutout']}",
        "FinalPad": f"{final_config['pad']}",
        "FinalSeeds": f"{spread.seeds}", "FinalMean": f"{spread.mean:.2f}", "FinalSeedStd": f"{spread.seed_std:.2f}",
        "FinalTestSE": f"{spread.test_se:.2f}", "FinalSE": f"{spread.error:.2f}",
        "FinalSeedAccs": ", ".join(f"{100 * r['test_acc']:.2f}" for r in seeds),
        "FinalTarget": report.target_line(seeds, target, runs.n_test).split(": ", 1)[1],
        "FinalSeconds": f"{sum(r['train_seconds'] for r in seeds) / len(seeds):.0f}",
        "Chosen": chosen, "Choice": report.choice_text(runs.sweep, chosen, runs.n_val),
        "PlainOrder": report.plain_order_text(runs.sweep, chosen, runs.n_val) or "no runner-up",
        "FinalGain": f"{spread.mean - 100 * m6['test_acc']:+.2f}", "SelectionVal": f"{picked:.2f}",
        "SelectionDrop": f"{drop:+.2f}",
        "SweepRuns": f"{len(runs.sweep)}",
    }
    tested_first, _, _ = report.final_seeds(runs.first, SEED_PREFIX)
    values["FirstSweep"] = (report.spread_text(report.final_spread(tested_first, runs.n_test)) if tested_first
                            else "not run")
    longer = findings.longer_run(runs.results_dir, runs.sweep[chosen], runs.n_val)
    if longer is not None:
        run, score, difference = longer
        values |= {"LongerVal": f"{score:.2f}", "LongerEpochs": f"{run['epochs_completed']}", "Longer": difference}
    for k, name in enumerate(EXPERIMENT_RUNS):
        values[f"Val{WORDS[k]}"] = report.accuracy_text(s[name], "final_val_acc")
        values[f"Test{WORDS[k]}"] = report.accuracy_text(s[name])
    for macro, (_, a, b) in QUESTIONS.items():
        values[macro] = runs.compare(a, b).split(": ", 1)[1]
    return values


def code_line(repository: str) -> str:
    """Page 1's line that links the code: the notebook's REPOSITORY, or one line saying that none is set."""
    if repository:
        return rf"Code: \url{{{repository}}}"
    return (r"Code: no public repository is named yet; set \texttt{REPOSITORY} in the notebook's parameters cell "
            r"and run \texttt{python3 tools/paper.py}.")


def macros(values: dict[str, str], repository: str) -> str:
    """numbers.tex: one \\newcommand per number, escaped for LaTeX; the cited numbers with their sources."""
    names = r" \and ".join(report.latex_escape(name) for name in report.authors())
    lines = ["% Generated by tools/paper.py from results/: do not edit (a rebuild overwrites it).",
             rf"\newcommand{{\Authors}}{{{names}}}", rf"\newcommand{{\CodeLine}}{{{code_line(repository)}}}"]
    lines += [rf"\newcommand{{\{name}}}{{{report.latex_escape(text)}}}" for name, text in values.items()]
    lines += [rf"\newcommand{{\{name}}}{{{value}}}  % {source}" for name, (value, source) in CITED.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Tables and figures
# ---------------------------------------------------------------------------------------------------


def tabular(align: str, header: list[str], rows: list[list[str]]) -> str:
    """A booktabs tabular: header and rows of plain text, escaped."""
    def line(cells):
        return " & ".join(report.latex_escape(c) for c in cells) + r" \\"
    return "\n".join([rf"\begin{{tabular}}{{{align}}}", r"\toprule", line(header), r"\midrule",
                      *map(line, rows), r"\bottomrule", r"\end{tabular}"]) + "\n"


def models_table(runs: Runs, values: dict[str, str]) -> str:
    """Models 1-6 and the final model: network, recipe, parameters, GFLOP per image, time, validation and test
    accuracy with one SE each (`report.accuracy_summary`: sampling and jitter; the final model both errors)."""
    summary = runs.accuracies
    cut = {arch: (runs.networks[arch].label, values[gflop])
           for arch, gflop in (("option1", "GflopOptionOne"), ("option2", "GflopOptionTwo"))}
    rows = []
    for k, name in enumerate(EXPERIMENT_RUNS):
        s, acc = runs.summaries[name], summary.loc[name]
        network, gflop = cut[s["config"]["arch"]]
        rows.append([f"{k + 1}", network, report.recipe_text(s["config"]).split(", ", 1)[1],
                     f"{s['trainable_params']:,}", gflop, f"{s['train_seconds']:.0f}",
                     f"{acc['val acc (%)']:.2f} ± {acc['val 2 SE'] / 2:.2f}",
                     f"{acc['test acc (%)']:.2f} ± {acc['test 2 SE'] / 2:.2f}"])
    final = summary.iloc[-1]
    seconds = sum(r["train_seconds"] for r in runs.seeds) / len(runs.seeds)
    rows.append(["final", values["FinalNetwork"], f"one-cycle, lr {values['FinalLR']}, weight decay "
                 f"{runs.seeds[0]['config']['weight_decay']}, {values['FinalEpochs']} epochs",
                 values["ParamsFinal"], values["GflopFinal"], f"{seconds:.0f}", "–",
                 f"{final['test acc (%)']:.2f} ± {final['test 2 SE'] / 2:.2f}"])
    return tabular("llp{6.2cm}rrrrr", ["model", "network", "recipe", "params", "GFLOP", "time (s)",
                                       "val. (%)", "test (%)"], rows)


def verdicts_table(runs: Runs) -> str:
    """The six comparisons of the Analysis: question, runs, validation accuracies, difference in SE, verdict."""
    rows = []
    for question, a, b in QUESTIONS.values():
        head, difference = runs.compare(a, b).split(": ", 1)
        points, rest = difference.split(" points = ")
        ses, verdict = rest.split(" SE, ")
        rows.append([question, f"{a[-1]} vs {b[-1]}", points, ses, verdict])
    return tabular("llrrl", ["question", "models", "diff.", "SE", "verdict"], rows)


def sweep_table(runs: Runs) -> str:
    """The sweep on validation (`report.sweep_table`): one run each, one view and test-time augmentation."""
    table = report.sweep_table(runs.sweep, runs.n_val)
    rows = [[label, row["val acc (%)"], row["val acc, TTA (%)"], row["change (points)"], row["verdict"]]
            for label, row in table.iterrows()]
    return tabular("p{2.9cm}rrrl", ["configuration", "1 view", "TTA", "change", "verdict"], rows)


def draw_figures(runs: Runs, folder: Path, target: float) -> None:
    """The two figures, vector PDFs one column wide: the six runs' validation curves, and every accuracy with two
    SE against the bar and the target (`figures.plot_summary`, the notebook's summary figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures.plot_curves(runs.store, EXPERIMENT_RUNS, [n.capitalize() for n in EXPERIMENT_RUNS],
                        folder / "curves.pdf", width=COLUMN)
    figures.plot_summary(runs.accuracies, folder / "summary.pdf",
                         {f"original bar, {ORIGINAL_BAR:g}%": ORIGINAL_BAR, f"target, {target:g}%": target},
                         width=COLUMN, title="")  # the caption says what it shows
    plt.close("all")


def generate(results_dir: Path = ROOT / "results", folder: Path = GENERATED) -> None:
    """Write numbers.tex, the three tables and the two figures into `folder` from `results_dir`."""
    runs, parameters = Runs(results_dir), H.notebook_namespace(NOTEBOOK, ("parameters",))
    values = numbers(runs, parameters["TARGET"])
    folder.mkdir(parents=True, exist_ok=True)
    files = {"numbers.tex": macros(values, parameters["REPOSITORY"]),
             "table-models.tex": models_table(runs, values), "table-verdicts.tex": verdicts_table(runs),
             "table-sweep.tex": sweep_table(runs)}
    for name, text in files.items():
        (folder / name).write_text(text)
    draw_figures(runs, folder, parameters["TARGET"])


# ---------------------------------------------------------------------------------------------------
# Checks and the LaTeX run
# ---------------------------------------------------------------------------------------------------


def typed_numbers(tex: str) -> list[str]:
    """The lines of the body of `tex` (between \\begin{document} and \\end{document}) that type a digit outside
    macros, citations, references, labels, file names and NAMED constants: each is a result that should be a macro."""
    body = tex.split(r"\begin{document}", 1)[-1].split(r"\end{document}", 1)[0]
    found = []
    for line in body.splitlines():
        text = re.sub(r"(?<!\\)%.*", "", line)  # comments
        text = re.sub(r"\\(?:cite[pt]?|ref|label|input|includegraphics|bibliography\w*|url)(?:\[[^]]*\])?\{[^}]*\}",
                      "", text)
        text = NAMED.sub("", text)
        if re.search(r"\d", text):
            found.append(line.strip())
    return found


def check_prose(tex_path: Path = PAPER / "paper.tex") -> None:
    """Stop when the prose types a number (`typed_numbers`)."""
    typed = typed_numbers(tex_path.read_text())
    if typed:
        fail(f"{tex_path.name} types a number outside a macro ({typed[0][:70]!r}): write it as a "
             "macro in numbers.tex (tools/paper.py) or cite its source")


def require_tools() -> None:
    """Stop when pdflatex or bibtex is missing, naming the Debian packages that bring them."""
    missing = [tool for tool in ("pdflatex", "bibtex") if shutil.which(tool) is None]
    if missing:
        fail(f"{' and '.join(missing)} not found: install them (Debian: apt-get install texlive-latex-recommended "
             "texlive-fonts-recommended) and run it again")


def build(out: Path = PDF, paper: Path = PAPER) -> Path:
    """pdflatex, bibtex, pdflatex twice in a scratch folder; checks the log (citations, page count) and only then
    copies the PDF to `out`. Dates are fixed (SOURCE_DATE_EPOCH), so the same sources make the same PDF."""
    require_tools()
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1", "BIBINPUTS": f"{paper}:"}
    with tempfile.TemporaryDirectory() as scratch:
        latex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={scratch}", "paper.tex"]
        # bibtex runs in the scratch folder: TeX's default safety setting refuses to write files elsewhere
        for command, folder in ((latex, paper), (["bibtex", "paper"], scratch), (latex, paper), (latex, paper)):
            done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                errors = [line for line in done.stdout.splitlines() if line.startswith(("!", "I couldn't", "Warning"))]
                fail(f"{command[0]} failed on {paper.name}/paper.tex: "
                     f"{(errors or done.stdout.splitlines()[-1:] or ['no message'])[0]}")
        log = Path(scratch, "paper.log").read_text(errors="replace")
        undefined = re.findall(r"Citation `([^']+)' .*undefined", log) + re.findall(r"Reference `([^']+)' .*undefined",
                                                                                     log)
        if undefined:
            fail(f"{undefined[0]} is cited or referenced but not defined: add it to references.bib or fix the label")
        pages = int(re.search(r"Output written on .*\((\d+) pages?", log).group(1))
        if pages > PAGES:
            fail(f"the paper runs to {pages} pages, over the course's {PAGES}: shorten the prose (nothing written)")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(scratch, "paper.pdf"), out)
    return out


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["--check"]):
        sys.exit(__doc__)
    if sys.argv[1:] == []:
        require_tools()
    generate()
    check_prose()
    if sys.argv[1:] == []:
        print(f"wrote {build().relative_to(ROOT)}")
