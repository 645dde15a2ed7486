"""Benchmark unetflow.evaluate.metrics.case_metrics against MONAI 1.6.1 metric objects on the same masks.

Ours computes every metric (counts, dice, iou, precision, recall, hd95, assd, nsd) per case;
MONAI runs DiceMetric + MeanIoU + HausdorffDistanceMetric(percentile=95) + SurfaceDiceMetric on
one-hot tensors built before timing, the whole batch in one call per metric. Both sides run
alternately `--repeats` times and the best time of each is reported.

Usage: python bench/metrics_vs_monai.py [--cases 50] [--size 256] [--classes 3] [--repeats 3] [--depth D]
       [--spacing [D] R C]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDiceMetric
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.evaluate.metrics import case_metrics  # noqa: E402

COMPARED = ("dice", "iou", "hd95", "nsd")


def blob_pair(rng: np.random.Generator, size: int, num_classes: int, depth: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (pred, gt) pair of size x size label maps (depth x size x size with a depth): gt = argmax of
    smoothed noise, pred = gt's noise plus smaller perturbation."""
    shape = (depth, size, size) if depth else (size, size)
    smooth = lambda: ndimage.gaussian_filter(rng.random((num_classes, *shape)), sigma=(0, *[8] * len(shape)))  # noqa: E731
    gt_field = smooth()
    pred_field = gt_field + 0.5 * smooth()
    return pred_field.argmax(axis=0), gt_field.argmax(axis=0)


def one_hot_batch(labels: list[np.ndarray], num_classes: int) -> torch.Tensor:
    """(B, K, *spatial) float tensor from a list of label maps."""
    stacked = np.stack(labels)
    classes = np.arange(num_classes).reshape(1, num_classes, *[1] * (stacked.ndim - 1))
    return torch.from_numpy((stacked[:, None] == classes).astype(np.float32))


def run_ours(preds: list[np.ndarray], gts: list[np.ndarray], num_classes: int, spacing) -> dict[str, np.ndarray]:
    """(B, K) arrays of our metrics for every case."""
    rows = [case_metrics(p, g, num_classes, spacing=spacing) for p, g in zip(preds, gts)]
    return {key: np.array([[row[key] for row in case] for case in rows], dtype=float) for key in COMPARED}


def run_monai(y_pred: torch.Tensor, y: torch.Tensor, spacing) -> dict[str, np.ndarray]:
    """(B, K) arrays of MONAI's metrics on the one-hot batch."""
    common = {"include_background": True, "reduction": "none"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "dice": DiceMetric(**common)(y_pred, y),
            "iou": MeanIoU(**common)(y_pred, y),
            "hd95": HausdorffDistanceMetric(percentile=95, **common)(y_pred, y, spacing=spacing),
            "nsd": SurfaceDiceMetric([1.0] * y.shape[1], **common)(y_pred, y, spacing=spacing),
        }
    return {key: value.double().numpy() for key, value in values.items()}


def timed(function, *args) -> tuple[float, dict[str, np.ndarray]]:
    """Wall time in seconds and the result of one call."""
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=0, help="> 0: 3D cases of depth x size x size")
    parser.add_argument("--spacing", type=float, nargs="+", default=None,
                        help="pixel spacing per axis ((depth,) row, col); unequal values or 3D use the k-d tree")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    rng = np.random.default_rng(args.seed)
    preds, gts = zip(*(blob_pair(rng, args.size, args.classes, args.depth) for _ in range(args.cases)))
    y_pred, y = one_hot_batch(list(preds), args.classes), one_hot_batch(list(gts), args.classes)

    ours_times, monai_times = [], []
    for _ in range(args.repeats):
        seconds, ours = timed(run_ours, preds, gts, args.classes, args.spacing)
        ours_times.append(seconds)
        seconds, reference = timed(run_monai, y_pred, y, args.spacing)
        monai_times.append(seconds)

    ours_rate, monai_rate = args.cases / min(ours_times), args.cases / min(monai_times)
    print(f"{args.cases} cases {f'{args.depth}x' if args.depth else ''}{args.size}x{args.size}, "
          f"{args.classes} classes (background included), "
          f"spacing {args.spacing or 'unit'}, best of {args.repeats}, torch and OpenCV threads 1")
    print(f"{'implementation':<40}{'cases/s':>10}")
    print(f"{'unetflow case_metrics (all metrics)':<40}{ours_rate:>10.1f}")
    print(f"{'MONAI Dice+IoU+HD95+SurfaceDice':<40}{monai_rate:>10.1f}")
    print(f"{'speed-up (ours / MONAI)':<40}{ours_rate / monai_rate:>10.2f}")
    print(f"{'metric':<10}{'max |ours - MONAI|':>20}{'MONAI non-finite':>18}")
    for key in COMPARED:
        finite = np.isfinite(reference[key])
        difference = np.abs(ours[key][finite] - reference[key][finite]).max(initial=0.0)
        print(f"{key:<10}{difference:>20.2e}{int((~finite).sum()):>18}")


if __name__ == "__main__":
    main()
