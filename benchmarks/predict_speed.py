"""Prediction speed of the stored models with weights (what tools/predict.py runs), with and without test-time
augmentation, and the cost of reading a pickle through the safe unpickler against plain pickle.load.

Usage (from the repository root):
    python benchmarks/predict_speed.py --data-dir DIR     # DIR holds cifar-10-batches-py/

Each model predicts the first --images CIFAR-10 test images through `predictions.predict_labels` (the batches,
normalisation and views that tools/predict.py uses), once to warm up and then --repeats timed passes; images/s is
from the fastest pass. The unpickling rows read test_batch (10,000 images, 30 MB) the same number of times.
Written to {out}/predict_speed_<device>.json and .md.
"""
import argparse
import json
import os
import pickle
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules sit at the repository root, one level above this file
import helpers as H  # noqa: E402
from cifar10_resnet import predictions as P  # noqa: E402
from cifar10_resnet import report  # noqa: E402
from cifar10_resnet import safe_pickle  # noqa: E402
from cifar10_resnet.store import ResultsStore  # noqa: E402


def fastest(run, repeats: int) -> float:
    """The shortest wall time of `repeats` calls of `run`, after one untimed call (allocations, kernel choice)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("CIFAR10_DATA", "data"))
    # about 90 images/s with four views on 2 CPU cores: 1,024 images keep each pass under a minute
    p.add_argument("--images", type=int, default=10_000 if cuda else 1024, help="test images per timed pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes (the fastest counts)")
    p.add_argument("--models", default=f"{P.DEFAULT_MODEL},model 6", help="stored runs with weights")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()

    device = H.pick_device()
    engine, name = H.Engine.for_device(device), H.device_name(device)
    data = H.prepare_data(args.data_dir)
    x = data.test[0][:args.images]
    networks, store = H.notebook_networks(P.NOTEBOOK), ResultsStore(ROOT / "results")
    print(f"{name} | torch {torch.__version__} | {engine.precision} | {len(x)} images x {args.repeats} passes")

    rows = []
    for run in args.models.split(","):
        model, summary = P.stored_model(store, run, networks)
        model, config = engine.prepare(model), summary["config"]
        for tta in (False, True):
            views = H.Recipe.of(config).tta_views if tta else 1
            seconds = fastest(lambda: P.predict_labels(model, x, data.mean, data.std, engine, config, tta),
                              args.repeats)
            rows.append({"model": run, "views": views, "img/s": len(x) / seconds,
                         "s per 10,000 images": 10_000 * seconds / len(x),
                         "recipe's own": tta == bool(config.get("tta", False))})
            print(f"  {run}, {views} view(s): {len(x) / seconds:.1f} img/s", flush=True)

    batch = Path(args.data_dir) / H.CIFAR_FOLDER / "test_batch"

    def plain():
        with open(batch, "rb") as f:
            pickle.load(f, encoding="latin1")

    reading = {"pickle.load": fastest(plain, args.repeats),
               "safe_pickle.load": fastest(lambda: safe_pickle.load(batch), args.repeats)}
    print("  reading test_batch: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in reading.items()))

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": name, "torch": torch.__version__, "precision": engine.precision,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args)}
    (out / f"predict_speed_{slug}.json").write_text(
        json.dumps({**meta, "rows": rows, "reading_test_batch_s": reading}, indent=2) + "\n")
    shown = pd.DataFrame([{"model": r["model"], "views": r["views"], "img/s": f"{r['img/s']:.1f}",
                           "s per 10,000 images": f"{r['s per 10,000 images']:.1f}",
                           "the recipe's own": "yes" if r["recipe's own"] else "no"} for r in rows])
    head = (f"# Prediction speed on {name}\n\ntorch {meta['torch']}, {meta['precision']}, {meta['date']}; "
            f"{len(x):,} CIFAR-10 test images per pass, the fastest of {args.repeats} after a warm-up, through "
            f"`predictions.predict_labels` (tools/predict.py's path, batches of {H.EVAL_BATCH}).\n\n")
    reads = (f"\nReading test_batch (10,000 images): pickle.load {reading['pickle.load'] * 1000:.0f} ms, "
             f"safe_pickle.load {reading['safe_pickle.load'] * 1000:.0f} ms (fastest of {args.repeats}).\n")
    (out / f"predict_speed_{slug}.md").write_text(head + report.markdown_table(shown.set_index("model")) + "\n"
                                                 + reads)
    print(f"wrote {out / f'predict_speed_{slug}.json'} and .md")


if __name__ == "__main__":
    main()
