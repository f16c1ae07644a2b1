"""Training speed of the project's engine against a naive PyTorch loop, for Option 1, Option 2 and ResNet-18.

Usage (from the repository root):
    python benchmarks/train_speed.py --data-dir DIR              # DIR holds cifar-10-batches-py/
    python benchmarks/train_speed.py --data-dir DIR --compile    # also measure torch.compile's cost and gain

Both sides train the same images at batch size 128 with SGD (lr 0.01, momentum 0.9), random crop + flip:
  engine  helpers.Engine + helpers.Batches + the step of helpers.fit: uint8 data kept on the device, augmentation
          on the device for whole batches, bf16/fp16 autocast and channels_last on CUDA, no .item() per step.
          Three variants in the same run: eager; the training step replayed as a CUDA graph (checked against
          eager first); the graph with the whole epoch augmented in one pass. The graph variants need CUDA
          with bf16 and show n/a elsewhere. The fastest of them gives the engine columns. Beside them,
          "fp16 eager": the path a T4 takes (fp16 autocast, gradient scaler, eager step), forced on this card
          with precision "fp16" (n/a without CUDA); it is shown, never picked as the engine's rate.
          "replay-only" replays the captured step back to back on its static buffers: the GPU's own rate
          for the step, against which the loop's rate shows how much the host (data preparation, schedule,
          Python) costs.
  naive   the usual tutorial loop: PIL images through torchvision transforms in DataLoader workers, fp32,
          .to(device) per batch, loss.item() per batch.
Reported per model: images/s and s/epoch (extrapolated to 45,000 images), speed-up, FLOPs per training image
(forward + backward, convolutions and matmuls as counted by FlopCounterMode), achieved TFLOP/s and, on a known
GPU, the fraction of its dense bf16 peak. Written to {out}/train_speed_<device>.json and .md.
The six-experiment estimate is training only (no per-epoch validation pass), extrapolated from the engine rate.
"""
import argparse
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # helpers.py sits at the repository root, one level above this file
import helpers  # noqa: E402
from cifar10_resnet import report  # noqa: E402

BATCH, LR, MOMENTUM, EPOCH_IMAGES = 128, 0.01, 0.9, 45_000  # the six experiments' batch size, lr and split
NAIVE_WARMUP_BATCHES = 2  # eager fp32 has nothing to compile: two batches cover allocator/cuDNN/oneDNN set-up
# Dense bf16 tensor-core peaks (TFLOP/s), matched in order as whole words of get_device_name(). The H100 SXM
# reports itself as "H100 80GB HBM3", so "H100 PCIe" is tried first and a bare "H100" means SXM. T4 and V100
# have no bf16 (the engine uses fp16 there), so their fp16 peak stands in. \b keeps "L4" from matching "L40S".
PEAKS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L4", 121.0),
         ("T4", 65.0), ("V100", 125.0), ("A10G", 70.0)]


