"""Instance masks (0 = background, 1..N = one id per object) as the instance mode reads, checks and trains them.

With `data.instances: true` ingest writes the instance class table (`instance_classes`) of the target chosen by
`data.instance_target`: `weight_map` (default), binary foreground with touching objects separated and the U-Net paper's
border-separation loss weights (`unetflow.instances.weight_map`), or `three_class`, background / interior / boundary
(`three_class_target`). Preprocessing turns each id map into that target and keeps the ids beside it in the stored case
for evaluation. Every stage after ingest tells the instance mode and its target from the class table
(`instance_target`), so no other setting has to agree with it.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import measure

from unetflow.instances.weight_map import border_weight_map
from unetflow.io.formats import object_files
from unetflow.io.labels import color_codes

INSTANCE_TARGETS = ("three_class", "weight_map")
INSTANCE_CLASS_NAMES = {"three_class": ("background", "interior", "boundary"),
                        "weight_map": ("background", "foreground")}
BOUNDARY_WIDTH = 2  # pixels of every object, from its outline inwards, that form the boundary class
FULL_CONNECTIVITY = np.ones((3, 3), bool)  # 8-connected: an object touching itself diagonally is one blob
SPECK_SHARE = 0.25  # a stray part of an id smaller than this share of its mask's median object is a speck
WRAPPED_IDS = 200  # a mask of split ids, at least this many ids and none above 255: 8-bit ids wrapped past 255


def instance_classes(target: str = "weight_map") -> pd.DataFrame:
    """The class table of the instance mode: one row per trained class, with the column `instance_target`."""
    if target not in INSTANCE_TARGETS:
        raise ValueError(f"data.instance_target: unknown target '{target}' (one of {list(INSTANCE_TARGETS)})")
    names = INSTANCE_CLASS_NAMES[target]
    return pd.DataFrame({"index": range(len(names)), "name": list(names), "value": range(len(names)),
                         "color": None, "ignore": False, "instance_target": target})


def instance_target(classes: pd.DataFrame) -> str | None:
    """The instance target a class table was written for, or None for a semantic class table."""
    if "instance_target" not in classes or classes.empty:
        return None
    return str(classes["instance_target"].iloc[0])


def object_boundaries(ids: np.ndarray, width: int = BOUNDARY_WIDTH) -> np.ndarray:
    """Pixels of objects that lie within `width` pixels (8-connected steps) of another id or the background."""
    padded = np.pad(ids, 1, mode="edge")
    high = ndimage.grey_dilation(padded, footprint=FULL_CONNECTIVITY)[1:-1, 1:-1]
    low = ndimage.grey_erosion(padded, footprint=FULL_CONNECTIVITY)[1:-1, 1:-1]
    edge = (ids > 0) & ((high != ids) | (low != ids))
    if width > 1:
        edge = ndimage.binary_dilation(edge, FULL_CONNECTIVITY, iterations=width - 1) & (ids > 0)
    return edge


def three_class_target(ids: np.ndarray) -> np.ndarray:
    """An id map -> uint8 classes 0 background, 1 interior, 2 boundary (see `object_boundaries`)."""
    target = (ids > 0).astype(np.uint8)
    target[object_boundaries(ids)] = 2
    return target


def training_target(ids: np.ndarray, target: str,
                    weight_map: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """An id map -> (class indices uint8, per-pixel loss weights or None) of an instance target; `weight_map`: w0
    and sigma of `border_weight_map` (preprocess.weight_map; None: the paper's)."""
    if target == "weight_map":
        return border_weight_map(ids, **(weight_map or {}))
    return three_class_target(ids), None


def instance_ids(mask: np.ndarray) -> np.ndarray:
    """A stored instance mask as an id map (uint16 or uint32), unchanged in value."""
    return mask.astype(np.uint32 if mask.max(initial=0) > 65535 else np.uint16, copy=False)


def split_parts(ids: np.ndarray) -> dict[int, list[int]]:
    """{id: the pixel counts of its parts, largest first} of every id whose pixels form more than one 8-connected
    blob (an id reused for two objects, an object that is not connected, or an object with stray specks)."""
    parts = {}
    for index, box in enumerate(ndimage.find_objects(ids), start=1):
        if box is not None:
            blobs, count = ndimage.label(ids[box] == index, FULL_CONNECTIVITY)
            if count > 1:
                parts[index] = sorted(np.bincount(blobs.ravel())[1:].tolist(), reverse=True)
    return parts


def speck_limit(ids: np.ndarray, parts: dict[int, list[int]]) -> float:
    """Stray parts smaller than this many pixels are specks: SPECK_SHARE of the mask's median object, an object being
    its id's largest part (`parts`: `split_parts`), so that one id on many objects (a binary mask) is not a speck."""
    sizes = np.bincount(ids.ravel())
    for index, part_sizes in parts.items():
        sizes[index] = part_sizes[0]
    sizes = sizes[1:][sizes[1:] > 0]
    return SPECK_SHARE * float(np.median(sizes)) if sizes.size else 0.0


def stray_parts(ids: np.ndarray) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(specks, split) of the ids of a 2D id map that are not one connected object, {id: part sizes, largest first}
    each: ids whose other parts are all specks (`speck_limit`: slips of the annotation, which the instance mode drops,
    keeping the largest part as the object), and ids with a second part too large for a speck (two objects under
    one id: refused)."""
    parts = split_parts(ids)
    limit, specks, split = speck_limit(ids, parts), {}, {}
    for index, sizes in parts.items():
        (specks if sizes[1] < limit else split)[index] = sizes
    return specks, split


def without_specks(ids: np.ndarray) -> np.ndarray:
    """A 2D id map in which every id with stray specks (`stray_parts`) keeps only its largest part."""
    specks, _ = stray_parts(ids)
    if not specks:
        return ids
    cleaned, boxes = ids.copy(), ndimage.find_objects(ids)
    for index in specks:
        window = cleaned[boxes[index - 1]]
        blobs = ndimage.label(window == index, FULL_CONNECTIVITY)[0]
        largest = 1 + int(np.argmax(np.bincount(blobs.ravel())[1:]))
        window[(blobs > 0) & (blobs != largest)] = 0
    return cleaned


def colour_ids(colours: np.ndarray) -> np.ndarray:
    """The id maps (Z, Y, X) of an instance mask saved in colours (Z, Y, X, 3), e.g. a label image exported through a
    lookup table: black is the background, every other colour an object, and a colour on several parts (a lookup
    table reuses its colours) one object per part too large for a speck (`parts_apart`)."""
    codes = color_codes(colours)
    found, ids = np.unique(codes, return_inverse=True)
    ids = ids.reshape(codes.shape) + int(found[0] != 0)  # black, code 0, sorts first
    return np.stack([parts_apart(plane) for plane in ids])


def parts_apart(ids: np.ndarray) -> np.ndarray:
    """A 2D id map in which each 8-connected part of an id is an object of its own, but for parts smaller than
    SPECK_SHARE of the median part, which stay with their id's largest part (as specks, `stray_parts`)."""
    parts = measure.label(ids, background=0, connectivity=2)
    if not parts.any():
        return instance_ids(ids)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    owner = np.zeros(len(sizes), np.int64)
    owner[parts.ravel()] = ids.ravel()
    largest_first = np.argsort(-sizes, kind="stable")[:np.count_nonzero(sizes)]
    first = np.zeros(len(sizes), bool)
    first[largest_first[np.unique(owner[largest_first], return_index=True)[1]]] = True
    moved = ~first & (sizes >= SPECK_SHARE * np.median(sizes[sizes > 0]))
    new_ids = owner.copy()
    new_ids[moved] = int(ids.max()) + 1 + np.arange(np.count_nonzero(moved))
    return instance_ids(new_ids[parts])


def object_ids(masks: np.ndarray) -> np.ndarray:
    """The objects of a stored instance mask (Z, Y, X), slice by slice: ids as stored (uint16, uint32 above 65535;
    a mask in colours (Z, Y, X, 3) through `colour_ids`), stray specks dropped. What training, evaluation and the
    report see of the ground truth."""
    masks = colour_ids(masks) if masks.ndim == 4 else masks
    return np.stack([without_specks(instance_ids(plane)) for plane in masks])


def touching_pairs(ids: np.ndarray) -> int:
    """Number of distinct pairs of objects that touch (share an edge or a corner)."""
    neighbours = ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :]), (ids[:-1, :-1], ids[1:, 1:]),
                  (ids[:-1, 1:], ids[1:, :-1]))
    pairs = set()
    for a, b in neighbours:
        touching = (a != b) & (a > 0) & (b > 0)
        pairs |= set(zip(np.minimum(a, b)[touching].tolist(), np.maximum(a, b)[touching].tolist()))
    return len(pairs)


