"""Does a U-Net learn StarDist's star-convex target within the instance mode's CPU budget? A probe, outside the
workflow: on a run's split (`results/<run>/data/manifest.parquet`, `split/splits.parquet`) it trains the plan's U-Net
(depth 5, width 16, batch 4, Adam 1e-3 with the poly schedule, the instance mode's 1500 steps) with a 1 + RAYS
channel head, as StarDist trains (Schmidt et al. 2018): each pixel's object probability, its distance to the nearest
pixel outside its object over the largest in it (binary cross-entropy), and its distances along RAYS rays to its
object's edge (the absolute error weighted by that probability, weight 0.2). The targets are computed once per
image; augmentation is StarDist's example's: flips and quarter turns (which permute the rays) and an intensity scale
and shift. Prediction keeps the pixels (on a 2-px grid) whose probability exceeds a threshold as candidate polygons,
best first, suppresses a candidate whose IoU with a kept one exceeds the NMS threshold, and draws the kept ones;
both thresholds are chosen on the `val` images by AP@0.5 (StarDist chooses them on validation images too), then the
`test` images are scored.

    python bench/star_convex_train.py results/dsb2018_clip --threads 2   # about 12 minutes on 2 CPU cores
    python bench/star_convex_train.py results/dsb2018_clip --steps 4500 --model star4500.pt   # weights kept

Prints the validation AP of each pair of thresholds, the chosen pair, and test AP@0.5 pooled over the images
(StarDist's TP / (TP + FP + FN)) with TP, FP, FN. `--model`: a file the trained weights are saved to, or loaded from
instead of training when it exists. Run it from the folder the workflow ran in (the manifest's paths are relative to
it). Images are z-scored per image, as the instance mode's default normalisation does; training batches and
prediction take whole images (no patches, no tiles), so the images must share one size, as DSB 2018's 256 x 256 do.
"""

import argparse
import itertools
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.draw import polygon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.folds import ids_in  # noqa: E402
from unetflow.evaluate.object_metrics import object_metrics  # noqa: E402
from unetflow.instances.targets import object_ids  # noqa: E402
from unetflow.io.sources import read_source_image, read_source_mask  # noqa: E402
from unetflow.net.model import UNet  # noqa: E402

log = logging.getLogger("star_convex_train")
RAYS = 32
DISTANCE_WEIGHT = 0.2  # StarDist's train_loss_weights (1, 0.2)
CANDIDATE_GRID = 2  # px: candidates are taken on this grid, as StarDist's grid (2, 2)
PROBABILITIES = (0.5, 0.6, 0.7, 0.8)
NMS_THRESHOLDS = (0.1, 0.2, 0.3, 0.4)


def ray_angles(rays: int) -> np.ndarray:
    """The rays' angles (radians), ray k at 2 pi k / rays; a ray's step is (sin, cos) in (row, column)."""
    return 2 * np.pi * np.arange(rays) / rays


def star_distances(ids: np.ndarray, rays: int = RAYS) -> np.ndarray:
    """(rays, H, W) float32: from every object pixel, the distance along each ray to the first pixel that is not of
    its object (or outside the image), marched in 1-px steps as StarDist does; 0 off the objects."""
    distances = np.zeros((rays, *ids.shape), np.float32)
    rows, cols = np.nonzero(ids)
    own = ids[rows, cols]
    for ray, angle in enumerate(ray_angles(rays)):
        step_row, step_col = np.sin(angle), np.cos(angle)
        active, found = np.arange(len(rows)), np.zeros(len(rows), np.float32)
        step = 0
        while active.size:
            step += 1
            r = np.rint(rows[active] + step * step_row).astype(np.int64)
            c = np.rint(cols[active] + step * step_col).astype(np.int64)
            inside = (r >= 0) & (r < ids.shape[0]) & (c >= 0) & (c < ids.shape[1])
            left = ~inside
            left[inside] = ids[r[inside], c[inside]] != own[active[inside]]
            found[active[left]] = step
            active = active[~left]
        distances[ray, rows, cols] = found
    return distances


