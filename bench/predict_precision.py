"""Prediction in bf16 against float32 on a finished workflow run: are the masks practically the same?

Predicts the sources of a split (default: test) of a results folder twice with the trained models of one experiment
(`train/fold*/model.pt`) on their stored (preprocessed) arrays, through the workflow's own
`unetflow.infer.predictor.mean_probabilities`, the models' softmax averaged as `Predictor.probabilities` averages it
(the experiment's predict settings: overlap, tile batch, mirroring), once with `predict.precision: fp32` and once
with `bf16`, and prints the share of pixels whose label differs, the mean Dice per class (background included) of
each against the stored labels (mean over units: a 2D image, a page of a stack or a volume, as the evaluate rule
scores them), the largest Dice change, and the prediction time of each (process CPU time on the CPU, wall clock on
CUDA). The verdict applies the bar of `predict.precision: auto`: under 0.1 % of pixels differ and every class's Dice
moves by less than 0.001.

    python bench/predict_precision.py RESULTS [--experiment unet] [--split test] [--mirror] [--device cpu]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.folds import ids_in  # noqa: E402
from unetflow.infer.predictor import mean_probabilities, model_from_weights  # noqa: E402
from unetflow.io.labels import IGNORE_INDEX  # noqa: E402
from unetflow.io.sources import unit_array, units  # noqa: E402
from unetflow.io.store import load_array  # noqa: E402

MAX_PIXEL_SHARE, MAX_DICE_CHANGE = 0.001, 0.001  # the bar of predict.precision: auto


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="the results folder of a finished run (preprocess/, split/, <experiment>/), "
                                            "directly inside the run's working directory")
    parser.add_argument("--experiment", default="unet")
    parser.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--mirror", action="store_true", help="mirroring test-time augmentation (predict.mirror)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def dice_per_class(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of every class 0..K-1 of one case (1 when a class is absent from both), ignored pixels excluded."""
    valid = target != IGNORE_INDEX
    scores = []
    for k in range(num_classes):
        p, t = (pred == k) & valid, (target == k) & valid
        total = p.sum() + t.sum()
        scores.append(1.0 if total == 0 else 2 * (p & t).sum() / total)
    return np.asarray(scores)


def load_models(checkpoints: list[str], device: torch.device) -> tuple[list[torch.nn.Module], list[list[int]]]:
    """The trained models of training checkpoints, ready for inference, and each one's training patch."""
    loaded = [torch.load(path, map_location="cpu", weights_only=True) for path in checkpoints]
    return ([model_from_weights(c["hparams"], c["model"], device) for c in loaded],
            [list(c["patch_size"]) for c in loaded])


def stored_sources(results: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray], list[list[slice]]]:
    """The stored images (C, Z, Y, X) and labels (Z, Y, X) of a split's sources, and each one's units (the slices of
    Z scored as one, `unetflow.io.sources.units`)."""
    table = pd.read_parquet(results / "preprocess" / "manifest.parquet")
    table = table[table["id"].isin(ids_in(pd.read_parquet(results / "split" / "splits.parquet"), split))]
    workdir = results.parent  # stored paths are relative to the workflow's working directory
    rows = table.sort_values("id").to_dict("records")
    return ([load_array(workdir / row["array_path"], "image") for row in rows],
            [load_array(workdir / row["array_path"], "labels") for row in rows],
            [[unit for _, unit in units(row)] for row in rows])


def in_units(arrays: list[np.ndarray], unit_slices: list[list[slice]]) -> list[np.ndarray]:
    """Source arrays (Z, Y, X) cut into their units, all units of all sources in one list."""
    return [unit_array(array, unit) for array, slices in zip(arrays, unit_slices) for unit in slices]


def predict_all(models, images, patches, cfg, device) -> tuple[list[np.ndarray], float]:
    """Label maps (Z, Y, X) of all stored images and the seconds they took."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    labels = [mean_probabilities(models, patches, image, cfg, device).argmax(0).numpy() for image in images]
    return labels, clock() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device, results = torch.device(args.device), Path(args.results)
    images, labels, unit_slices = stored_sources(results, args.split)
    checkpoints = sorted(str(path) for path in (results / args.experiment / "train").glob("fold*/model.pt"))
    models, patches = load_models(checkpoints, device)
    num_classes = models[0].hparams["num_classes"]
    cfg = dict(overlap=args.overlap, batch_size=args.batch_size, mirror=args.mirror)
    predicted, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        predict_all(models, images[:1], patches, dict(cfg, precision=precision), device)  # warm-up
        found, seconds[precision] = predict_all(models, images, patches, dict(cfg, precision=precision), device)
        predicted[precision] = in_units(found, unit_slices)
    truth = in_units(labels, unit_slices)
    valid = [target != IGNORE_INDEX for target in truth]
    differing = sum(int(((a != b) & v).sum()) for a, b, v in zip(predicted["fp32"], predicted["bf16"], valid))
    share = differing / sum(int(v.sum()) for v in valid)
    dice = {precision: np.mean([dice_per_class(pred, target, num_classes) for pred, target in zip(found, truth)],
                               axis=0)
            for precision, found in predicted.items()}
    change = float(np.abs(dice["bf16"] - dice["fp32"]).max())
    print(f"{results} experiment {args.experiment}: {len(images)} {args.split} sources ({len(truth)} units), "
          f"{len(models)} model(s), patches "
          f"{patches}, mirror {args.mirror}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"pixels whose label differs, bf16 vs fp32: {differing} of {sum(int(v.sum()) for v in valid)} "
          f"({share:.4%})")
    for k in range(num_classes):
        print(f"class {k}: Dice fp32 {dice['fp32'][k]:.5f}  bf16 {dice['bf16'][k]:.5f}  "
              f"change {dice['bf16'][k] - dice['fp32'][k]:+.5f}")
    print(f"prediction time: fp32 {seconds['fp32']:.2f} s, bf16 {seconds['bf16']:.2f} s "
          f"(bf16 {seconds['fp32'] / seconds['bf16']:.2f}x faster)")
    verdict = share < MAX_PIXEL_SHARE and change < MAX_DICE_CHANGE
    print(f"bf16 meets the bar of predict.precision auto (< {MAX_PIXEL_SHARE:.1%} pixels, |Dice change| < "
          f"{MAX_DICE_CHANGE}): {'yes' if verdict else 'no'}")


if __name__ == "__main__":
    main()
