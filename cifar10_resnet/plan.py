"""What a Run all will train, and what that costs on this device: the runs the store already serves, and a timed
probe of each architecture left to train, times its epochs and images. No number here is typed."""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import torch.nn as nn

from .data import Data, training_batches
from .engine import Engine, device_name
from .recipe import Recipe, check_keys
from .store import ResultsStore
from .text import count_text, format_duration
from .training import Progress, fit

SILENT = Progress(label=None, log_every=0)  # the probe prints nothing


class Planned(NamedTuple):
    """A run that Run all will make: its config, model factory and training images. `decided` names the config
    keys that earlier runs decide (a learning rate chosen on validation): the config holds a stand-in."""

    config: dict
    build: Callable[[], nn.Module]
    images: int
    decided: frozenset = frozenset()


def served(store: ResultsStore, name: str, planned: Planned) -> bool:
    """Whether the store holds a complete result of `name` for the planned config (`decided` keys aside)."""
    summary = store.load(name)
    if summary is None or set(summary["config"]) != set(planned.config):
        return False
    if any(summary["config"][k] != v for k, v in planned.config.items() if k not in planned.decided):
        return False
    # weights are loaded as the run's own serving loads them; with `decided` keys, `build` makes the stand-in's
    # network (maybe another architecture), so the run itself checks its weights when it is served
    check = planned.build if store.path(name, ".pt").exists() and not planned.decided else None
    return store.complete(name, summary["config"], check) is not None


def training_rate(build: Callable[[], nn.Module], config: dict, data: Data, engine: Engine,
                  batches: int = 6) -> float:
    """Training images per second of `build` under `config` here, on the step its run would take (CUDA graph or
    eager): the time of one epoch of `fit` over `batches` batches of real images, the second on CUDA (the
    first pays for autotuning). The probe's learning rate is 0: what it trains is thrown away."""
    # 6 full batches: the graph's warm-up and check
    n = min(len(data.train[1]), batches * config["batch_size"])
    epochs = 2 if engine.device.type == "cuda" else 1
    # checked as a run is (a positive lr), then trained at lr 0
    probe = dataclasses.replace(Recipe.of({**config, "lr": 1.0}), lr=0.0, epochs=epochs)
    train = training_batches((data.train[0][:n], data.train[1][:n]), probe, data, engine.device)
    seconds = [row["seconds"] for row in fit(build(), train, None, probe, engine, progress=SILENT).history]
    return n / (seconds[-1] - (seconds[-2] if len(seconds) > 1 else 0.0))


def training_cost(plan: dict[str, Planned], store: ResultsStore, data: Data, engine: Engine) -> str:
    """How many runs of `plan` (in order) the store serves, and the time to train the others here from a probe
    of each of their architectures (`training_rate`); a run with `decided` keys is served only after its deciders."""
    left, rates, seconds = [], {}, 0.0
    for name, planned in plan.items():
        check_keys(planned.config, name)  # a misspelt key stops the plan, before anything trains
        if served(store, name, planned) and not (planned.decided and left):
            continue
        left.append(name)
        config = planned.config
        key = (config.get("arch"), "-".join(map(str, config.get("widths") or [])), str(config.get("blocks")),
               config["batch_size"])
        if key not in rates:
            rates[key] = training_rate(planned.build, config, data, engine)
        seconds += config["epochs"] * planned.images / rates[key]
    text = f"{len(plan) - len(left)} of {count_text(len(plan), 'run')} already in {store.root}/"
    if not left:
        return text + "; nothing to train"
    measured = ", ".join(f"{arch}{' ' + widths if widths else ''} at batch {batch}: {rate:,.0f} img/s"
                         for (arch, widths, _, batch), rate in rates.items())
    return (f"{text}; {len(left)} to train: about {format_duration(seconds)} of training on "
            f"{device_name(engine.device)} in {engine.precision} (measured here: {measured})")
