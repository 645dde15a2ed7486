"""What the objects of an instance run get wrong, by kind: of the true objects not found at IoU 0.5, those left
(mostly) background, those merged into a predicted object that also covers another true object, and those outlined
too poorly; of the predicted objects that match none, those lying (mostly) in the background, those merging true
objects and those that are a part of one; and the AP a run would score without the true objects under `--small` pixels.

    snakemake --cores 2 --configfile bench/dsb2018_instances.yaml --until evaluate   # the run (about 15 minutes)
    python bench/instance_errors.py results/dsb2018_instances dsb2018_instances      # its results folder, experiment

Counts the test split's images (`--split`), slice by slice, matched as `unetflow.evaluate.object_metrics` matches
(one to one, IoU 0.5). AP is StarDist's pooled TP / (TP + FP + FN). Run it from the folder the workflow ran in (the
manifest's paths are relative to it).
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.folds import ids_in  # noqa: E402
from unetflow.evaluate.object_metrics import MATCH_THRESHOLD, overlap_table  # noqa: E402
from unetflow.instances.targets import object_ids  # noqa: E402
from unetflow.io.prediction_files import prediction_path, read_instance_mask  # noqa: E402
from unetflow.io.sources import read_source_mask  # noqa: E402

MERGED_SHARE = 0.2  # a predicted object holding this share of each of two true objects merged them


def matched(table: dict) -> tuple[np.ndarray, np.ndarray]:
    """(true objects matched, predicted objects matched): a partner with IoU at least 0.5, the one the evaluation's
    one-to-one assignment pairs (over 0.5 at most one partner can pass)."""
    hit = table["iou"] >= MATCH_THRESHOLD
    return hit.any(1), hit.any(0)


def slice_errors(truth: np.ndarray, predicted: np.ndarray, small: int) -> Counter:
    """The counts of one slice's matches and errors by kind (see the module docstring)."""
    table = overlap_table(truth, predicted)
    true_hit, pred_hit = matched(table)
    inter, gt_area, pred_area = table["inter"], table["gt_area"], table["pred_area"]
    covered = inter.sum(1) / np.maximum(gt_area, 1)
    best = inter.argmax(1) if inter.size else np.zeros(len(gt_area), int)
    holds = (inter >= MERGED_SHARE * gt_area[:, None]).sum(0) if inter.size else np.zeros(0, int)
    counts = Counter(tp=int(true_hit.sum()), small_true=int((gt_area < small).sum()),
                     small_tp=int((true_hit & (gt_area < small)).sum()))
    for index in np.flatnonzero(~true_hit):
        kind = ("fn_background" if covered[index] < 0.5 else
                "fn_merged" if holds[best[index]] > 1 else "fn_outline")
        counts[kind] += 1
        counts["fn_small"] += int(gt_area[index] < small)
    in_objects = inter.sum(0) / np.maximum(pred_area, 1)
    for index in np.flatnonzero(~pred_hit):
        counts["fp_background" if in_objects[index] < 0.5 else "fp_merging" if holds[index] > 1 else "fp_part"] += 1
    return counts


def run_errors(results: Path, experiment: str, split: str, small: int) -> Counter:
    """The error counts of the `split` images of an experiment, summed over their slices."""
    manifest = pd.read_parquet(results / "data" / "manifest.parquet")
    ids = ids_in(pd.read_parquet(results / "split" / "splits.parquet"), split)
    pred_dir = results / experiment / "predict" / "masks"
    total = Counter()
    for row in manifest[manifest["id"].isin(ids)].to_dict("records"):
        truth = object_ids(read_source_mask(row, ids=True))
        predicted = read_instance_mask(prediction_path(pred_dir, row["id"], row, instances=True), row)
        for true_slice, predicted_slice in zip(truth.astype(np.int64), np.asarray(predicted, np.int64)):
            total += slice_errors(true_slice, predicted_slice, small)
    return total


def report(counts: Counter, small: int) -> str:
    """The counts as lines: AP, the misses and false objects by kind, and the AP without the small true objects."""
    fn = counts["fn_background"] + counts["fn_merged"] + counts["fn_outline"]
    fp = counts["fp_background"] + counts["fp_merging"] + counts["fp_part"]
    tp = counts["tp"]
    large_tp, large_fn = tp - counts["small_tp"], fn - counts["fn_small"]
    return "\n".join([
        f"AP@0.5 {tp / max(tp + fp + fn, 1):.4f}: TP {tp}, FP {fp}, FN {fn}",
        f"missed: {counts['fn_background']} left background, {counts['fn_merged']} merged with another, "
        f"{counts['fn_outline']} outlined too poorly; {counts['fn_small']} of them under {small} px "
        f"(of {counts['small_true']} true objects that small, {counts['small_tp']} found)",
        f"false: {counts['fp_background']} in the background, {counts['fp_merging']} merging true objects, "
        f"{counts['fp_part']} parts of one",
        f"AP@0.5 without the true objects under {small} px (false objects as they are): "
        f"{large_tp / max(large_tp + fp + large_fn, 1):.4f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the run's results folder")
    parser.add_argument("experiment", help="the experiment whose predict/masks are counted")
    parser.add_argument("--split", default="test")
    parser.add_argument("--small", type=int, default=30, help="pixels: true objects under this are 'small'")
    args = parser.parse_args()
    print(report(run_errors(args.results, args.experiment, args.split, args.small), args.small))


if __name__ == "__main__":
    main()
