"""How the weight-map objects are seeded, on a trained instance model: the peaks of the smoothed distance to the
background (h-maxima; objects across wide necks merged: the instance mode's seeds) against the foreground at least
2 px from the background (its seeds before), on the validation and test images of a run, the same softmax for both.

    snakemake --cores 2 --configfile bench/dsb2018_instances.yaml --until evaluate   # the run (about 15 minutes)
    python bench/instance_seeds.py results/dsb2018_instances          # its results folder (data, split, unet)
    python bench/instance_seeds.py results/dsb2018_instances --grid   # also heights x smoothings, neck shares
    python bench/instance_seeds.py results/dsb2018_instances --sizes 0 16 21 32   # min_object_size instead of auto
    python bench/instance_seeds.py results/dsb2018_instances --probabilities 0.5 0.6 0.7   # object probabilities

Prints per split and seeding: AP at IoU 0.5 pooled over the images (StarDist's TP / (TP + FP + FN)), TP, FP, FN and
the mean AJI, PQ and mAP (IoU 0.5-0.9) per image (objects under the package's min_object_size dropped, or each of
`--sizes`; object pixels those over the package's object probability, or each of `--probabilities`). Heights,
smoothings, neck shares, sizes and object probabilities are to be chosen on `val`, reported on `test`. Run it from the
folder the workflow ran in (the manifest's paths are relative to it).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.segmentation import watershed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.folds import ids_in  # noqa: E402
from unetflow.evaluate.object_metrics import object_metrics  # noqa: E402
from unetflow.infer.object_probability import predicted_cases  # noqa: E402
from unetflow.infer.predictor import Predictor  # noqa: E402
from unetflow.instances import objects  # noqa: E402

GRID = [(height, smoothing, objects.NECK_SHARE) for height in (0.25, 0.5, 1, 2) for smoothing in (0, 0.5, 1, 1.5)] + [
    (objects.SEED_HEIGHT, objects.SEED_SMOOTHING, share) for share in (0.5, 0.6, 0.7, 0.9, float("inf"))]


def core_seeded(probs: np.ndarray, min_size: int) -> np.ndarray:
    """The seeds before: blobs of the foreground at least 2 px from the background, grown as the mode grows its."""
    foreground = probs[0] < 1 - objects.OBJECT_PROBABILITY
    distance = ndimage.distance_transform_edt(foreground)
    seeds = ndimage.label(distance >= 2, objects.FULL_CONNECTIVITY)[0]
    ids = watershed(-distance, seeds, mask=foreground).astype(np.int32)
    return objects.remove_small_objects(objects.filled_gaps(ids), min_size)


def split_cases(results: Path, predictor: Predictor, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(softmax (K, H, W), true ids) of each 2D source of a split of the run."""
    manifest = pd.read_parquet(results / "data" / "manifest.parquet")
    sources = manifest[manifest["id"].isin(ids_in(pd.read_parquet(results / "split" / "splits.parquet"), split))]
    return [(probs[:, 0], ids[0]) for probs, ids in predicted_cases(predictor, sources)]


def pooled(cases, seeded) -> dict:
    """AP at IoU 0.5 pooled over the cases, TP, FP, FN, mean AJI, PQ and mAP (IoU 0.5-0.9, what the package's
    object probability is chosen by) of the objects `seeded(probs)` finds."""
    scores = pd.DataFrame([object_metrics(ids.astype(np.int64), seeded(probs)) for probs, ids in cases])
    tp, fp, fn = (int(scores[column].sum()) for column in ("object_tp", "object_fp", "object_fn"))
    return dict(ap50=tp / max(tp + fp + fn, 1), tp=tp, fp=fp, fn=fn, aji=scores["aji"].mean(), pq=scores["pq"].mean(),
                map=scores["object_map"].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the results folder of an instance-mode run")
    parser.add_argument("--experiment", default="unet", help="the experiment whose package is scored")
    parser.add_argument("--grid", action="store_true", help="also the h-maxima heights x smoothings of GRID")
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="also these min_object_size (px)")
    parser.add_argument("--probabilities", type=float, nargs="*", default=[],
                        help="also these object probabilities (a pixel is an object's above it)")
    args = parser.parse_args()
    predictor = Predictor.load(args.results / args.experiment / "package" / f"{args.experiment}.pt", "cpu")
    min_size, chosen = predictor.package.predict["min_object_size"], predictor.package.object_probability
    seedings = {"distance >= 2 (before)": lambda probs: core_seeded(probs, min_size),
                "h-maxima (default)": lambda probs: objects.instances_from_separated_foreground(
                    probs, min_size, object_probability=chosen)}
    for height, smoothing, share in GRID if args.grid else []:
        seedings[f"h-maxima {height} px, sigma {smoothing}, neck {share}"] = (
            lambda probs, h=height, s=smoothing, n=share: objects.instances_from_separated_foreground(
                probs, min_size, h, s, n, chosen))
    for size in args.sizes:
        seedings[f"h-maxima, min size {size}"] = (
            lambda probs, n=size: objects.instances_from_separated_foreground(probs, n, object_probability=chosen))
    for probability in args.probabilities:
        seedings[f"h-maxima, object probability {probability}"] = (
            lambda probs, p=probability: objects.instances_from_separated_foreground(
                probs, min_size, object_probability=p))
    rows = []
    for split in ("val", "test"):
        cases = split_cases(args.results, predictor, split)
        rows += [dict(split=split, seeds=name, **pooled(cases, seeded)) for name, seeded in seedings.items()]
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