def instance_problem(path, slice_label: str, ids: np.ndarray, split: dict[int, list[int]]) -> str | None:
    """The ingest problem of a mask with split ids (see `stray_parts`), or None; it names a binary mask (one id on
    several objects) and ids of an 8-bit mask that wrapped past 255 as such."""
    if not split:
        return None
    shown = ", ".join(f"id {i} in parts of {'/'.join(map(str, sizes[:4]))}{'/...' if len(sizes) > 4 else ''} px"
                      for i, sizes in list(split.items())[:5])
    where = f"{path}{slice_label}: {len(split)} id(s) are not one connected object ({shown}" \
        f"{', ...' if len(split) > 5 else ''}{'; id k is the k-th file of the folder' if Path(path).is_dir() else ''})"
    found = np.unique(ids[ids > 0])
    if len(found) == 1:
        return (f"{where}: one value on {len(split[found[0]])} separate objects is a binary mask, not one id per "
                f"object; with data.instances: true every object needs its own id (label the mask's connected parts, "
                f"skimage.measure.label, where no objects touch), or leave data.instances off to train one class")
    wrapped = found.max() <= 255 and len(found) >= WRAPPED_IDS
    return (f"{where}; stray specks (under {SPECK_SHARE:.0%} of the median object) are dropped as annotation slips, "
            f"but these parts are objects: "
            + ("the mask has 8-bit ids and nearly 255 of them, so more objects than 255 repeat ids: save it with "
               "16-bit ids" if wrapped else "give every object its own id, or, if the values are classes, set "
               "data.instances: false"))


