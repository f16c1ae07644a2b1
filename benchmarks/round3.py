"""Round 3 of the final recipe's sweep, kept outside the notebook until its runs are stored: airbench96's recipe on
its network cut below 5M parameters (`cifar10_resnet.air_resnet`), beside the recipe that round 2 chose.

`benchmarks/exploration.py --round 3` trains these runs into the notebook's store under the names below, each with
several seeds, scored on validation only. The notebook's own cells (tagged "parameters", "model" and "recipes")
supply the starting recipe and the registry of networks (`NETWORKS`); `recipes(ns)` and `training_gflop` take it.
"""
from __future__ import annotations

import helpers as H
from cifar10_resnet.experiments import ROUND3_PREFIX

TIE = 0.0015                 # validation accuracy: recipes closer than this tie, and the cheaper one wins
LR_1024, WD_1024 = 9.0, 0.0153  # airbench96's learning rate and weight decay, per 1,024 examples, decoupled

# ---------------------------------------------------------------------------------------------------
# 1. The recipes, their seeds and their cost
# ---------------------------------------------------------------------------------------------------


def recipes(ns: dict) -> dict[str, dict]:
    """Round 3's recipes (label -> configuration) from the notebook's namespace `ns` (START, FINAL_EPOCHS, SEED,
    QUICK): round 2's choice at twice the epochs, and AirResNet under airbench96's recipe for 1x and 2x."""
    epochs, longer = ns["FINAL_EPOCHS"], 2 * ns["FINAL_EPOCHS"]
    lr, weight_decay = H.from_decoupled(LR_1024, WD_1024, 0.85, 1024)  # airbench's hyp table, in this SGD's terms
    airbench = {
        "arch": "air_resnet", "widths": [128, 256, 352], "blocks": None, "epochs": epochs, "batch_size": 1024,
        "lr": lr, "momentum": 0.85, "nesterov": True, "weight_decay": weight_decay, "schedule": "onecycle",
        "warmup": 0.23, "lr_start": 0.2, "lr_end": 0.07, "label_smoothing": 0.2, "ema_decay": 0.0, "pad": 4,
        "pad_mode": "reflect", "flip": "alternate", "cutout": 12, "cutout_inside": True, "tta": True,
        "tta_views": 6, "bias_lr_scale": 64.0, "freeze_bn_scale": True, "whiten_bias_epochs": 3, "lookahead": 5,
        "seed": ns["SEED"], "quick": ns["QUICK"]}
    return {"round 2 choice": {**ns["START"], "epochs": longer, "ema_decay": 0.0},
            f"AirResNet {H.count_text(epochs, 'epoch')}": airbench,
            f"AirResNet {longer} epochs": {**airbench, "epochs": longer}}


def trial(round3: dict[str, dict], label: str, k: int) -> tuple[str, dict]:
    """Seed k of a round-3 recipe: (run name, configuration); the seed counts from the recipe's own."""
    config = round3[label]
    return f"{ROUND3_PREFIX}{label} - seed {k}", {**config, "seed": config["seed"] + k}


def training_gflop(config: dict, ns: dict) -> float:
    """GFLOP per training image over a whole run of `config`: forward and backward, times the epochs."""
    return H.flops_per_image(ns["NETWORKS"].build(config), backward=True) * config["epochs"] / 1e9