def object_probability(ids: np.ndarray) -> np.ndarray:
    """(H, W) float32: each object pixel's distance to the nearest pixel outside its object (Euclidean), over the
    largest of its object: StarDist's object probability target, 1 at an object's centre and small at its edge, so
    that only inner pixels, whose polygons are reliable, become candidates."""
    target = np.zeros(ids.shape, np.float32)
    for index, box in enumerate(ndimage.find_objects(ids), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, axis.start - 1), axis.stop + 1) for axis in box)
        inside = ids[box] == index
        depth = ndimage.distance_transform_edt(inside)
        target[box][inside] = depth[inside] / depth.max()
    return target


def flipped(image: np.ndarray, distances: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """An image (C, H, W) and its distances (RAYS, H, W) flipped along spatial `axis` (0 rows, 1 columns), the rays
    renumbered: a row flip takes angle a to -a, a column flip to pi - a."""
    rays = distances.shape[0]
    order = (-np.arange(rays)) % rays if axis == 0 else (rays // 2 - np.arange(rays)) % rays
    return np.flip(image, axis + 1), np.flip(distances, axis + 1)[order]


def turned(image: np.ndarray, distances: np.ndarray, quarters: int) -> tuple[np.ndarray, np.ndarray]:
    """An image and its distances turned by `quarters` quarter turns (np.rot90 on the spatial axes), the rays
    renumbered: a quarter turn takes angle a to a - pi / 2."""
    rays = distances.shape[0]
    order = (np.arange(rays) + quarters * rays // 4) % rays
    return np.rot90(image, quarters, (1, 2)), np.rot90(distances, quarters, (1, 2))[order]


def augmented(image: np.ndarray, targets: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """An image (C, H, W) and its targets (1 + RAYS, H, W: object probability, distances) with StarDist's example
    augmentation: random flips and quarter turns, intensity scaled and shifted."""
    moved, distances = np.concatenate([image, targets[:1]]), targets[1:]
    for axis in (0, 1):
        if rng.random() < 0.5:
            moved, distances = flipped(moved, distances, axis)
    moved, distances = turned(moved, distances, int(rng.integers(4)))
    image = moved[:-1] * rng.uniform(0.7, 1.4) + rng.uniform(-0.2, 0.2)
    return image, np.concatenate([moved[-1:], distances])


def zscored(image: np.ndarray) -> np.ndarray:
    """A source image (C, Z, Y, X) of one slice as (C, H, W) float32, each channel minus its mean over its std."""
    pixels = image[:, 0].astype(np.float32)
    return (pixels - pixels.mean((1, 2), keepdims=True)) / np.maximum(pixels.std((1, 2), keepdims=True), 1e-8)


def split_cases(results: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image (C, H, W) z-scored, object ids (H, W)) of each source of a split of the run."""
    manifest = pd.read_parquet(results / "data" / "manifest.parquet")
    rows = manifest[manifest["id"].isin(ids_in(pd.read_parquet(results / "split" / "splits.parquet"), split))]
    return [(zscored(read_source_image(row)), object_ids(read_source_mask(row, ids=True))[0].astype(np.int64))
            for row in rows.to_dict("records")]


def star_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Of targets (B, 1 + RAYS, H, W), object probability and distances: BCE of the object probability plus
    DISTANCE_WEIGHT x the mean over pixels and rays of the absolute distance error weighted by the object probability
    (StarDist's masked MAE)."""
    probability = targets[:, :1]
    bce = F.binary_cross_entropy_with_logits(outputs[:, :1], probability)
    return bce + DISTANCE_WEIGHT * (probability * (outputs[:, 1:] - targets[:, 1:]).abs()).mean()


def star_unet(channels: int) -> UNet:
    """The plan's U-Net for DSB 2018 (depth 5, width 16) with a head of 1 + RAYS outputs."""
    return UNet(channels, 1 + RAYS, depth=5, base_width=16)


def train(cases, steps: int, batch: int, seed: int) -> UNet:
    """The U-Net trained on `cases` (image, ids) with their distances for `steps` steps of `batch` images."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    targets = [np.concatenate([object_probability(ids)[None], star_distances(ids)]) for _, ids in cases]
    log.info("distances of %d images in %.0f s", len(cases), time.perf_counter() - started)
    model = star_unet(cases[0][0].shape[0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / steps) ** 0.9)
    model.train()
    for step in range(steps):
        pairs = [augmented(cases[index][0], targets[index], rng) for index in rng.integers(len(cases), size=batch)]
        images = torch.from_numpy(np.stack([np.ascontiguousarray(image) for image, _ in pairs]))
        batch_targets = torch.from_numpy(np.stack([np.ascontiguousarray(target) for _, target in pairs]))
        with torch.autocast("cpu", torch.bfloat16):
            outputs = model(images)
        loss = star_loss(outputs.float(), batch_targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            log.info("step %d/%d  loss %.4f  %.0f s", step + 1, steps, loss.item(), time.perf_counter() - started)
    return model.eval()


def predicted(model: UNet, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(object probability (H, W), distances (RAYS, H, W)) of one image, the network run on it whole."""
    with torch.inference_mode():
        outputs = model(torch.from_numpy(image)[None]).float()[0]
    return outputs[0].sigmoid().numpy(), outputs[1:].clamp_min(0).numpy()


def star_objects(probability: np.ndarray, distances: np.ndarray, threshold: float, nms: float) -> np.ndarray:
    """An id map of the star-convex polygons kept by non-maximum suppression: candidates the pixels of a
    CANDIDATE_GRID grid above `threshold`, best first; one whose IoU with a kept polygon exceeds `nms` is dropped; a
    kept one takes the pixels no earlier one holds."""
    grid = np.zeros(probability.shape, bool)
    grid[::CANDIDATE_GRID, ::CANDIDATE_GRID] = True
    rows, cols = np.nonzero(grid & (probability > threshold))
    order = np.argsort(-probability[rows, cols], kind="stable")
    angles = ray_angles(distances.shape[0])
    ids, areas = np.zeros(probability.shape, np.int32), [0]
    for row, col in zip(rows[order], cols[order]):
        reach = distances[:, row, col]
        inside = polygon(row + reach * np.sin(angles), col + reach * np.cos(angles), probability.shape)
        area = len(inside[0])
        if area == 0:
            continue
        owners = ids[inside]
        overlaps = np.bincount(owners, minlength=len(areas))
        overlaps[0] = 0
        other = int(np.argmax(overlaps))
        if overlaps[other] and overlaps[other] / (area + areas[other] - overlaps[other]) > nms:
            continue
        free = owners == 0
        ids[inside[0][free], inside[1][free]] = len(areas)
        areas.append(area)
    return ids


def pooled_ap(cases, predictions, threshold: float, nms: float) -> tuple[float, int, int, int]:
    """AP@0.5 pooled over the cases (StarDist's TP / (TP + FP + FN)), TP, FP and FN."""
    totals = np.zeros(3, int)
    for (_, truth), (probability, distances) in zip(cases, predictions):
        scores = object_metrics(truth, star_objects(probability, distances, threshold, nms))
        totals += [scores["object_tp"], scores["object_fp"], scores["object_fn"]]
    tp, fp, fn = totals.tolist()
    return tp / max(tp + fp + fn, 1), tp, fp, fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the results folder of an instance-mode run (data, split)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model", type=Path, default=None,
                        help="a file for the trained weights: loaded instead of training when it exists")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    val = split_cases(args.results, "val")
    if args.model is not None and args.model.exists():
        model = star_unet(val[0][0].shape[0])
        model.load_state_dict(torch.load(args.model))
        model.eval()
    else:
        model = train(split_cases(args.results, "train"), args.steps, args.batch, args.seed)
        if args.model is not None:
            torch.save(model.state_dict(), args.model)
    val_predictions = [predicted(model, image) for image, _ in val]
    scores = {pair: pooled_ap(val, val_predictions, *pair)[0] for pair in itertools.product(PROBABILITIES,
                                                                                          NMS_THRESHOLDS)}
    print("validation AP@0.5 (probability, nms): " + ", ".join(f"{p:g}/{n:g} {s:.3f}" for (p, n), s in
                                                                 scores.items()))
    threshold, nms = max(scores, key=scores.get)
    test = split_cases(args.results, "test")
    ap, tp, fp, fn = pooled_ap(test, [predicted(model, image) for image, _ in test], threshold, nms)
    print(f"chosen probability {threshold:g}, nms {nms:g}: test AP@0.5 {ap:.3f} (TP {tp}, FP {fp}, FN {fn})")


if __name__ == "__main__":
    main()
