"""How well StarDist's shape prior fits the true objects of an instance run: every object of the `--split` images
redrawn as the star-convex polygon of its distances along `--rays` rays from its centre (the pixel farthest inside
it), as StarDist describes an object. It prints the share of objects whose polygon has IoU of at least 0.5, 0.7 and
0.9 with the object, and the AP@0.5 (StarDist's TP / (TP + FP + FN)) that a prediction of exactly these polygons
would score, drawn into one id map (larger objects first, so a smaller neighbour's polygon overlaps it). That is the
most a star-convex target can score on these objects; what a network learns of it in a budget is another matter.

    python bench/star_convex_fit.py results/augment_dsb2018 --rays 32   # a run's results folder (its test split)

Run it from the folder the workflow ran in (the manifest's paths are relative to it).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.draw import polygon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.folds import ids_in  # noqa: E402
from unetflow.evaluate.object_metrics import MATCH_THRESHOLD, assigned_ious, counts_at, overlap_table  # noqa: E402
from unetflow.instances.targets import object_ids  # noqa: E402
from unetflow.io.sources import read_source_mask  # noqa: E402

RAY_STEP = 0.25  # px: how finely each ray is marched to the object's edge
FIT_LEVELS = (0.5, 0.7, 0.9)


def ray_distances(inside: np.ndarray, centre: tuple[int, int], angles: np.ndarray) -> np.ndarray:
    """Distances from `centre` to the edge of the boolean mask `inside` along each of `angles` (radians): where the
    ray first reaches a pixel outside the mask (or the image's border), to RAY_STEP."""
    reach = np.arange(0, inside.shape[0] + inside.shape[1], RAY_STEP)
    rows = np.rint(centre[0] + np.outer(np.sin(angles), reach)).astype(int)
    cols = np.rint(centre[1] + np.outer(np.cos(angles), reach)).astype(int)
    within = (rows >= 0) & (rows < inside.shape[0]) & (cols >= 0) & (cols < inside.shape[1])
    hit = within.copy()
    hit[within] = inside[rows[within], cols[within]]
    first_out = np.argmin(hit, axis=1)  # every ray leaves the mask before its reach ends
    return reach[first_out] - RAY_STEP / 2


def star_polygon(inside: np.ndarray, rays: int) -> np.ndarray:
    """The star-convex polygon of one object (a boolean mask) drawn as a boolean mask of the same shape."""
    depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
    centre = np.unravel_index(np.argmax(depth), inside.shape)
    angles = 2 * np.pi * np.arange(rays) / rays
    distances = ray_distances(inside, centre, angles)
    drawn = np.zeros(inside.shape, bool)
    drawn[polygon(centre[0] + distances * np.sin(angles), centre[1] + distances * np.cos(angles), inside.shape)] = True
    drawn[centre] = True  # a polygon thinner than a pixel still holds its centre
    return drawn


def star_convex_ids(ids: np.ndarray, rays: int) -> tuple[np.ndarray, list[float]]:
    """An id map (H, W) redrawn with every object's `star_polygon` (larger objects first), and each object's IoU
    with its own polygon."""
    drawn, fits = np.zeros_like(ids), []
    areas = np.bincount(ids.ravel())
    boxes = ndimage.find_objects(ids)
    for index in sorted(np.flatnonzero(areas[1:]) + 1, key=lambda found: -areas[found]):
        box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in boxes[index - 1])
        inside = ids[box] == index
        shape = star_polygon(inside, rays)
        fits.append(float((inside & shape).sum() / (inside | shape).sum()))
        drawn[box][shape] = index
    return drawn, fits


def run_fit(results: Path, split: str, rays: int) -> tuple[dict, list[float]]:
    """The pooled matches of the polygons of every `split` image of a results folder against its objects
    (tp, fp, fn), and every object's IoU with its own polygon."""
    manifest = pd.read_parquet(results / "data" / "manifest.parquet")
    ids = ids_in(pd.read_parquet(results / "split" / "splits.parquet"), split)
    totals, fits = np.zeros(3, int), []
    for row in manifest[manifest["id"].isin(ids)].to_dict("records"):
        for plane in object_ids(read_source_mask(row, ids=True)).astype(np.int64):
            drawn, found = star_convex_ids(plane, rays)
            iou = overlap_table(plane, drawn)["iou"]
            totals += counts_at(assigned_ious(iou), *iou.shape, MATCH_THRESHOLD)  # matched as the evaluation does
            fits += found
    return dict(zip(("tp", "fp", "fn"), totals.tolist())), fits


def report(totals: dict, fits: list[float], rays: int) -> str:
    """The printed summary of `run_fit`."""
    fits = np.asarray(fits)
    shares = ", ".join(f"{np.mean(fits >= level):.1%} at IoU >= {level}" for level in FIT_LEVELS)
    ap = totals["tp"] / max(1, totals["tp"] + totals["fp"] + totals["fn"])
    return (f"{len(fits)} objects redrawn from {rays} rays: mean IoU {fits.mean():.3f}; {shares}\n"
            f"AP@0.5 of the polygons as a prediction {ap:.4f}: TP {totals['tp']}, FP {totals['fp']}, FN {totals['fn']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results folder of an instance run (results/<name>)")
    parser.add_argument("--split", default="test", help="which split's images (test, val, train or all)")
    parser.add_argument("--rays", type=int, default=32, help="rays per object (StarDist's default: 32)")
    args = parser.parse_args()
    totals, fits = run_fit(args.results, args.split, args.rays)
    print(report(totals, fits, args.rays))


if __name__ == "__main__":
    main()