def peak_tflops(device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""  # a CPU has no entry
    return next((p for key, p in PEAKS if re.search(rf"\b{re.escape(key)}\b", name)), None)


def clock(device):
    """Wall time after the GPU has finished all queued work (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def epoch(step, batches) -> None:
    """One pass of the project's step over `batches`, as `helpers.fit`'s inner loop makes it (no schedule)."""
    step.sums.reset()
    for images, labels in batches:
        step(images, labels)


def bench_engine(build, x, y, mean, std, device, args, variant=(False, False, None)):
    """The project's path: eager, or with the training step replayed as a CUDA graph (`graphs`), with the
    augmentation per batch or for the whole epoch in one pass (`whole_epoch`). A first epoch is run untimed:
    it holds torch.compile's work (and the recompile for the smaller last batch), cuDNN's algorithm choice,
    the graph's warm-up, capture and check, and the allocator's growth. Returns None when the device cannot
    take the path (a CUDA graph on a CPU, fp16 on a CPU). `variant`: (graphs, whole_epoch, precision)."""
    graphs, whole_epoch, precision = variant
    if precision is not None and device.type != "cuda":
        return None
    engine = helpers.Engine.for_device(device, compile=args.compile, graphs=graphs, precision=precision)
    if graphs and not engine.graph_plan()[0]:
        return None
    model = build()
    module = engine.prepare(model)
    optimizer = engine.optimizer(model.parameters(), lr=LR, momentum=MOMENTUM)
    batches = helpers.Batches((x, y), BATCH, (mean, std), device, shuffle=True, augment=True,
                              whole_epoch=whole_epoch)
    start = clock(device)
    module.train()
    recipe = helpers.Recipe.of({"epochs": args.epochs, "lr": LR, "batch_size": BATCH, "seed": 0, "momentum": MOMENTUM})
    # eager, or a checked CUDA graph
    step = helpers.make_step(module, optimizer, engine.scaler(), recipe, engine, batches)
    captured, kind = step.graph, step.kind
    epoch(step, batches)
    warmup = clock(device) - start
    start = clock(device)
    for _ in range(args.epochs):
        epoch(step, batches)
    seconds = clock(device) - start
    replay_ips = None
    if captured is not None and captured.graph is not None:
        # The same number of steps as the timed epochs, replayed back to back on the static buffers: no data
        # preparation, no schedule, no Python between steps. What the GPU alone needs for a step, so that the
        # gap to the loop's rate is the host's share.
        steps = args.epochs * (len(x) // BATCH)
        start = clock(device)
        for _ in range(steps):
            captured.graph.replay()
        replay_ips = steps * BATCH / (clock(device) - start)
    # Compile cost = what the first epoch took beyond a steady epoch; without --compile there is none.
    compile_s = max(0.0, warmup - seconds / args.epochs) if args.compile else None
    return {"seconds": seconds, "images": args.epochs * len(x), "compile_s": compile_s, "path": kind,
            "img/s": args.epochs * len(x) / seconds, "replay img/s": replay_ips,
            "precision": engine.precision}


# The engine's variants, timed in the same run: (column label, CUDA graph, whole-epoch augmentation, precision
# forced or None for the card's own). The last is the T4's path, measured on this card.
VARIANTS = [("eager", False, False, None), ("graph", True, False, None),
            ("graph+epoch-aug", True, True, None), ("fp16 eager", False, False, "fp16")]


class PILCifar(Dataset):
    """What torchvision's CIFAR10 does (HWC uint8 array -> PIL image -> transform), built from the tensors that
    helpers.load_cifar10 read, because torchvision's md5 check refuses re-encoded offline copies."""

    def __init__(self, x, y, transform):
        self.x = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # (N, 32, 32, 3) as torchvision keeps it
        self.y, self.transform = y.tolist(), transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def bench_naive(build, x, y, mean, std, device, args):
    """The usual loop. The DataLoader's workers start again each epoch (no persistent_workers, its default),
    which is part of what every epoch of this loop costs, so it stays inside the timing."""
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(mean.tolist(), std.tolist())])
    loader = DataLoader(PILCifar(x, y, transform), batch_size=BATCH, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda")
    model, criterion = build().to(device), torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def run(max_batches=None):
        model.train()
        running = 0.0  # the running loss a training log would print
        for step, (images, labels) in enumerate(loader):
            if step == max_batches:
                break
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            running += loss.item()  # the per-step sync this loop is usually written with
        return running

    run(NAIVE_WARMUP_BATCHES)
    start = clock(device)
    for _ in range(args.epochs):
        run()
    return {"seconds": clock(device) - start, "images": args.epochs * len(x)}


def main():
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("CIFAR10_DATA", "data"))
    # A CPU does ~30 GFLOP/s here: 512 images keep the run to minutes while still covering several batches.
    p.add_argument("--images", type=int, default=45_000 if cuda else 512, help="training images per timed epoch")
    p.add_argument("--epochs", type=int, default=2 if cuda else 1, help="timed epochs (after one warm-up)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="naive DataLoader workers")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's model")
    p.add_argument("--models", default="option1,option2,resnet18")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    networks = helpers.notebook_networks(ROOT / "mini_project.ipynb")  # the notebook's registry: arch -> builder
    unknown = [key for key in args.models.split(",") if key not in networks]
    if unknown:
        p.error(f"--models: {', '.join(unknown)} names no network; the registered ones: {', '.join(networks.labels())}")

    device = helpers.pick_device()
    name, peak = helpers.device_name(device), peak_tflops(device)
    # The project's 45k/5k split (same seed) and its training-split statistics, then the first --images images.
    raw = helpers.load_cifar10(args.data_dir)
    train_x, train_y, _, _ = helpers.split_train_val(raw["train_x"], raw["train_y"], 5000, seed=0)
    mean, std = helpers.channel_stats(train_x)
    x, y = train_x[:args.images], train_y[:args.images]
    print(f"{name} | torch {torch.__version__} | {len(x)} images x {args.epochs} timed epoch(s) | "
          f"batch {BATCH} | workers {args.workers} | compile {args.compile}")

    rows = []
    for key in args.models.split(","):
        build = networks.builder({"arch": key})
        timed = {}
        for label, graphs, whole_epoch, precision in VARIANTS:
            helpers.set_seed(0)
            timed[label] = bench_engine(build, x, y, mean, std, device, args, (graphs, whole_epoch, precision))
        helpers.set_seed(0)
        naive = bench_naive(build, x, y, mean, std, device, args)
        flops = helpers.flops_per_image(build(), backward=True, batch=BATCH)
        ran = {label: t for label, t in timed.items() if t is not None}
        own = [label for label, _, _, precision in VARIANTS if precision is None and label in ran]
        best = max(own, key=lambda label: ran[label]["img/s"])  # the fastest path of the card's own precision
        e_ips, n_ips = ran[best]["img/s"], naive["images"] / naive["seconds"]
        tflops = flops * e_ips / 1e12
        rows.append({
            "model": networks[key].label, "params": helpers.count_parameters(build()),
            **{f"{label} img/s": t["img/s"] if t else None for label, t in timed.items()},
            "replay-only img/s": (timed["graph"] or {}).get("replay img/s"),
            "naive img/s": n_ips, "fastest": best, "speed-up": e_ips / n_ips,
            "engine s/epoch": EPOCH_IMAGES / e_ips, "naive s/epoch": EPOCH_IMAGES / n_ips,
            "compile s": ran[best]["compile_s"],
            "GFLOP/img": flops / 1e9, "engine TFLOP/s": tflops,
            "peak TFLOP/s": peak, "% of peak": 100 * tflops / peak if peak else None,
            "precision": ran[best]["precision"], "paths": {label: t["path"] for label, t in ran.items()},
        })
        print(f"  {key}: " + ", ".join(f"{label} {t['img/s']:.1f} img/s ({t['path']})" for label, t in ran.items())
              + f", naive {n_ips:.1f} img/s", flush=True)

    # Table strings: fixed digits, thousands separators, 'n/a' where there is no value (CPU, unknown GPU).
    formats = {"params": ",", **{f"{label} img/s": ".1f" for label, *_ in VARIANTS},
               "replay-only img/s": ".1f", "naive img/s": ".1f",
               "fastest": "", "speed-up": ".2f", "engine s/epoch": ".2f", "naive s/epoch": ".1f",
               "compile s": ".1f", "GFLOP/img": ".2f", "engine TFLOP/s": ".3f", "peak TFLOP/s": "g",
               "% of peak": ".1f"}
    shown = pd.DataFrame([{"model": r["model"], **{c: "n/a" if r[c] is None else format(r[c], f)
                                                   for c, f in formats.items()}} for r in rows])
    print(shown.to_string(index=False))

    # Models 1-2 train Option 1 and models 3-6 Option 2, 100 epochs of 45,000 images each (notebook Table 2);
    # each run compiles once when --compile is given.
    by = {r["model"]: r for r in rows}
    run_s = lambda m: 100 * by[m]["engine s/epoch"] + (by[m]["compile s"] or 0.0)  # noqa: E731
    estimate = 2 * run_s("Option 1") + 4 * run_s("Option 2") if {"Option 1", "Option 2"} <= set(by) else None
    note = (f"Six 100-epoch experiments (2x Option 1 + 4x Option 2, 45,000 images/epoch): ~{estimate / 3600:.2f} h "
            f"of training, extrapolated from the engine rate measured on {len(x)} images x {args.epochs} epoch(s); "
            f"per-epoch validation not included." if estimate is not None else "")
    print(note)

    # a torch.compile run is kept beside the plain one of the same card, not over it
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ("-compile" if args.compile else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": name, "torch": torch.__version__, "precision": rows[0]["precision"],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
            "six_experiments_estimate_s": estimate}
    (out / f"train_speed_{slug}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    head = (f"# Training speed on {name}\n\ntorch {meta['torch']}, engine precision {meta['precision']}, "
            f"{meta['date']}, {len(x)} images x {args.epochs} timed epoch(s), batch {BATCH}, "
            f"{args.workers} workers, compile {args.compile}; s/epoch extrapolated to {EPOCH_IMAGES:,} images; "
            f"engine columns = the fastest path that ran. Paths: "
            + "; ".join(f"{r['model']}: " + ", ".join(f"{k} = {v}" for k, v in r["paths"].items()) for r in rows)
            + ".\n\n")
    table = report.markdown_table(shown.set_index("model"))
    (out / f"train_speed_{slug}.md").write_text(f"{head}{table}\n" + (f"\n{note}\n" if note else ""))
    print(f"wrote {out / f'train_speed_{slug}.json'} and .md")


if __name__ == "__main__":
    main()
