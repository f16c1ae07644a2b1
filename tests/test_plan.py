"""What Run all will cost: which planned runs the store serves, a timed probe of each architecture left to train,
and the estimate built from them (issue: Colab on a T4 says how long it will take)."""
import math

import pytest
import torch.nn as nn

import helpers as H
from cifar10_resnet import plan
from cifar10_resnet.plan import Planned, served, training_cost, training_rate
from cifar10_resnet.store import ResultsStore
from conftest import tiny_net

CONFIG = {"epochs": 2, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "cosine", "seed": 0}


@pytest.fixture
def store(tiny, tmp_path):
    """A store holding one complete run, "m", of CONFIG."""
    store = ResultsStore(tmp_path)
    H.run_experiment("m", CONFIG, tiny_net, tiny, H.Engine.for_device("cpu"), store)
    return store


def test_served_matches_the_config_except_what_earlier_runs_decide(store):
    assert served(store, "m", Planned(CONFIG, tiny_net, 96))
    assert not served(store, "other name", Planned(CONFIG, tiny_net, 96))
    changed = {**CONFIG, "lr": "decided by earlier runs"}
    assert not served(store, "m", Planned(changed, tiny_net, 96))
    assert served(store, "m", Planned(changed, tiny_net, 96, frozenset({"lr"})))
    assert not served(store, "m", Planned({**CONFIG, "epochs": 3}, tiny_net, 96, frozenset({"lr"})))


def test_the_probe_measures_a_positive_training_rate(tiny):
    rate = training_rate(tiny_net, CONFIG, tiny, H.Engine.for_device("cpu"))
    assert math.isfinite(rate) and rate > 0


def test_the_estimate_counts_served_runs_and_multiplies_the_measured_rate(store, tiny, monkeypatch):
    probed = []

    def rate(build, config, data, engine, batches=6):  # a fixed rate, to check the arithmetic
        probed.append(config["batch_size"])
        return 100.0

    monkeypatch.setattr(plan, "training_rate", rate)
    runs = {"m": Planned(CONFIG, tiny_net, 96),
            "n": Planned({**CONFIG, "epochs": 10}, tiny_net, 1000),
            "o": Planned({**CONFIG, "epochs": 5}, tiny_net, 2000)}
    text = training_cost(runs, store, tiny, H.Engine.for_device("cpu"))
    # n and o: (10 x 1000 + 5 x 2000) images at 100 img/s = 200 s; one probe for the shared architecture
    assert text.startswith(f"1 of 3 runs already in {store.root}/; 2 to train: about 3 min 20 s of training")
    assert "at batch 32: 100 img/s" in text and probed == [32]
    assert training_cost({"m": runs["m"]}, store, tiny, H.Engine.for_device("cpu")).endswith("nothing to train")
    # a run decided by earlier ones is not served while one of them still has to train
    decided = {"n": runs["n"], "m": Planned(CONFIG, tiny_net, 96, frozenset({"lr"}))}
    assert training_cost(decided, store, tiny, H.Engine.for_device("cpu")).startswith("0 of 2 runs already in")



def wider_net():
    """tiny_net with 16 channels: another architecture, whose weights tiny_net's cannot take."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_a_stand_in_config_does_not_judge_the_stored_weights(tiny, tmp_path):
    """A planned run whose architecture earlier runs decide builds a stand-in's network: the stored weights are
    served as they are (the run checks them against its own network when it is served), never set aside for
    not fitting the stand-in; a plan with nothing decided checks them against its network."""
    store = ResultsStore(tmp_path)
    H.run_experiment("w", CONFIG, wider_net, tiny, H.Engine.for_device("cpu"), store, H.Protocol(keep_weights=True))
    assert served(store, "w", Planned(CONFIG, tiny_net, 96, frozenset({"lr"})))
    assert store.path("w", ".pt").exists()
    with pytest.warns(UserWarning, match="weights cannot serve the run"):
        assert not served(store, "w", Planned(CONFIG, tiny_net, 96))
    assert not store.path("w", ".pt").exists() and store.path("w", ".pt.corrupt").exists()
