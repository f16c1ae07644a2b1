"""Exploration runs outside the notebook, on the GPU, trained on the 45k split and scored on validation only (with
and without test-time augmentation; nothing is tested), to plan the notebook's next sweep. Three rounds:

--round 1 (results/exploration/, about 4.5 minutes on an H200): the final recipe's ingredients measured again once
  the weight average averages the BatchNorm statistics too (ModelEMA(buffers="average")). The notebook's first
  sweep had copied the statistics (its runs' configs have no "ema_buffers" key, which fit() reads as "copy").
  The store index (summary.json) of the run of 2026-11-26 on an NVIDIA H200 is committed; its per-run histories
  did not come back from the GPU machine. That run predates the "ema_buffers" key: its configs lack it, and the
  ModelEMA of that day always averaged the statistics, so its "EMA fixed" runs are what "ema_buffers": "average"
  gives here.
--round 2 (results/exploration-2/, about 2.5 minutes on an H200): after the second sweep chose 80 epochs without
  weight averaging, 100 epochs of that recipe and of the cheaper layout with a residual block in every stage.
--round 3 (the default): the third sweep round (benchmarks/round3.py: AirResNet under airbench96's recipe beside
  round 2's choice, built on the notebook's starting recipe from its cells tagged "recipes"), each recipe with
  --seeds seeds, trained into the notebook's own store (results/, or results/quick/ with --quick). --estimate prints each run's
  cost from its FLOPs at the training rate measured by the store's runs on a card, and trains nothing.
  --peer also trains airbench95 (package airbench 0.1.8, the same CIFAR-10 through its train.pt and test.pt)
  --peer-runs times on this CUDA GPU and writes benchmarks/results/peers_<card>.json and .md.

Usage (from the repository root):
    python benchmarks/exploration.py --data-dir DIR [--round 1|2|3] [--quick] [--seeds N] [--estimate CARD]
                                     [--peer] [--out STORE]
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # helpers.py sits at the repository root, one level above this file
import helpers as H  # noqa: E402
from cifar10_resnet import report  # noqa: E402
from benchmarks import round3  # noqa: E402  (benchmarks/round3.py: round 3's recipes)
from cifar10_resnet.store import ResultsStore  # noqa: E402

NOTEBOOK = ROOT / "mini_project.ipynb"
QUICK = {"FINAL_EPOCHS": 1}  # what the notebook's quick mode sets, so that it serves these runs
FINAL_NETWORKS = ("fast_resnet", "air_resnet")  # the final recipe's networks, as the notebook's NETWORKS names them

# ---------------------------------------------------------------------------------------------------
# Rounds 1 and 2: their recipes, as they ran
# ---------------------------------------------------------------------------------------------------

# The notebook's starting recipe (START, then named FINAL) and the recipe its first sweep chose, with the averaged
# statistics wherever a weight average is used ("EMA fixed").
FIRST = {"arch": "fast_resnet", "widths": [64, 128, 256, 384], "epochs": 40, "batch_size": 512, "lr": 0.4,
         "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "onecycle", "warmup": 0.2,
         "label_smoothing": 0.2, "ema_decay": 0.99, "pad": 4, "cutout": 0, "tta": True, "seed": 0,
         "quick": False, "ema_buffers": "average"}
CHOSEN = {**FIRST, "ema_decay": 0.0, "cutout": 12, "label_smoothing": 0.0, "widths": [80, 160, 320, 384]}
ROUND_1 = {
    "starting recipe, EMA fixed": FIRST,
    "chosen + EMA fixed": {**CHOSEN, "ema_decay": 0.99},
    "chosen, 80 epochs": {**CHOSEN, "epochs": 80},
    "chosen + label smoothing 0.2": {**CHOSEN, "label_smoothing": 0.2},
    "chosen, widths 64-128-256-384, 80 epochs": {**CHOSEN, "widths": [64, 128, 256, 384], "epochs": 80},
    "chosen + EMA fixed, 80 epochs": {**CHOSEN, "ema_decay": 0.99, "epochs": 80},
}
# Round 2, after the notebook's second sweep (80 epochs without weight averaging won): is a minute of training
# better spent on more epochs, of the same network or of the cheaper one with a residual block in every stage?
SECOND = {**CHOSEN, "epochs": 80, "blocks": [1, 0, 1]}
ROUND_2 = {
    "second choice, residuals in all stages at 64-128-256-352, 100 epochs":
        {**SECOND, "widths": [64, 128, 256, 352], "blocks": [1, 1, 1], "epochs": 100},
    "second choice, 100 epochs": {**SECOND, "epochs": 100},
}


# ---------------------------------------------------------------------------------------------------
# Round 3: the notebook's runs, their estimated cost, and the peer
# ---------------------------------------------------------------------------------------------------


def notebook_round(quick: bool) -> dict:
    """The notebook's networks and starting recipe (cells tagged model and recipes), its parameters as a Run all
    of this mode sees them."""
    given = {"H": H, "QUICK": quick, **(QUICK if quick else {})}
    return H.notebook_namespace(NOTEBOOK, ("parameters", "model", "recipes"), given)


def measured_rate(store: ResultsStore, card: str, ns: dict) -> tuple[float, int]:
    """Training FLOP/s (forward and backward, as flop_counter counts them) of the store's full-scale runs of
    the notebook's final networks on `card`, and how many runs that is."""
    flops = seconds = runs = 0
    for summary in store.summaries().values():
        config = summary.get("config", {})
        if summary.get("device") != card or config.get("arch") not in FINAL_NETWORKS or summary.get("diverged"):
            continue
        flops += round3.training_gflop(config, ns) * 1e9 * summary["train_images"]
        seconds += summary["train_seconds"]
        runs += 1
    return (flops / seconds if seconds else float("nan")), runs


