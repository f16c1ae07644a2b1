"""The course report (`documentation/paper.pdf`, built by tools/paper.py) stays true to `results/`: its generated
numbers, tables and figures regenerate identical, its prose types no result, it states the notebook's findings,
and it builds to at most four two-column pages whose citations resolve and whose first page links the code."""
import json
import re
import shutil
import subprocess

import matplotlib
import pytest

from conftest import ROOT, require
from tools import paper

GENERATED = ROOT / "documentation" / "paper" / "generated"
TEX = ROOT / "documentation" / "paper" / "paper.tex"
TEXT_FILES = ["numbers.tex", "table-models.tex", "table-verdicts.tex", "table-sweep.tex"]
FIGURES = ["curves.pdf", "summary.pdf"]


def results_copy(tmp_path):
    """results/ without its weights (the paper never reads them): a store to change without touching the real one."""
    copy = tmp_path / "results"
    shutil.copytree(ROOT / "results", copy, ignore=shutil.ignore_patterns("*.pt", "quick"))
    return copy


def macro_values(text: str) -> dict[str, str]:
    """numbers.tex's macros: name -> the text it prints (LaTeX escapes undone)."""
    values = dict(re.findall(r"^\\newcommand\{\\(\w+)\}\{(.*)\}(?:\s*%.*)?$", text, re.M))
    return {name: value.replace(r"\%", "%").replace(r"$\pm$", "±") for name, value in values.items()}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    paper.generate(ROOT / "results", out)
    return out


# --- generated from results/ ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEXT_FILES)
def test_generated_text_matches_the_stored_results(regenerated, name):
    assert (regenerated / name).read_text() == (GENERATED / name).read_text(), "run: python3 tools/paper.py"


@pytest.mark.parametrize("name", FIGURES)
def test_generated_figures_match_the_stored_results(regenerated, name):
    """Byte for byte where the matplotlib that drew the committed figure is the one installed (its version is in
    the PDF's Producer); with another version, the same words (ticks, labels, legend) at least."""
    committed, fresh = (GENERATED / name).read_bytes(), (regenerated / name).read_bytes()
    if f"Matplotlib pdf backend v{matplotlib.__version__}".encode() in committed:
        assert fresh == committed, "run: python3 tools/paper.py"
    else:
        require(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) reads the figures' words")
        words = [subprocess.run(["pdftotext", str(p), "-"], capture_output=True, text=True, check=True).stdout.split()
                 for p in (GENERATED / name, regenerated / name)]
        assert words[0] == words[1], "run: python3 tools/paper.py"


def test_a_changed_result_changes_the_generated_numbers(tmp_path):
    """The check above can fail: a stored accuracy edited after the build no longer matches numbers.tex."""
    results = results_copy(tmp_path)
    path = results / "model 6.json"
    summary = json.loads(path.read_text())
    summary["test_acc"] -= 0.01
    path.write_text(json.dumps(summary))
    paper.generate(results, tmp_path / "generated")
    fresh = macro_values((tmp_path / "generated" / "numbers.tex").read_text())
    assert fresh["ModelSixTest"] == f"{100 * summary['test_acc']:.2f}"
    assert fresh["ModelSixTest"] != macro_values((GENERATED / "numbers.tex").read_text())["ModelSixTest"]


def test_the_numbers_are_the_stored_ones():
    values = macro_values((GENERATED / "numbers.tex").read_text())
    six = json.loads((ROOT / "results" / "model 6.json").read_text())
    seeds = [json.loads((ROOT / "results" / f"final seed {k}.json").read_text()) for k in range(3)]
    assert values["ModelSixTest"] == f"{100 * six['test_acc']:.2f}"
    assert values["ParamsOptionTwo"] == f"{six['trainable_params']:,}" == "4,977,226"
    assert values["ParamsOptionOne"] == "2,797,610" and values["ParamsResNet"] == "11,173,962"
    assert values["ParamsFinal"] == f"{seeds[0]['trainable_params']:,}"
    assert values["FinalMean"] == f"{sum(100 * s['test_acc'] for s in seeds) / 3:.2f}"
    assert values["FinalSeedAccs"] == ", ".join(f"{100 * s['test_acc']:.2f}" for s in seeds)


# --- the prose ----------------------------------------------------------------------------------------------------


def test_the_prose_types_no_result():
    assert paper.typed_numbers(TEX.read_text()) == []


def test_a_typed_result_is_caught_and_names_are_not():
    tex = ("\\begin{document}\nOn CIFAR-10, Model~6 and ResNet-18 (Table~\\ref{tab:models}) \\citep{he2016deep}.\n"
           "Model~6 reaches 92.50\\% test accuracy.\n% a comment with 1.0\n\\end{document}")
    assert paper.typed_numbers(tex) == ["Model~6 reaches 92.50\\% test accuracy."]


def test_the_paper_tool_stops_on_a_typed_number(tmp_path):
    tex = tmp_path / "paper.tex"
    tex.write_text("\\begin{document}\nModels 1--6 took 81 seconds.\n\\end{document}")
    with pytest.raises(SystemExit, match="types a number outside a macro.*81 seconds"):
        paper.check_prose(tex)


