"""Exploration runs outside the notebook, on the GPU, trained on the 45k split and scored on validation only (with
and without test-time augmentation; nothing is tested), to plan the notebook's next sweep. Two rounds:

--round 1 (results/exploration/, about 4.5 minutes on an H200): the final recipe's ingredients measured again once
  the weight average averages the BatchNorm statistics too (ModelEMA(buffers="average")). The notebook's first
  sweep had copied the statistics (its runs' configs have no "ema_buffers" key, which fit() reads as "copy").
  The store index (summary.json) of the run of 2026-11-26 on an NVIDIA H200 is committed; its per-run histories
  did not come back from the GPU machine. That run predates the "ema_buffers" key: its configs lack it, and the
  ModelEMA of that day always averaged the statistics, so its "EMA fixed" runs are what "ema_buffers": "average"
  gives here.
--round 2 (results/exploration-2/, the default, about 2.5 minutes on an H200): after the second sweep chose 80
  epochs without weight averaging, 100 epochs of that recipe and of the cheaper layout with a residual block in
  every stage.

Usage (from the repository root):
    python benchmarks/exploration.py --data-dir DIR [--round 1|2] [--out STORE]
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # helpers.py sits at the repository root, one level above this file
import helpers as H  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data-dir", default=os.environ.get("CIFAR10_DATA", "data"))
p.add_argument("--out", default=None, help="the store (default: results/exploration, round 2: ...-2)")
p.add_argument("--round", type=int, choices=(1, 2), default=2)
args = p.parse_args()
ns = H.notebook_namespace(ROOT / "mini_project.ipynb")  # FastResNet lives in the notebook
data = H.prepare_data(args.data_dir, n_val=5000, seed=0)
engine = H.Engine.for_device(H.pick_device())
store = H.ResultsStore(args.out or ROOT / "results" / ("exploration" if args.round == 1 else "exploration-2"))
# The notebook's starting recipe (FINAL) and the recipe its first sweep chose, with the averaged statistics
# wherever a weight average is used ("EMA fixed").
FINAL = {"arch": "fast_resnet", "widths": [64, 128, 256, 384], "epochs": 40, "batch_size": 512, "lr": 0.4,
         "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "onecycle", "warmup": 0.2,
         "label_smoothing": 0.2, "ema_decay": 0.99, "pad": 4, "cutout": 0, "tta": True, "seed": 0,
         "quick": False, "ema_buffers": "average"}
CHOSEN = {**FINAL, "ema_decay": 0.0, "cutout": 12, "label_smoothing": 0.0, "widths": [80, 160, 320, 384]}
ROUND_1 = {
    "starting recipe, EMA fixed": FINAL,
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
RUNS = ROUND_1 if args.round == 1 else ROUND_2
for name, config in RUNS.items():
    build = lambda: ns["fast_resnet"](config["widths"], config.get("blocks", (1, 0, 1)))  # noqa: E731
    s = H.run_experiment(name, config, build, data, engine, store,
                         tta=True, evaluate_test=False)
    print(f"EXPLORE | {name} | val {100 * s['final_val_acc']:.2f}% | val TTA {100 * s['final_val_acc_tta']:.2f}% | "
          f"{s['train_seconds']:.1f} s", flush=True)
