"""How far a run's wrong pixels of one class lie from where they would be right: of the class's false pixels, the
share within 1 and 2 px of the true class, and of its missed pixels, the share within 1 and 2 px of the predicted
class; and the class's Dice with the errors that near forgiven. Errors mostly 1 px from the other side are
disagreements on where the class's edge runs (as on ISBI 2012's membranes), not objects missed or invented.

    snakemake --cores 2 --set-threads train=1 plan=1 --configfile bench/isbi_steps.yaml --until leaderboard
    python bench/edge_errors.py results/isbi_steps steps4500_seed0 --class-index 0   # ISBI's membrane (class 0)

Pools the test split's pixels (`--split`), slice by slice, the ground truth as the evaluation reads it (ignored
pixels left out). Run it from the folder the workflow ran in (the manifest's paths are relative to it).
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.folds import ids_in  # noqa: E402
from unetflow.io.labels import IGNORE_INDEX  # noqa: E402
from unetflow.io.prediction_files import prediction_path, read_class_mask  # noqa: E402
from unetflow.io.sources import source_labels  # noqa: E402

DISTANCES = (1, 2)  # pixels


def slice_edge_errors(truth: np.ndarray, predicted: np.ndarray, index: int) -> Counter:
    """One slice's true positive, false and missed pixels of class `index`, and how many of the false (missed) lie
    within each of DISTANCES of the true (predicted) class."""
    scored = truth != IGNORE_INDEX
    true, found = (truth == index) & scored, (predicted == index) & scored
    false, missed = found & ~true, true & ~found
    counts = Counter(tp=int((true & found).sum()), false=int(false.sum()), missed=int(missed.sum()))
    to_true, to_found = ndimage.distance_transform_edt(~true), ndimage.distance_transform_edt(~found)
    for distance in DISTANCES:
        counts[f"false_{distance}"] = int((false & (to_true <= distance)).sum())
        counts[f"missed_{distance}"] = int((missed & (to_found <= distance)).sum())
    return counts


def run_edge_errors(results: Path, experiment: str, split: str, index: int) -> Counter:
    """`slice_edge_errors` of the `split` images of an experiment, summed over their slices."""
    manifest = pd.read_parquet(results / "data" / "manifest.parquet")
    classes = pd.read_parquet(results / "data" / "classes.parquet")
    ids = ids_in(pd.read_parquet(results / "split" / "splits.parquet"), split)
    pred_dir = results / experiment / "predict" / "masks"
    total = Counter()
    for row in manifest[manifest["id"].isin(ids)].to_dict("records"):
        truth = source_labels(row, classes)[0]
        predicted = read_class_mask(prediction_path(pred_dir, row["id"], row), classes, row)
        for true_slice, predicted_slice in zip(truth, predicted):
            total += slice_edge_errors(true_slice, predicted_slice, index)
    return total


def report(counts: Counter) -> str:
    """The counts as lines: the Dice, then per distance the shares of errors that near and the Dice without them."""
    tp, false, missed = counts["tp"], counts["false"], counts["missed"]
    lines = [f"Dice {2 * tp / max(2 * tp + false + missed, 1):.4f}: {false} false and {missed} missed pixels"]
    for distance in DISTANCES:
        near_false, near_missed = counts[f"false_{distance}"], counts[f"missed_{distance}"]
        rest = false - near_false + missed - near_missed
        lines.append(f"within {distance} px: {near_false / max(false, 1):.1%} of the false, "
                     f"{near_missed / max(missed, 1):.1%} of the missed; Dice without them "
                     f"{2 * tp / max(2 * tp + rest, 1):.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the run's results folder")
    parser.add_argument("experiment", help="the experiment whose predict/masks are counted")
    parser.add_argument("--class-index", type=int, default=1, help="the class (its index in classes.parquet)")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    print(report(run_edge_errors(args.results, args.experiment, args.split, args.class_index)))


if __name__ == "__main__":
    main()
