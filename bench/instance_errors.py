"""What the objects of an instance run get wrong, by kind, and the AP it would score without the true objects under
`--small` pixels. A true object not found at IoU 0.5 is left background (under half of it predicted), merged (the
predicted object holding most of it holds a fifth of another true object too), split (two or more predicted objects
lie mostly in it) or outlined too poorly (one predicted object, IoU under 0.5); a predicted object that matches none
lies in the background (under half of it in true objects), merges true objects, is a part of a split one, or
outlines one too poorly.

    snakemake --cores 2 --configfile bench/dsb2018_instances.yaml --until evaluate   # the run (about 15 minutes)
    python bench/instance_errors.py results/dsb2018_instances unet   # its results folder and experiment

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


def object_kinds(table: dict, true_hit: np.ndarray, pred_hit: np.ndarray) -> tuple[list[str], list[str]]:
    """The kinds of a slice's missed true objects and of its false predicted ones (see the module docstring)."""
    inter, gt_area, pred_area = table["inter"], table["gt_area"], table["pred_area"]
    if inter.size == 0:
        return ["background"] * int((~true_hit).sum()), ["background"] * int((~pred_hit).sum())
    covered, inside = inter.sum(1) / gt_area, inter.sum(0) / pred_area
    holds = (inter >= MERGED_SHARE * gt_area[:, None]).sum(0)  # true objects each predicted one holds a share of
    home = inter.argmax(0)  # the true object each predicted one lies in most
    pieces = np.bincount(home[inside >= 0.5], minlength=len(gt_area))  # predicted objects lying mostly in each
    missed = ["background" if covered[index] < 0.5 else "merged" if holds[inter[index].argmax()] > 1 else
              "split" if pieces[index] > 1 else "outline" for index in np.flatnonzero(~true_hit)]
    false = ["background" if inside[index] < 0.5 else "merged" if holds[index] > 1 else
             "split" if pieces[home[index]] > 1 else "outline" for index in np.flatnonzero(~pred_hit)]
    return missed, false


def slice_errors(truth: np.ndarray, predicted: np.ndarray, small: int) -> Counter:
    """The counts of one slice's matches and errors by kind (see the module docstring)."""
    table = overlap_table(truth, predicted)
    true_hit, pred_hit = matched(table)
    missed, false = object_kinds(table, true_hit, pred_hit)
    small_true = table["gt_area"] < small
    counts = Counter(tp=int(true_hit.sum()), small_true=int(small_true.sum()),
                     small_tp=int((true_hit & small_true).sum()), fn_small=int((~true_hit & small_true).sum()))
    counts.update(f"fn_{kind}" for kind in missed)
    counts.update(f"fp_{kind}" for kind in false)
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
    kinds = ("background", "merged", "split", "outline")
    fn, fp = (sum(counts[f"{side}_{kind}"] for kind in kinds) for side in ("fn", "fp"))
    tp = counts["tp"]
    large_tp, large_fn = tp - counts["small_tp"], fn - counts["fn_small"]
    return "\n".join([
        f"AP@0.5 {tp / max(tp + fp + fn, 1):.4f}: TP {tp}, FP {fp}, FN {fn}",
        f"missed: {counts['fn_background']} left background, {counts['fn_merged']} merged with another, "
        f"{counts['fn_split']} split in parts, {counts['fn_outline']} outlined too poorly; {counts['fn_small']} of "
        f"them under {small} px (of {counts['small_true']} true objects that small, {counts['small_tp']} found)",
        f"false: {counts['fp_background']} in the background, {counts['fp_merged']} merging true objects, "
        f"{counts['fp_split']} parts of a split one, {counts['fp_outline']} outlining one too poorly",
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
