"""The networks as the rest of the project sees them: registered by name, read from the notebook, counted, and
handled as one model.

The architectures live in the notebook (its code cells tagged "model"), where graders read them; tests,
benchmarks and tools execute those cells (`notebook_namespace`). Those cells register each builder in one
`Registry` (`NETWORKS`, which starts with the package's AirResNet): a run's "arch" names a network there and
nowhere else, and its widths and blocks, when it gives them, are the builder's arguments. A network that the
training needs to know more about says so through two optional methods, read here and nowhere else:
- `fit_to_data(images)`: set weights from the normalised training images before training (a whitening stem);
- `parameter_roles()`: {"frozen": [...], "whitening bias": [...]}, parameters the optimizer treats apart.
"""
from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .air_resnet import air_resnet
from .checks import BadInput

# ---------------------------------------------------------------------------------------------------
# 1. The notebook's cells, and counts
# ---------------------------------------------------------------------------------------------------


def notebook_namespace(path: str | Path = "mini_project.ipynb", tags: tuple[str, ...] = ("model",),
                       given: dict | None = None) -> dict:
    """Execute the notebook's code cells tagged with any of `tags`, in order, with `given` overriding the
    "parameters" cell as papermill would; return the namespace: tests and benchmarks read what graders read."""
    notebook = json.loads(Path(path).read_text())
    namespace: dict = {"__name__": "notebook_models"}
    for cell in notebook["cells"]:
        tagged = set(cell.get("metadata", {}).get("tags", [])) & set(tags)
        if cell["cell_type"] == "code" and tagged:
            exec(compile("".join(cell["source"]), f"{path}:{'/'.join(sorted(tagged))}", "exec"), namespace)
            if "parameters" in tagged:
                namespace.update(given or {})
    return namespace


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torchsummary_total(model: nn.Module, device: torch.device) -> int:
    """Trainable parameters as torchsummary counts them (its table is not printed), checked against
    `count_parameters`, so that the number shown is the number asserted."""
    import contextlib
    import io

    try:
        from torchsummary import summary
    except ModuleNotFoundError:
        raise ModuleNotFoundError("torchsummary is missing: pip install -r requirements.txt") from None

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        summary(model.to(device), (3, 32, 32), device=torch.device(device).type)
    line = next(line for line in text.getvalue().splitlines() if line.startswith("Trainable params:"))
    total = int(line.split(":")[1].replace(",", ""))
    assert total == count_parameters(model), (total, count_parameters(model))
    return total


def flops_per_image(model: nn.Module, backward: bool = False, batch: int = 2) -> float:
    """FLOPs per 32x32 image of a forward pass (and the backward pass, with `backward`) as
    torch.utils.flop_counter counts them (convolutions and matmuls; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    # shapes only: no arithmetic, the model untouched
    meta = copy.deepcopy(model).to("meta").train(backward)
    x, y = torch.empty(batch, 3, 32, 32, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        with torch.set_grad_enabled(backward):
            logits = meta(x)
            if backward:
                F.cross_entropy(logits, y).backward()
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------------------------------------------
# 2. The registry: a run's "arch" -> the network it trains
# ---------------------------------------------------------------------------------------------------

SIZES = ("widths", "blocks")  # the configuration keys a builder may take: channels per stage, blocks per stage


def given_sizes(config: dict) -> dict:
    """The sizes (SIZES) that a configuration gives; one it leaves out or sets to None is the builder's default."""
    return {key: config[key] for key in SIZES if config.get(key) is not None}


@dataclass(frozen=True)
class Network:
    """One registered network: `build(**sizes)` makes it untrained; `label` names it in tables and prose."""

    name: str
    build: Callable[..., nn.Module]
    label: str

    def sizes(self) -> dict:
        """The widths and blocks the builder takes, at their defaults (what Table 1 shows)."""
        parameters = inspect.signature(self.build).parameters
        return {key: parameters[key].default for key in SIZES if key in parameters}


