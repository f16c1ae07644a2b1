"""Choosing on validation, as a statistician would: which run is better, by how much, and whether that is noise.

Every choice reads a run's summary (as `store.ResultsStore` serves it) and only its validation scores: the test
split is never looked at. Plain Python: the report reads it without loading any training code.
"""
from __future__ import annotations

import math
from typing import NamedTuple

# ---------------------------------------------------------------------------------------------------
# 1. Runs that diverged
# ---------------------------------------------------------------------------------------------------


def is_diverged(row: dict) -> bool:
    """An epoch diverged when its training or validation loss is not finite: NaN or infinite weights or
    statistics, from which no later epoch recovers."""
    return not (math.isfinite(row["train_loss"]) and math.isfinite(row.get("val_loss", 0.0)))


def diverged_epoch(history: list[dict]) -> int | None:
    """The first diverged epoch (`is_diverged`), or None."""
    return next((row["epoch"] for row in history if is_diverged(row)), None)


# ---------------------------------------------------------------------------------------------------
# 2. The noise of an accuracy
# ---------------------------------------------------------------------------------------------------

NOISE = 2.0  # standard errors: a smaller difference of two accuracies is within noise, never a gain


def standard_error(accuracy: float, images: int) -> float:
    """The standard error of an accuracy (a fraction) measured on `images` independent images."""
    return math.sqrt(accuracy * (1 - accuracy) / images)


def difference_error(a: float, b: float, images: int, jitter: tuple[float, float] = (0.0, 0.0)) -> float:
    """The standard error of the difference of two accuracies `a` and `b`, each measured on `images` images. With
    `jitter`, each run's own epoch-to-epoch standard deviation (fractions) counts too: a single run's final epoch
    is one draw of that jitter, independent of which images were sampled."""
    return math.hypot(standard_error(a, images), standard_error(b, images), *jitter)


def verdict(a: float, b: float, images: int, jitter: tuple[float, float] = (0.0, 0.0)) -> str:
    """'higher', 'lower' or 'within noise': accuracy `a` against `b`, each on `images` validation images (and each
    jittering by `jitter`, see `difference_error`); under NOISE standard errors of the difference: within noise."""
    if abs(a - b) < NOISE * difference_error(a, b, images, jitter):
        return "within noise"
    return "higher" if a > b else "lower"


class SeedSpread(NamedTuple):
    """A recipe's test accuracy over its seeds, with both of its errors (all in %, or points)."""

    mean: float
    seeds: int
    # sample standard deviation over the seeds: the variation between training runs
    seed_std: float
    # the test set's sampling error at the mean: every seed is scored on the same images, so it never averages out
    test_se: float

    @property
    def error(self) -> float:
        """The standard error of the mean as an estimate of the recipe's accuracy on new images: the seeds' error
        of the mean and the test set's sampling error, added in quadrature."""
        return math.hypot(self.seed_std / math.sqrt(self.seeds), self.test_se)


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def seed_spread(accuracies: list[float], images: int) -> SeedSpread:
    """`SeedSpread` of test accuracies in % (one per seed), each measured on the same `images` test images."""
    mean, std = mean_and_std(accuracies)
    return SeedSpread(mean, len(accuracies), std, 100 * standard_error(mean / 100, images))


# ---------------------------------------------------------------------------------------------------
# 3. Choices
# ---------------------------------------------------------------------------------------------------


def best_by_validation(summaries: dict[str, dict], names) -> str | None:
    """The experiment among `names` with the highest final-epoch validation accuracy, never a diverged one;
    None when every one of them diverged."""
    usable = [name for name in names if not summaries[name].get("diverged")]
    return max(usable, key=lambda name: summaries[name]["final_val_acc"]) if usable else None


def learning_rate_on_validation(summaries: dict[str, dict], names, fallback: float) -> tuple[float, str]:
    """The learning rate of the best of `names` on validation (`best_by_validation`) and how it was chosen;
    `fallback` when every one of them diverged: a rate is never taken from a diverged run."""
    winner = best_by_validation(summaries, names)
    if winner is None:
        return fallback, f"every one of {', '.join(names)} diverged: lr {fallback}, the fallback"
    lr = summaries[winner]["config"]["lr"]
    return lr, f"lr {lr}, from {winner}, the better on validation"


