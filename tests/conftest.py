"""Shared fixtures. The real CIFAR-10 folder is found through CIFAR10_DATA (set by .ci/run), else ./data.

Tests that need the data fail in CI when it is missing (CI=true); elsewhere it is downloaded once when the
network answers, and they are skipped when it does not."""
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

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
    """The CIFAR-10 folder. Missing on a developer's machine, it is downloaded there once (torchvision) when the
    network answers, else the data tests are skipped with the reason; CI never downloads."""
    path = Path(os.environ.get("CIFAR10_DATA", ROOT / "data"))
    reason = f"no CIFAR-10 in {path} (set CIFAR10_DATA)"
    if not (path / H.CIFAR_FOLDER).is_dir() and not os.environ.get("CI"):
        timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # an offline machine fails fast instead of hanging
        try:
            H.load_cifar10(path, download=True)
        except RuntimeError as error:
            reason += f" and the download failed: {str(error).splitlines()[0]}"
        finally:
            socket.setdefaulttimeout(timeout)
    require((path / H.CIFAR_FOLDER).is_dir(), reason)
    return path


@pytest.fixture(scope="session")
def raw(data_dir):
    return H.load_cifar10(data_dir, download=False)


@pytest.fixture(scope="session")
def data(data_dir):
    return H.prepare_data(data_dir)


@pytest.fixture
def tiny(data):
    """96 training, 64 validation and 64 test images: a whole run in a second on the CPU."""
    return H.Data(train=(data.train[0][:96], data.train[1][:96]), val=(data.val[0][:64], data.val[1][:64]),
                  full=data.full, test=(data.test[0][:64], data.test[1][:64]), mean=data.mean, std=data.std)


def tiny_net():
    """A small conv net with batch norm (buffers) and a residual-free path: cheap on the CPU."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def cifar_copy(tmp_path, data_dir, name, make=None) -> Path:
    """A DATA_DIR whose CIFAR-10 batch files link to the real ones, except `name`: made by `make(path)`, or left
    out when `make` is None."""
    folder = tmp_path / "data" / H.CIFAR_FOLDER
    folder.mkdir(parents=True)
    for real in (data_dir / H.CIFAR_FOLDER).iterdir():
        if real.name != name:
            (folder / real.name).symlink_to(real)
    if make is not None:
        make(folder / name)
    return tmp_path / "data"


def real_batch(data_dir, name) -> dict:
    """One of CIFAR-10's batch files as read (str keys)."""
    from cifar10_resnet import safe_pickle

    return safe_pickle.text_keys(safe_pickle.load(data_dir / H.CIFAR_FOLDER / name))


class RunsCode:
    """What a tampered file could hold: unpickling it calls Path.touch on `marker` (any function would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


class Interrupted(Exception):
    """Stands for a disconnect or a kernel restart in the middle of a run."""


def interrupt_after_two_epochs(build, config, tiny, engine, store) -> Path:
    """A run of `config` stopped by an exception after its second epoch, with a checkpoint after every epoch;
    returns that checkpoint."""
    def stop_after_two(epoch):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        progress = H.Progress(checkpoint_seconds=0, on_epoch_end=stop_after_two)
        H.run_experiment("m", config, build, tiny, engine, store, progress=progress)
    (checkpoint,) = (store.root / "checkpoints").iterdir()
    return checkpoint


def a_recipe(**settings) -> H.Recipe:
    """A unit test's recipe: one epoch at lr 0.1 in batches of 64 from seed 0, with `settings` on top."""
    return H.Recipe.of({"epochs": 1, "lr": 0.1, "batch_size": 64, "seed": 0, **settings})


def one_epoch(step, batches, after_step=lambda: None) -> dict:
    """One pass of `step` (a `helpers.Step`) over `batches`, `after_step` after each step, as `helpers.fit`'s
    inner loop makes it; returns the epoch's training loss and accuracy."""
    step.eager.model.train()
    step.sums.reset()
    for images, labels in batches:
        step(images, labels)
        after_step()
    return step.sums.read()


@pytest.fixture(scope="session")
def models():
    """The architectures, executed from the notebook's `model` cells."""
    return H.notebook_namespace(NOTEBOOK)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one); run with pytest -m cuda")
