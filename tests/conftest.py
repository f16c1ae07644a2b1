"""Shared fixtures. The real CIFAR-10 folder is found through CIFAR10_DATA (set by .ci/run), else ./data.

Tests that need the data fail in CI when it is missing (CI=true) and are skipped elsewhere."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import helpers as H  # noqa: E402

NOTEBOOK = ROOT / "mini_project.ipynb"


def require(condition: bool, reason: str) -> None:
    """Skip when something outside the project is missing on a developer's machine; fail in CI."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("CIFAR10_DATA", ROOT / "data"))
    require((path / H.CIFAR_FOLDER).is_dir(), f"no CIFAR-10 in {path} (set CIFAR10_DATA)")
    return path


@pytest.fixture(scope="session")
def raw(data_dir):
    return H.load_cifar10(data_dir, download=False)


@pytest.fixture(scope="session")
def data(data_dir):
    return H.prepare_data(data_dir)


@pytest.fixture(scope="session")
def models():
    """The architectures, executed from the notebook's `model` cells."""
    return H.notebook_namespace(NOTEBOOK)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one); run with pytest -m cuda")
