"""The network's output turned into objects (instance mode), and the table of the objects found.

Three-class output (background / interior / boundary): the seeds are the connected blobs of pixels whose interior
probability exceeds SEED_PROBABILITY; each grows by watershed (scikit-image) over the negated interior probability
into the foreground, so the boundary pixels between touching objects go to the nearer seed; a blob of foreground
without a seed (a small object whose interior was not found) is an object of its own.

Binary output of the target `weight_map` (background / foreground, touching objects separated by a gap of
background): the seeds are the peaks of the distance to the background, smoothed (SEED_SMOOTHING) and counted as
peaks only when they stand SEED_HEIGHT above the saddle to a higher one (h-maxima), so two round objects joined by a
bridge where the gap was not predicted in full are two seeds; each grows by watershed over the negated distance into
the foreground; touching objects whose neck is nearly as wide as the smaller one (NECK_SHARE of its peak distance: a
long or ragged object with two peaks, not two objects) are merged; then they grow into the gaps between touching
objects (`filled_gaps`: the background next to one object and near another), as the masks had no gaps; every
object is one connected piece. A blob without a peak that high is dropped.

The foreground of both is the pixels whose probability of not being background exceeds the object probability
(OBJECT_PROBABILITY unless a package chose another on its validation images: `unetflow.infer.object_probability`; a
higher one keeps the pixels the network is unsure of, as in a gap it found only in part, out of the objects).
Objects smaller than `min_size` pixels are removed and the ids renumbered 1..N.

Volumes and the pages of a stack are segmented slice by slice; an object of a slice whose overlap with one of the
slice before covers over STITCH_SHARE of the smaller of the two continues it (keeps its id, one to one, as Cellpose
stitches 2D masks into 3D), so the written ids are 3D objects; the others get new ids. Object rows and object metrics
stay per slice.
"""

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.measure import regionprops
from skimage.morphology import disk, h_maxima
from skimage.segmentation import relabel_sequential, watershed

SEED_PROBABILITY = 0.5
OBJECT_PROBABILITY = 0.5  # objects: pixels whose probability of not being background exceeds this
SEED_SMOOTHING = 1.0  # pixels: sigma of the Gaussian that smooths the distance map before its peaks are taken
SEED_HEIGHT = 0.5  # pixels: how far a peak of the smoothed distance must rise above its saddle to be a seed
NECK_SHARE = 0.8  # two peaks' objects are one where the neck between them is this share of the smaller's peak
GAP_WIDTH = 2  # pixels: the gap the weight-map target cuts between touching objects
FULL_CONNECTIVITY = np.ones((3, 3), bool)
STITCH_SHARE = 0.5  # an object continues one of the slice before when their overlap is over this share of the smaller


def remove_small_objects(ids: np.ndarray, min_size: int) -> np.ndarray:
    """The id map without objects of fewer than `min_size` pixels, renumbered 1..N in raster order."""
    if min_size > 1 and ids.any():
        sizes = np.bincount(ids.ravel())
        ids = np.where(sizes[ids] >= min_size, ids, 0)
    return relabel_sequential(ids.astype(np.int32))[0]


