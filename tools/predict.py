"""Predict the classes of a hidden test set with a stored model and write them as a CSV (ID,Labels).

Usage:   python3 tools/predict.py INPUT --out CSV [--model NAME] [--results DIR] [--data-dir DIR] [--no-tta]
                                  [--device cpu|cuda]

INPUT is a pickle (a dict with "data" and "ids": N x 3072 channel-first rows, the course's 2024 file, or
N x 32 x 32 x 3 channel-last, 2025), a .npy array, or a folder of PNG/JPEG images (ids: the file names). The
network is rebuilt from the notebook's model cells and the run's stored configuration, loaded with its weights and
normalised with the statistics it trained with, which its summary records (a run stored before runs recorded
them reads them from CIFAR-10 in --data-dir); it predicts with its recipe's test-time augmentation unless
--no-tta. Bad input stops with one error and writes nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules sit at the repository root, one level above this file

import helpers as H  # noqa: E402
from cifar10_resnet import predictions as P  # noqa: E402
from cifar10_resnet.checks import BadInput  # noqa: E402
from cifar10_resnet.store import DiskFull, ResultsStore  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a pickle, a .npy array or a folder of PNG/JPEG images")
    p.add_argument("--out", required=True, help="the CSV to write (ID,Labels)")
    p.add_argument("--model", default=P.DEFAULT_MODEL, help=f"a stored run with weights ({P.DEFAULT_MODEL!r})")
    p.add_argument("--results", default=str(ROOT / "results"), help="the results folder (default: results/)")
    p.add_argument("--data-dir", help="holds cifar-10-batches-py/: only for a run that records no normalisation")
    p.add_argument("--no-tta", action="store_true", help="one view per image instead of the recipe's views")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when there is one, else cpu")
    args = p.parse_args(argv)
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise BadInput("--device cuda: this machine has no CUDA device; use --device cpu (or leave it out)")
        out = P.check_out(args.out, args.input)  # before anything is loaded: no prediction is thrown away
        model, summary = P.stored_model(ResultsStore(args.results), args.model, H.notebook_networks(P.NOTEBOOK))
        images = P.read_images(args.input)  # every check of the input before the data and the model are prepared
        stats = P.normalisation(summary, args.data_dir)  # as the run recorded them: no CIFAR-10 needed
        engine = H.Engine.for_device(args.device or H.pick_device())
        tta = summary["config"].get("tta", False) and not args.no_tta
        print(f"model: {args.model} from {args.results}/ ({P.accuracy_text(summary)})")
        P.write_predictions(images, out, engine.prepare(model), summary["config"], stats, engine, tta)
    except (BadInput, DiskFull) as error:  # bad input, a data folder that fails its checks, a pickle not plain data
        raise SystemExit(f"error: {error}") from None
    except OSError as error:  # the CSV's folder not writable, a file vanishing: the file and the reason
        raise SystemExit(f"error: {error.filename or args.out}: {error.strerror or error}; nothing was "
                         f"written") from None


if __name__ == "__main__":
    main()