def estimate(runs: dict[str, dict], images: int, store: ResultsStore, card: str, ns: dict) -> None:
    """Print each run's training FLOPs and its time at the rate `card` measured on the store's runs."""
    rate, measured = measured_rate(store, card, ns)
    if not measured:  # a card's name as the store writes it, e.g. "NVIDIA H200"
        raise SystemExit(f"no stored run of the notebook's networks on {card!r}; "
                         f"the store's cards: {report.cards(store.summaries())}")
    print(f"training rate of {H.count_text(measured, 'stored run')} on {card}: {rate / 1e12:.0f} TFLOP/s")
    total = 0.0
    for name, config in runs.items():
        gflop = round3.training_gflop(config, ns)
        seconds = gflop * 1e9 * images / rate
        total += seconds
        print(f"  {name}: {gflop:,.0f} GFLOP per image, about {seconds:.0f} s")
    print(f"total: about {H.format_duration(total)} of training on {card}, before evaluation and start-up")


def write_cifar_for_airbench(raw: dict, folder: Path) -> None:
    """CIFAR-10 as airbench's CifarLoader reads it: `folder`/train.pt and test.pt with uint8 images (N,32,32,3),
    labels and class names, the same pixels this project trains on."""
    folder.mkdir(parents=True, exist_ok=True)
    import torch

    for split, x, y in (("train", raw["train_x"], raw["train_y"]), ("test", raw["test_x"], raw["test_y"])):
        torch.save({"images": x.permute(0, 2, 3, 1).contiguous(), "labels": y, "classes": list(H.CLASSES)},
                   folder / f"{split}.pt")


def peer_table(result: dict):
    """The peer's result (as `run_peer` records it) as a one-row DataFrame for `report.markdown_table`."""
    import pandas as pd

    return pd.DataFrame([{
        "trainable params": f"{result['trainable_params']:,}", "epochs": f"{result['epochs']:g}",
        "test acc (%)": f"{result['test_acc_mean']:.2f} ± {result['test_acc_std']:.2f}",
        "runs": len(result["runs"]), "s per run (training)": f"{result['seconds_mean']:.1f}",
    }], index=pd.Index([f"airbench95 ({result['package']})"], name="peer"))