class Registry:
    """Every network a run can name, by its "arch": `register(label)` decorates a builder (its function name is the
    arch), `builder(config)` checks the name and returns a function that builds the configured network."""

    def __init__(self):
        self.networks: dict[str, Network] = {}

    def register(self, label: str) -> Callable:
        """A decorator: registers the builder under its function's name, and returns it unchanged."""
        def add(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            self.networks[build.__name__] = Network(build.__name__, build, label)
            return build
        return add

    def __getitem__(self, name: str) -> Network:
        return self.find(name)

    def find(self, name: str, run: str | None = None) -> Network:
        """The network registered as `name`; BadInput naming the registered ones (and `run`'s config) otherwise."""
        if name not in self.networks:
            which = f"{run}: config 'arch' is {name!r}, which" if run else repr(name)
            raise BadInput(f"{which} names no network; the registered ones: {', '.join(self.networks)} (a new "
                           f"one: decorate its builder with @NETWORKS.register(label) in the notebook's model cells)")
        return self.networks[name]

    def __contains__(self, name) -> bool:
        return name in self.networks

    def labels(self) -> dict[str, str]:
        """arch -> label, as tables and prose name the networks."""
        return {name: network.label for name, network in self.networks.items()}

    def builder(self, config: dict, run: str = "a run") -> Callable[[], nn.Module]:
        """The untrained network of `config` as a function of no arguments, after checking that its "arch" is
        registered and that the builder takes each size it gives (BadInput naming `run` otherwise)."""
        network = self.find(config.get("arch"), run)
        given = given_sizes(config)
        if set(given) - set(network.sizes()):
            raise BadInput(f"{run}: config gives {', '.join(sorted(set(given) - set(network.sizes())))} but "
                           f"{network.name}'s builder takes only {', '.join(network.sizes()) or 'no sizes'}")
        return lambda: network.build(**given)

    def build(self, config: dict, run: str = "a run") -> nn.Module:
        """The untrained network that `config` names, at its sizes (`builder`)."""
        return self.builder(config, run)()


def registry() -> Registry:
    """A registry holding the package's network, AirResNet (round 3's); the notebook's model cells add theirs."""
    networks = Registry()
    networks.register("AirResNet")(air_resnet)
    return networks


def notebook_networks(path: str | Path = "mini_project.ipynb") -> Registry:
    """The notebook's registry (`NETWORKS`, filled by its `model` cells): every network a stored run can name."""
    return notebook_namespace(path)["NETWORKS"]


# ---------------------------------------------------------------------------------------------------
# 3. Table 1: the networks side by side
# ---------------------------------------------------------------------------------------------------

BUDGET = 5_000_000  # trainable parameters: the course's limit


def network_table(networks: Registry, configs: dict[str, dict], params: dict[str, int]):
    """Table 1: per label, the network a configuration names (or just its "arch"): channels and blocks per layer
    (the configuration's, else the builder's), trainable parameters (`params`, by label: the caller counts them
    with torchsummary), forward GFLOP per image, and whether it is under BUDGET."""
    import pandas as pd

    def listed(sizes) -> str:
        return ", ".join(map(str, sizes)) if sizes is not None else "-"

    rows = {}
    for label, config in configs.items():
        sizes = networks[config["arch"]].sizes() | given_sizes(config)
        rows[label] = {"channels per layer": listed(sizes.get("widths")),
                       "blocks per layer": listed(sizes.get("blocks")),
                       "trainable params": f"{params[label]:,}",
                       "GFLOP per image": f"{flops_per_image(networks.build(config)) / 1e9:.2f}",
                       "under 5M": params[label] < BUDGET}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------------------------------
# 4. One model handle
# ---------------------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The module that holds the weights: the one behind torch.compile's wrapper, or `model` itself."""
    return getattr(model, "_orig_mod", model)


def fit_to_data(model: nn.Module, images: torch.Tensor) -> None:
    """Let a network set weights from the normalised training `images` before training (its `fit_to_data`);
    a network without that method is left as it is."""
    fit = getattr(unwrap(model), "fit_to_data", None)
    if fit is not None:
        fit(images)


def parameter_roles(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters a network asks the optimizer to treat apart (its `parameter_roles`), or none."""
    roles = getattr(unwrap(model), "parameter_roles", None)
    return roles() if roles is not None else {}
