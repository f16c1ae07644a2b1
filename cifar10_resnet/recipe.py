"""A run's recipe: every training setting in one frozen, typed record, built once from a stored configuration.

A configuration is the dict a run is stored under (`results/<name>.json`, "config"); its hash (`store.config_hash`)
is taken of the settings as given, so a recipe that gains a setting keeps serving every run stored before it: the
new field's default is what those runs trained with. `Recipe.of(config, run)` checks the configuration (unknown
keys, missing keys, types, the values of a few-valued setting) and fills in the defaults; nothing else reads a
configuration's keys.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

from .checks import SEED_LIMIT, BadInput, one_of, positive, shown, whole


@dataclass(frozen=True)
class Recipe:
    """Every setting of a training run, with its unit. The first four have no default: a configuration gives them."""

    epochs: int                  # passes over the training images
    lr: float                    # the peak learning rate (SGD on a mean loss)
    batch_size: int              # images per step
    seed: int                    # weights, data order and augmentation
    # the optimizer
    momentum: float = 0.9        # SGD momentum
    weight_decay: float = 0.0    # L2 penalty added to each gradient (SGD's weight_decay)
    nesterov: bool = False       # Nesterov momentum
    # the schedule: a multiplier of the learning rate at each step (`training.make_scheduler`)
    schedule: str = "constant"   # constant, cosine or onecycle
    warmup: float = 0.0          # onecycle: fraction of all steps spent rising from `lr_start` to 1
    lr_start: float = 0.1        # onecycle: the multiplier the warm-up starts from (airbench's triangle: 0.2)
    lr_end: float = 0.0          # onecycle: the multiplier the decay ends at (airbench's triangle: 0.07)
    # the loss and the weight average
    label_smoothing: float = 0.0  # probability mass spread over the other classes
    ema_decay: float = 0.0       # weight average: 0 for none, else its decay per update (`averages.ModelEMA`)
    ema_buffers: str = "copy"    # the average's BatchNorm statistics: "average", or "copy" as every run before it
    # augmentation (`data.Augmentation`, applied by `data.Batches`)
    pad: int = 4                 # pixels of padding before the random 32x32 crop
    pad_mode: str = "constant"   # the padding: "constant" (zeros, black) or "reflect" (airbench: no black border)
    flip: str = "random"         # "random": each image of each batch; "alternate": each image every other epoch
    cutout: int = 0              # pixels: side of the square blanked in each training image; 0 for none
    cutout_inside: bool = False  # True: the whole square always inside the image (airbench); False: clipped
    tta_views: int = 4           # test-time views (`evaluation.tta_views`): 4, or airbench's 6
    # airbench's ingredients (Jordan, arXiv 2404.00498), each off unless a recipe sets it
    bias_lr_scale: float = 1.0   # BatchNorm biases: lr x this, weight decay / this (the same decay per step); 64
    freeze_bn_scale: bool = False  # BatchNorm scales held at 1 by a learning rate of 0
    whiten_bias_epochs: int = 0  # epochs a whitening stem's bias trains, then lr 0; 3
    lookahead: int = 0           # steps between lookahead's pulls toward the slow weights; 0 for none
    # what the run is, beside how it trains: read by the notebook and the report
    arch: str | None = None      # the architecture's name
    widths: list | None = None   # channels per stage
    blocks: list | None = None   # blocks per stage
    tta: bool = False            # whether the run is tested with test-time views
    quick: bool = False          # whether it ran in quick mode
    given: dict = field(default_factory=dict, compare=False, repr=False)  # the configuration, as hashed

    @classmethod
    def of(cls, config: dict, run: str = "a run") -> "Recipe":
        """The recipe of `config` (`check_config` first: BadInput naming `run` and the fault)."""
        check_config(config, run)
        return cls(**config, given=dict(config))

    def settings(self) -> dict:
        """Every setting by name, defaults filled in (not `given`)."""
        return {f.name: getattr(self, f.name) for f in SETTINGS}


SETTINGS = [f for f in dataclasses.fields(Recipe) if f.name != "given"]
REQUIRED = [f.name for f in SETTINGS if f.default is dataclasses.MISSING]
DESCRIBED = ("arch", "widths", "blocks", "tta", "quick")  # what a run is: not checked against a default's type
DEFAULTS = {f.name: f.default for f in SETTINGS if f.name not in REQUIRED and f.name not in DESCRIBED}
KNOWN = [f.name for f in SETTINGS]  # every key a configuration may hold: the others are typos
# the settings that take one of a few values: checked with the configuration, not when training reads them
# (a tta_views of 5 would otherwise fail after the last epoch, a pad_mode typo at the first batch)
OPTIONS = {"schedule": ("constant", "cosine", "onecycle"), "ema_buffers": ("average", "copy"),
           "pad_mode": ("constant", "reflect"), "flip": ("random", "alternate"), "tta_views": (4, 6)}

# the interval of each numeric setting (a bracket includes its end, a parenthesis does not): checked with the
# configuration, so that a negative pad fails before a model is built, not at the first batch, and a negative cutout
# does not train silently without one
RANGES = {"momentum": "[0, 1)", "weight_decay": "[0, inf)", "warmup": "[0, 1]", "lr_start": "[0, 1]",
          "lr_end": "[0, 1]", "label_smoothing": "[0, 1)", "ema_decay": "[0, 1)", "pad": "[0, 31]",
          "cutout": "[0, 32]", "bias_lr_scale": "(0, inf)", "whiten_bias_epochs": "[0, inf)", "lookahead": "[0, inf)"}


def inside(value: float, interval: str) -> bool:
    """Whether `value` lies in `interval`, written as in RANGES ("[0, 1)"); NaN lies in none."""
    low, high = (float(end) for end in interval[1:-1].split(", "))
    above = value > low or (interval[0] == "[" and value == low)
    below = value < high or (interval[-1] == "]" and value == high)
    return above and below


def check_keys(config: dict, run: str = "a run") -> None:
    """Refuse a configuration with a key outside KNOWN (a misspelt key would be replaced by its default and
    hashed as another experiment) or without a REQUIRED one, naming the keys it takes."""
    unknown, missing = sorted(set(config) - set(KNOWN)), sorted(set(REQUIRED) - set(config))
    if unknown or missing:
        fault = f"unknown key {', '.join(map(repr, unknown))}" if unknown else f"no {', '.join(missing)}"
        raise BadInput(f"{run}: the configuration has {fault}; the keys it takes: {', '.join(KNOWN)}")


def check_config(config: dict, run: str = "a run") -> None:
    """`check_keys`, then the values that a run hashes and trains with: whole epochs, batch size and seed (at most
    SEED_LIMIT), a positive learning rate, each DEFAULTS key of its default's type (True for a bool, a number...)
    and in its RANGES interval, and each OPTIONS key one of its values."""
    check_keys(config, run)
    whole(f"{run}: config 'epochs'", config["epochs"])
    whole(f"{run}: config 'batch_size'", config["batch_size"])
    whole(f"{run}: config 'seed'", config["seed"], least=0, most=SEED_LIMIT)
    positive(f"{run}: config 'lr'", config["lr"])
    for key, default in DEFAULTS.items():
        if not same_kind(config.get(key, default), default):
            raise BadInput(f"{run}: config {key!r} must be of type {type(default).__name__}, like its default "
                           f"{default!r}, not {shown(config[key])}")
    for key, interval in RANGES.items():
        if not inside(config.get(key, DEFAULTS[key]), interval):
            raise BadInput(f"{run}: config {key!r} is {config[key]!r}, outside {interval}; give a value in {interval}")
    for key, options in OPTIONS.items():
        one_of(options)(f"{run}: config {key!r}", config.get(key, DEFAULTS[key]))


def same_kind(value, default) -> bool:
    """Whether `value` can stand where `default` does: a bool for a bool, an int for an int (not True), any
    real number for a float, a string for a string."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    kind = {int: numbers.Integral, float: numbers.Real}.get(type(default), type(default))
    return isinstance(value, kind)