def instance_source_fields(masks: np.ndarray, path) -> tuple[dict, list[str]]:
    """Manifest fields of one source's instance mask (Z, Y, X, or Z, Y, X, 3 in colours: `colour_ids`; objects are
    per slice): label_values 0 (background) and 1 (any object) with their voxel shares, objects, touching_pairs,
    speck_ids and speck_pixels (stray parts of ids, dropped), colour_ids; and its problems (ids of two large parts,
    colours without black, no background)."""
    coloured = masks.ndim == 4
    if coloured and (problem := colour_mask_problem(masks, path)):
        return {}, [problem]
    masks = colour_ids(masks) if coloured else masks
    if problem := background_problem(masks, path):
        return {}, [problem]
    objects, touching, speck_ids, speck_pixels, problems = 0, 0, [], 0, []
    for index, plane in enumerate(masks):
        ids = instance_ids(plane)
        specks, split = stray_parts(ids)
        objects, touching = objects + len(np.unique(ids[ids > 0])), touching + touching_pairs(without_specks(ids))
        speck_ids += list(specks)
        speck_pixels += sum(sum(sizes[1:]) for sizes in specks.values())
        problem = instance_problem(path, f" slice {index}" if len(masks) > 1 else "", ids, split)
        problems += [problem] if problem else []
    share = float((masks > 0).mean())
    values = [v for v, s in ((0, 1 - share), (1, share)) if s > 0]
    fields = dict(label_values=values, label_fractions=[1 - share if v == 0 else share for v in values],
                  snapped_pixels=0, objects=objects, touching_pairs=touching, speck_ids=speck_ids,
                  speck_pixels=speck_pixels, colour_ids=coloured, covered_objects=covered_objects(masks, path))
    return fields, problems


def covered_objects(ids: np.ndarray, path) -> list[str]:
    """Of a folder of object masks (`path`; one file per object, a later one over an earlier): the files whose
    object no pixel keeps, covered by later ones (a duplicate annotation, or an object inside another); else []."""
    if not Path(path).is_dir():
        return []
    kept = set(np.unique(ids).tolist())
    return [file.name for index, file in enumerate(object_files(path), start=1) if index not in kept]


def background_problem(ids: np.ndarray, path) -> str | None:
    """Why an instance mask without a background (0) pixel, whose largest id covers at least a third of it, is
    taken for one whose ids count from 1 (MATLAB's way), the background an object; None otherwise."""
    if not ids.size or (ids == 0).any():
        return None
    values, counts = np.unique(ids, return_counts=True)
    if counts.max() < ids.size / 3:
        return None
    return (f"{path}: an instance mask without background (0) pixels, whose id {values[counts.argmax()]} covers "
            f"{counts.max() / ids.size:.0%} of it: the background, with ids counted from 1? It would be trained as "
            f"one object; save the background as 0 (e.g. subtract 1 from every id)")


def colour_mask_problem(colours: np.ndarray, path) -> str | None:
    """Why an instance mask saved in colours (Z, Y, X, 3) cannot be read as objects (`colour_ids`), or None."""
    if not (colours == 0).all(axis=-1).any():
        return (f"{path}: an instance mask in colours without black: black (0, 0, 0) is read as the background; "
                f"export one id per object (0 the background), or colours on black")
    return None


def instance_data_problems(rows: list[dict], classes_declared: bool) -> list[str]:
    """Data-set problems of the instance mode: declared classes (the classes are fixed) and no object at all."""
    problems = []
    if classes_declared:
        problems.append("data.instances: true fixes the classes (those of data.instance_target); "
                        "remove data.classes / data.colors")
    if rows and not sum(row.get("objects", 0) for row in rows):
        problems.append(f"data.instances: true but none of the {len(rows)} masks holds an object (every pixel is "
                        f"0); check data.masks")
    return problems
