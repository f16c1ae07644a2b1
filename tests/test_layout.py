"""One module, one job (issue: helpers.py reads as the notebook's training companion): the modules import each
other without cycles, helpers knows no experiment's name, contracts fit in three lines, notebook cells fit a
glance, and the numbers the notebook computes for its prose are right."""
import ast
import json
import re

import pytest

import helpers as H
from conftest import NOTEBOOK, ROOT

# each module and the project modules it may import: a DAG with helpers' training loop at its centre
ALLOWED = {"checks": set(), "store": {"checks"}, "cuda_graph": set(), "safe_pickle": {"checks"},
           "helpers": {"checks", "store", "cuda_graph", "safe_pickle"}, "plan": {"helpers", "store"},
           "report": {"helpers", "store"},
           "predictions": {"checks", "helpers", "safe_pickle", "store", "round3"},
           "tools/update_readme": {"helpers", "report", "store"}, "tools/render": {"store"},
           "tools/predict": {"checks", "helpers", "predictions", "store"}, "benchmarks/round3": {"helpers"}}


def project_imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {name.split(".")[0] for name in names} & {m.split("/")[-1] for m in ALLOWED}


@pytest.mark.parametrize("module", list(ALLOWED))
def test_modules_import_only_what_sits_below_them(module):
    assert project_imports(module) <= ALLOWED[module], module


def test_helpers_knows_no_experiment_name():
    source = (ROOT / "helpers.py").read_text()
    names = re.findall(r"model \d|final seed|final sweep|final validation\"|FastResNet|fast_resnet|option[12]",
                       source)
    assert not names, names


@pytest.mark.parametrize("module", list(ALLOWED))
def test_docstrings_state_the_contract_in_three_lines_at_most(module):
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    long = [node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node)
            and len(ast.get_docstring(node).strip().splitlines()) > 3]
    assert not long, f"{module}: docstrings over three lines (reasons belong on the lines they explain): {long}"


def test_notebook_code_cells_read_at_a_glance():
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    long = [(i, len("".join(c["source"]).splitlines())) for i, c in enumerate(cells)
            if len("".join(c["source"]).splitlines()) > 25]
    assert not long, f"code cells over 25 lines (index, lines): {long}"


def test_committed_tables_show_rounded_numbers():
    """No float artefact like 93.800003 in any table or printed line of the committed render."""
    outputs = [o for c in json.loads(NOTEBOOK.read_text())["cells"] for o in c.get("outputs", [])]
    shown = ["".join(o.get("data", {}).get("text/html", "")) + "".join(o.get("text", "")) for o in outputs]
    artefacts = [m for text in shown for m in re.findall(r"\d+\.\d*0000\d|\d+\.\d*9999\d", text)]
    assert not artefacts, artefacts


def test_forward_flops_per_image_are_counted_not_typed(models):
    """FastResNet costs more per image than Option 2 (0.94 against 0.66 GFLOP per forward pass), and a training
    step (forward and backward) about three times a forward pass."""
    assert H.flops_per_image(models["option2"]()) == 657_860_608
    assert H.flops_per_image(models["fast_resnet"]()) == 938_712_576
    step = H.flops_per_image(models["option2"](), backward=True)
    assert 2.9 < step / 657_860_608 < 3.0


def test_a_difference_under_two_standard_errors_of_the_difference_is_within_noise():
    assert 100 * H.standard_error(0.9, 5000) == pytest.approx(0.424, abs=0.001)
    # the SE of a difference of two accuracies at 92% on 5,000 images each: about 0.54 points
    assert 100 * H.difference_error(0.92, 0.92, 5000) == pytest.approx(0.543, abs=0.001)
    assert H.verdict(0.902, 0.899, 5000) == "within noise"
    assert H.verdict(0.9202, 0.9160, 5000) == "within noise"  # 0.42 points: under one SE of the difference
    assert H.verdict(0.9180, 0.9080, 5000) == "within noise"  # 1.0 point: under two
    assert H.verdict(0.9250, 0.9130, 5000) == "higher" and H.verdict(0.9130, 0.9250, 5000) == "lower"


def test_a_learning_rate_is_chosen_on_validation_and_never_from_a_diverged_run():
    runs = {"a": {"config": {"lr": 0.001}, "final_val_acc": 0.80}, "b": {"config": {"lr": 0.01}, "final_val_acc": 0.85},
            "c": {"config": {"lr": 1.0}, "diverged": True, "final_val_acc": None}}
    assert H.learning_rate_on_validation(runs, ["a", "b"], fallback=0.001)[0] == 0.01
    assert H.learning_rate_on_validation(runs, ["a", "c"], fallback=0.5)[0] == 0.001
    lr, why = H.learning_rate_on_validation(runs, ["c"], fallback=0.001)
    assert lr == 0.001 and "diverged" in why


def test_defaults_fill_in_without_changing_the_stored_config():
    config = {"epochs": 1, "batch_size": 8, "lr": 0.1, "seed": 0}
    merged = H.Recipe.of(config).settings()
    assert merged["momentum"] == 0.9 and merged["ema_buffers"] == "copy" and merged["pad"] == 4
    assert config == {"epochs": 1, "batch_size": 8, "lr": 0.1, "seed": 0}  # the hash is taken from this one
    assert H.Recipe.of({**config, "pad": 2}).pad == 2
