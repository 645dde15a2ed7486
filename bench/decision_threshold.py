"""Would another decision threshold than the argmax serve a two-class run's Dice? The experiment's package predicts
the validation and test images (as `predict` does, on each file's grid); a pixel is given class `--class-index` where
its probability exceeds each threshold of THRESHOLDS (0.5 is the argmax), and the pooled Dice of both classes is
printed per threshold for both splits, with the threshold validation would choose (the best mean Dice of the two).

    snakemake --cores 2 --configfile bench/isbi_steps.yaml --until leaderboard   # or any two-class run
    python bench/decision_threshold.py results/isbi_steps steps4500_seed0 --class-index 0   # ISBI's membrane

The ground truth is read as the evaluation reads it (ignored pixels left out), slice by slice. Run it from the folder
the workflow ran in (the manifest's paths are relative to it).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.folds import ids_in  # noqa: E402
from unetflow.infer.predictor import Predictor  # noqa: E402
from unetflow.io.labels import IGNORE_INDEX  # noqa: E402
from unetflow.io.sources import source_labels  # noqa: E402

THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def split_counts(predictor: Predictor, results: Path, split: str, index: int) -> np.ndarray:
    """(threshold, [pixels of class `index` found and true, found, true, scored]) pooled over a split's images, as
    the experiment's package (`predictor`) predicts them."""
    manifest = pd.read_parquet(results / "data" / "manifest.parquet")
    classes = pd.read_parquet(results / "data" / "classes.parquet")
    ids = ids_in(pd.read_parquet(results / "split" / "splits.parquet"), split)
    counts = np.zeros((len(THRESHOLDS), 4))
    for row in manifest[manifest["id"].isin(ids)].to_dict("records"):
        truth, probability = source_labels(row, classes)[0], predictor.source_probabilities(row)[index]
        scored = truth != IGNORE_INDEX
        true = (truth == index) & scored
        for number, threshold in enumerate(THRESHOLDS):
            found = (probability > threshold) & scored
            counts[number] += [(found & true).sum(), found.sum(), true.sum(), scored.sum()]
    return counts


def dice_table(counts: np.ndarray) -> pd.DataFrame:
    """The Dice of the class and of the other class at each threshold, from `split_counts`."""
    both, found, true, scored = counts.T
    other_both = scored - found - true + both
    return pd.DataFrame({"threshold": THRESHOLDS, "class": 2 * both / np.maximum(found + true, 1),
                         "other": 2 * other_both / np.maximum(2 * scored - found - true, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the run's results folder")
    parser.add_argument("experiment", help="the experiment whose package predicts")
    parser.add_argument("--class-index", type=int, default=1, help="the class thresholded (its index)")
    args = parser.parse_args()
    predictor = Predictor.load(args.results / args.experiment / "package" / f"{args.experiment}.pt", "cpu")
    tables = {split: dice_table(split_counts(predictor, args.results, split, args.class_index))
              for split in ("val", "test")}
    table = tables["val"].merge(tables["test"], on="threshold", suffixes=("_val", "_test"))
    print(table.to_string(index=False, float_format="%.4f"))
    chosen = table.loc[(table["class_val"] + table["other_val"]).idxmax()]
    print(f"validation chooses {chosen['threshold']:g}: test Dice {chosen['class_test']:.4f} / "
          f"{chosen['other_test']:.4f} (the argmax: {table.loc[table['threshold'] == 0.5, 'class_test'].iloc[0]:.4f} / "
          f"{table.loc[table['threshold'] == 0.5, 'other_test'].iloc[0]:.4f})")


if __name__ == "__main__":
    main()