def test_every_macro_the_prose_uses_is_defined():
    body = TEX.read_text().split(r"\begin{document}")[1]
    used = set(re.findall(r"\\([A-Z]\w*)", body))
    defined = set(macro_values((GENERATED / "numbers.tex").read_text())) | set(
        re.findall(r"\\newcommand\{\\(\w+)\}", TEX.read_text()))
    assert used <= defined, used - defined


def test_every_citation_has_a_full_entry():
    groups = re.findall(r"\\cite[pt]?\{([^}]*)\}", TEX.read_text())
    cited = {key.strip() for group in groups for key in group.split(",")}
    bib = (ROOT / "documentation" / "paper" / "references.bib").read_text()
    entries = dict(re.findall(r"@\w+\{(\w+),(.*?)\n\}", bib, re.S))
    assert cited and cited <= set(entries), cited - set(entries)
    for key in cited:
        assert all(re.search(rf"^\s*{field}\s*=", entries[key], re.M) for field in ("author", "title", "year")), key
    for work in ("he2016deep", "krizhevsky2009learning", "loshchilov2017sgdr", "devries2017cutout",
                 "jordan2024airbench", "thakur2023efficient", "liu2017pytorchcifar"):
        assert work in cited, work


def test_the_paper_states_the_notebooks_findings():
    """Each verdict, the final model's result and the choice on validation: the same text in the paper's macros
    and in the committed notebook's outputs (whitespace aside: the notebook wraps its lines)."""
    notebook = json.loads((ROOT / "mini_project.ipynb").read_text())
    printed = " ".join("".join(o.get("text", "")) for c in notebook["cells"] if c["cell_type"] == "code"
                       for o in c.get("outputs", []))
    printed = " ".join(printed.split())
    values = macro_values((GENERATED / "numbers.tex").read_text())
    for name in [*paper.QUESTIONS, "TestCosine", "FinalTarget", "Choice", "PlainOrder", "FirstSweep", "Longer",
                 "SlopeOne", "SlopeTwo", "GapLtwo", "GapCosine"]:
        assert " ".join(values[name].split()) in printed, name


# --- the build ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    require(shutil.which("pdflatex") is not None and shutil.which("bibtex") is not None,
            "pdflatex and bibtex build the paper")
    return paper.build(tmp_path_factory.mktemp("paper") / "paper.pdf")


def page_words(pdf, page: int) -> list[tuple[float, float, str]]:
    """(xMin, xMax, word) of every word on one page, from pdftotext's boxes."""
    require(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) reads the PDF's words")
    html = subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(pdf), "-"],
                          capture_output=True, text=True, check=True).stdout
    return [(float(a), float(b), w) for a, b, w in re.findall(r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" '
                                                               r'yMax="[\d.]+">([^<]*)</word>', html)]


def test_the_paper_builds_to_at_most_four_pages(built):
    info = subprocess.run(["pdfinfo", str(built)], capture_output=True, text=True, check=True).stdout
    assert 0 < int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1)) <= paper.PAGES
    assert "612 x 792 pts (letter)" in info


def test_the_pages_have_two_columns(built):
    """On a page of body text, words sit in the left (0.75-4.06 in) or the right column (4.44-7.75 in), not across
    the 0.375 in gap between them."""
    for page in (1, 2):
        words = page_words(built, page)
        left = [w for w in words if w[1] <= 4.06 * 72 + 1]
        right = [w for w in words if w[0] >= 4.44 * 72 - 1]
        assert len(left) > 150 and len(right) > 150, page
        assert len(words) - len(left) - len(right) < 0.05 * len(words), page


def test_page_one_links_the_code(built):
    text = " ".join(w for _, _, w in page_words(built, 1))
    repository = paper.H.notebook_namespace(paper.NOTEBOOK, ("parameters",))["REPOSITORY"]
    assert "Code:" in text
    assert repository in text if repository else "no public repository is named yet" in text


def test_the_committed_pdf_is_the_one_the_sources_build(built):
    require(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) reads the PDF's words")
    texts = [subprocess.run(["pdftotext", str(p), "-"], capture_output=True, text=True, check=True).stdout
             for p in (built, ROOT / "documentation" / "paper.pdf")]
    assert texts[0] == texts[1], "run: python3 tools/paper.py"


def test_a_paper_over_the_page_limit_is_refused(built, tmp_path, monkeypatch):
    monkeypatch.setattr(paper, "PAGES", 1)
    out = tmp_path / "paper.pdf"
    with pytest.raises(SystemExit, match="over the course's 1: shorten"):
        paper.build(out)
    assert not out.exists()


def test_a_missing_latex_is_named_with_its_fix(monkeypatch):
    monkeypatch.setattr(paper.shutil, "which", lambda tool: None)
    with pytest.raises(SystemExit, match="pdflatex and bibtex not found: install them .*texlive-latex-recommended"):
        paper.require_tools()


def test_readme_opens_with_the_paper():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "(documentation/paper.pdf)" in head
    assert "python3 tools/paper.py" in (ROOT / "README.md").read_text()