class Score(NamedTuple):
    """A run's validation score: the accuracy (a fraction; NaN for a diverged run) and whether it is the
    test-time augmented one."""

    acc: float
    tta: bool


def validation_score(summary: dict) -> Score:
    """A tuning run's final validation accuracy as a recipe would use it: the better of plain and test-time
    augmented (when measured), and whether that is the augmented one. NaN for a diverged run."""
    if summary.get("diverged") or summary.get("final_val_acc") is None:
        return Score(float("nan"), False)
    plain, views = summary["final_val_acc"], summary.get("final_val_acc_tta")
    return Score(views, True) if views is not None and views > plain else Score(plain, False)


def recipe_score(runs: list[dict]) -> Score:
    """A recipe's validation score over its seeds' runs: `validation_score` of their mean final accuracies (the
    test-time augmented mean only when every seed measured it); NaN when a seed diverged or there is none."""
    if not runs or any(math.isnan(validation_score(run).acc) for run in runs):
        return Score(float("nan"), False)
    mean = lambda key: sum(run[key] for run in runs) / len(runs)  # noqa: E731
    views = all(run.get("final_val_acc_tta") is not None for run in runs)
    return validation_score({"final_val_acc": mean("final_val_acc"),
                             "final_val_acc_tta": mean("final_val_acc_tta") if views else None})


def choose_by_mean(trials: dict[str, list[dict]], costs: dict[str, float], tie: float) -> tuple[str, bool, str]:
    """The recipe of `trials` (label -> its seeds' runs) to train: of those whose `recipe_score` is within `tie` of
    the best, the one with the lowest cost; returns (label, whether to use test-time augmentation, why)."""
    scores = {label: recipe_score(runs) for label, runs in trials.items()}
    usable = [label for label, score in scores.items() if math.isfinite(score.acc)]
    if not usable:
        raise ValueError("every recipe has a diverged seed: none to choose")
    best = max(usable, key=lambda label: scores[label].acc)
    # the best is among them
    tied = [label for label in usable if scores[best].acc - scores[label].acc < tie]
    chosen = min(tied, key=lambda label: (costs[label], -scores[label].acc))
    score = 100 * scores[chosen].acc
    if chosen == best:
        why = f"the best mean, {score:.2f}%" + (f", and the cheapest of {len(tied)} tied" if len(tied) > 1 else "")
    else:
        why = f"{score:.2f}%, a tie with {best} ({100 * scores[best].acc:.2f}%) at a lower cost"
    return chosen, scores[chosen].tta, why


def combine_changes(changes: dict[str, dict], runs: dict[str, dict], base: str) -> tuple[str, dict] | None:
    """The second round of a one-change-at-a-time sweep: every change that beat `base` on validation merged
    into one (label, change), the better change's value where two set the same key; None unless two merge."""
    floor = validation_score(runs[base]).acc
    better = sorted((label for label in runs if label != base and validation_score(runs[label]).acc > floor),
                    key=lambda label: -validation_score(runs[label]).acc)
    merged, labels = {}, []
    for label in better:  # best first: a key already set keeps the better change's value
        if not set(changes[label]) & set(merged):
            merged.update(changes[label])
            labels.append(label)
    return (" + ".join(labels), merged) if len(labels) >= 2 else None


def choose_recipe(runs: dict[str, dict], changes: dict[str, dict]) -> tuple[str, dict]:
    """The run with the best final validation accuracy (`validation_score`; diverged runs never win) and its
    change to the base recipe, with "tta" set to whether test-time augmentation scored higher for it."""
    scored = {label: validation_score(run) for label, run in runs.items()}
    usable = [label for label, score in scored.items() if math.isfinite(score.acc)]
    if not usable:
        raise ValueError("every tuning run diverged: no recipe to choose")
    best = max(usable, key=lambda label: scored[label].acc)
    return best, {**changes[best], "tta": scored[best].tta}