def run_peer(raw: dict, runs: int, out: Path) -> None:
    """Train airbench95 from its package `runs` times on this CUDA GPU (after one warm-up step), test each run
    with its 6-view TTA, and write peers_<card>.json and .md."""
    import airbench
    import torch
    from airbench import lib_airbench95

    device = H.pick_device()
    card = H.device_name(device)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as work:
        write_cifar_for_airbench(raw, Path(work) / "cifar10")
        os.chdir(work)  # airbench reads ./cifar10/train.pt and test.pt
        try:
            hyp = lib_airbench95.hyp
            train = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                         aug=hyp["aug"], altflip=True)
            test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
            airbench.warmup95(train)  # cuDNN autotuning and the first launches, outside the timings
            rows = []
            for run in range(runs):
                torch.cuda.synchronize()
                start = time.perf_counter()
                model = airbench.train95(train, verbose=False)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                rows.append({"run": run, "seconds": round(seconds, 2),
                             "test_acc": airbench.evaluate(model, test, tta_level=hyp["net"]["tta_level"])})
                print(f"PEER | airbench95 run {run} | test {100 * rows[-1]['test_acc']:.2f}% | {seconds:.1f} s",
                      flush=True)
        finally:
            os.chdir(here)
    accs = [100 * row["test_acc"] for row in rows]
    mean, std = report.mean_and_std(accs)
    result = {"peer": "airbench95", "package": f"airbench {getattr(airbench, '__version__', '0.1.8')}",
              "device": card, "torch": torch.__version__,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "trainable_params": H.count_parameters(model), "epochs": hyp["opt"]["train_epochs"],
              "tta_level": hyp["net"]["tta_level"], "runs": rows,
              "test_acc_mean": round(mean, 2), "test_acc_std": round(std, 2),
              "seconds_mean": round(sum(row["seconds"] for row in rows) / len(rows), 2)}
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"peers_{slug}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = report.markdown_table(peer_table(result))
    (out / f"peers_{slug}.md").write_text(
        f"# Peer on {card}\n\ntorch {torch.__version__}, {result['date']}; test accuracy with airbench's "
        f"6-view TTA (level {result['tta_level']}), time from the start of train95 to its return (whitening "
        f"included, evaluation not).\n\n{table}\n")
    print(f"wrote {out / f'peers_{slug}.json'} and .md")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("CIFAR10_DATA", "data"))
    p.add_argument("--out", default=None, help="the store (default: the round's, see above)")
    p.add_argument("--round", type=int, choices=(1, 2, 3), default=3)
    p.add_argument("--quick", action="store_true", help="round 3: the notebook's quick mode (a smoke test)")
    p.add_argument("--seeds", type=int, default=3, help="round 3: seeds per recipe (the notebook's SWEEP_SEEDS)")
    p.add_argument("--estimate", metavar="CARD", default=None, help="round 3: print the costs on CARD, train nothing")
    p.add_argument("--peer", action="store_true", help="also train airbench95 (needs CUDA and the package)")
    p.add_argument("--peer-runs", type=int, default=3)
    args = p.parse_args()

    ns = notebook_round(args.quick)  # FastResNet and the starting recipe live in the notebook
    recipes = round3.recipes(ns)
    if args.round == 3:
        default = ROOT / "results" / ("quick" if args.quick else "")
        store = ResultsStore.open(args.out or default, "--out")
        seeds = args.seeds
        runs = dict(round3.trial(recipes, label, k) for label in recipes for k in range(seeds))
    else:
        store = ResultsStore.open(args.out or ROOT / "results" / ("exploration" if args.round == 1
                                                                  else "exploration-2"), "--out")
        runs = ROUND_1 if args.round == 1 else ROUND_2
    data = H.prepare_data(args.data_dir, n_val=5000, seed=0, subset=H.QUICK_SUBSET if args.quick else None)
    if args.estimate:
        estimate(runs, len(data.train[1]), ResultsStore(ROOT / "results"), args.estimate, ns)
        return
    engine = H.Engine.for_device(H.pick_device())
    for name, config in runs.items():
        config = {"blocks": (1, 0, 1), **config} if args.round < 3 else config  # rounds 1-2 predate "blocks"
        build = ns["NETWORKS"].builder(config, name)
        s = H.run_experiment(name, runs[name], build, data, engine, store, H.Protocol(test=False))
        print(f"EXPLORE | {name} | val {100 * s['final_val_acc']:.2f}% | val TTA {100 * s['final_val_acc_tta']:.2f}% "
              f"| {s['train_seconds']:.1f} s", flush=True)
    if args.round == 3:
        trials = {label: [store.load(round3.trial(recipes, label, k)[0]) for k in range(seeds)] for label in recipes}
        costs = {label: round3.training_gflop(config, ns) for label, config in recipes.items()}
        print(report.trials_table(trials, costs).to_string())
        chosen, tta, why = H.choose_by_mean(trials, costs, round3.TIE)
        print(f"EXPLORE | round 3 chooses {chosen} ({why}); test-time augmentation {'on' if tta else 'off'}")
    if args.peer:
        if not H.pick_device().type == "cuda":
            print("peer not run: airbench trains on a CUDA GPU only")
        else:
            run_peer(H.load_cifar10(args.data_dir), args.peer_runs, ROOT / "benchmarks" / "results")


if __name__ == "__main__":
    main()