def with_unseeded_blobs(seeds: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Seed labels plus, as seeds of their own, the 8-connected blobs of the foreground that hold no seed."""
    blobs = ndimage.label(foreground, FULL_CONNECTIVITY)[0]
    unseeded = (blobs > 0) & ~np.isin(blobs, np.unique(blobs[seeds > 0]))
    return np.where(unseeded, blobs + seeds.max(initial=0), seeds)


def instances_from_three_class(probs: np.ndarray, min_size: int,
                                object_probability: float = OBJECT_PROBABILITY) -> np.ndarray:
    """(3, H, W) softmax (background, interior, boundary) -> id map (H, W) int32, objects 1..N."""
    interior = probs[1]
    foreground = probs[0] < 1 - object_probability
    seeds = ndimage.label((interior > SEED_PROBABILITY) & foreground, FULL_CONNECTIVITY)[0]
    ids = watershed(-interior, with_unseeded_blobs(seeds, foreground), mask=foreground)
    return remove_small_objects(ids, min_size)


def filled_gaps(ids: np.ndarray, width: int = GAP_WIDTH) -> np.ndarray:
    """The id map with the gaps between touching objects filled (the gaps `unetflow.instances.weight_map` cuts): the
    background pixels next to an object and within `width` + 1 of another go to the nearer object they are connected
    to through such pixels (watershed over the distance to the objects), so every object stays one piece."""
    empty = np.iinfo(ids.dtype).max
    around = disk(width + 1).astype(bool)
    next_to_one = ndimage.grey_dilation(ids, footprint=FULL_CONNECTIVITY) > 0
    high = ndimage.grey_dilation(ids, footprint=around)
    low = ndimage.grey_erosion(np.where(ids > 0, ids, empty), footprint=around)
    in_gap = (ids == 0) & next_to_one & (high != low) & (low != empty)
    distance = ndimage.distance_transform_edt(ids == 0)
    return watershed(distance, ids, mask=(ids > 0) | in_gap).astype(ids.dtype)


def neck_widths(ids: np.ndarray, distance: np.ndarray) -> dict[tuple[int, int], float]:
    """{(a, b): the largest `distance` on the border of touching objects a < b} (8-connected neighbours, the smaller
    distance of the two pixels): half the width of the neck between them."""
    necks = {}
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        here = tuple(slice(max(0, -step), ids.shape[axis] - max(0, step)) for axis, step in enumerate(shift))
        there = tuple(slice(max(0, step), ids.shape[axis] - max(0, -step)) for axis, step in enumerate(shift))
        a, b = ids[here], ids[there]
        border = (a != b) & (a > 0) & (b > 0)
        low, high = np.minimum(a, b)[border], np.maximum(a, b)[border]
        width = np.minimum(distance[here], distance[there])[border]
        for pair, value in zip(zip(low.tolist(), high.tolist()), width.tolist()):
            necks[pair] = max(necks.get(pair, 0.0), value)
    return necks


def merged_across_wide_necks(ids: np.ndarray, distance: np.ndarray, share: float = NECK_SHARE) -> np.ndarray:
    """Touching objects merged where the neck between them is at least `share` of the smaller one's peak distance:
    one object with two peaks (a long or ragged one), not two objects joined by a bridge."""
    peaks = ndimage.maximum(distance, ids, np.arange(ids.max(initial=0) + 1))
    parent = np.arange(len(peaks))

    def root(label: int) -> int:
        while parent[label] != label:
            label = parent[label]
        return label

    for (a, b), neck in neck_widths(ids, distance).items():
        if neck >= share * min(peaks[a], peaks[b]):
            parent[max(root(a), root(b))] = min(root(a), root(b))
    return np.array([root(label) for label in range(len(parent))], ids.dtype)[ids]


def instances_from_separated_foreground(probs: np.ndarray, min_size: int, height: float = SEED_HEIGHT,
                                        smoothing: float = SEED_SMOOTHING, share: float = NECK_SHARE,
                                        object_probability: float = OBJECT_PROBABILITY) -> np.ndarray:
    """(2, H, W) softmax (background, foreground; touching objects apart) -> id map (H, W) int32, objects 1..N; seeds
    the peaks `height` high of the distance smoothed by `smoothing`, objects across necks of `share` merged."""
    foreground = probs[0] < 1 - object_probability
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(foreground), smoothing)
    seeds = ndimage.label(h_maxima(distance, height) & foreground, FULL_CONNECTIVITY)[0]
    ids = watershed(-distance, seeds, mask=foreground).astype(np.int32)
    return remove_small_objects(filled_gaps(merged_across_wide_necks(ids, distance, share)), min_size)


def instances_from_foreground(probs: np.ndarray, min_size: int) -> np.ndarray:
    """Plain semantic segmentation + connected components: (K, H, W) softmax -> id map of the 8-connected blobs
    of the argmax foreground (the baseline the instance mode is compared with)."""
    ids = ndimage.label(probs.argmax(0) > 0, FULL_CONNECTIVITY)[0]
    return remove_small_objects(ids, min_size)


def instances_from_probabilities(probs, target: str, min_size: int,
                                 object_probability: float = OBJECT_PROBABILITY) -> np.ndarray:
    """The objects of one image's softmax (K, H, W; an array or a CPU tensor) for an instance target."""
    probs = np.asarray(probs, np.float32)
    if target == "three_class":
        return instances_from_three_class(probs, min_size, object_probability)
    if target == "weight_map":
        return instances_from_separated_foreground(probs, min_size, object_probability=object_probability)
    raise ValueError(f"data.instance_target: unknown target '{target}'")


def object_rows(case_id: str, ids: np.ndarray, probs, slice_index: int = 0) -> list[dict]:
    """One row per object of a 2D id map: case, slice (of a volume; 0 otherwise), id, area, centroid, bounding box
    (min inclusive, max exclusive) and mean foreground probability (1 - background softmax) over its pixels."""
    foreground = 1 - np.asarray(probs[0], np.float32)
    rows = []
    for region in regionprops(ids, intensity_image=foreground):
        top, left, bottom, right = region.bbox
        rows.append(dict(case=case_id, slice=slice_index, id=int(region.label), area=int(region.area),
                         centroid_y=float(region.centroid[0]), centroid_x=float(region.centroid[1]),
                         bbox_top=int(top), bbox_left=int(left), bbox_bottom=int(bottom), bbox_right=int(right),
                         mean_probability=float(region.intensity_mean)))
    return rows


def numbered_on(slices: list[np.ndarray]) -> np.ndarray:
    """Id maps of slices, each numbered 1..n, as one (Z, Y, X) map whose later slices' ids follow the earlier ones'."""
    offsets = np.cumsum([0] + [int(ids.max(initial=0)) for ids in slices[:-1]])
    return np.stack([np.where(ids > 0, ids.astype(np.int64) + offset, 0) for ids, offset in zip(slices, offsets)])


def continued(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """A slice's id map with each object that continues an object of the slice before given that object's id: their
    overlap covers over STITCH_SHARE of the smaller of the two (a nucleus's first and last slices are small beside
    its middle ones), one to one, the largest overlaps first (of an object that splits, the larger part keeps the
    id)."""
    both = (current > 0) & (previous > 0)
    if not both.any():
        return current
    pairs, shared = np.unique(np.stack([current[both], previous[both]]), axis=1, return_counts=True)
    area = np.bincount(current.ravel()), np.bincount(previous.ravel())
    lookup, taken = np.arange(current.max() + 1), set()
    for index in np.argsort(-shared, kind="stable"):
        now, before = pairs[:, index]
        if shared[index] > STITCH_SHARE * min(area[0][now], area[1][before]) and lookup[now] == now and \
                before not in taken:
            lookup[now] = before
            taken.add(before)
    return lookup[current]


def stitched(ids: np.ndarray) -> np.ndarray:
    """Id maps of consecutive slices (Z, Y, X; ids unique across slices) with the objects that continue from slice to
    slice (`continued`) given one id, renumbered 1..N."""
    ids = ids.copy()
    for index in range(1, len(ids)):
        ids[index] = continued(ids[index], ids[index - 1])
    return relabel_sequential(ids)[0]


def source_objects(units: list[tuple[str, slice]], probabilities: np.ndarray, target: str, min_size: int,
                   object_probability: float = OBJECT_PROBABILITY) -> tuple[np.ndarray, list[dict], dict[str, int]]:
    """The objects of a source's softmax (K, Z, Y, X), found slice by slice and stitched from slice to slice (a
    nucleus through a volume or the pages of a stack keeps one id): their ids (Z, Y, X), the rows (`object_rows`) of
    each unit's (name, slices of Z) slices, and per unit the number of objects found under `min_size` and dropped."""
    found = [instances_from_probabilities(probabilities[:, index], target, 1, object_probability)
             for index in range(probabilities.shape[1])]
    kept = [remove_small_objects(ids, min_size) for ids in found]
    ids = stitched(numbered_on(kept))
    rows = [row for name, unit in units for index in range(unit.start, unit.stop)
            for row in object_rows(name, ids[index], probabilities[:, index], index - unit.start)]
    dropped = {name: sum(int(found[index].max(initial=0)) - int(kept[index].max(initial=0))
                         for index in range(unit.start, unit.stop)) for name, unit in units}
    return ids, rows, dropped


OBJECT_COLUMNS = ("case", "slice", "id", "area", "centroid_y", "centroid_x", "bbox_top", "bbox_left", "bbox_bottom",
                  "bbox_right", "mean_probability")


def object_table(rows: list[dict]) -> pd.DataFrame:
    """The per-object table (OBJECT_COLUMNS), also when no object was found."""
    return pd.DataFrame(rows, columns=list(OBJECT_COLUMNS))
