"""Classes and label coding: the class table, stored mask values <-> class indices, colour-coded masks, and the
integer types labels are kept in (float labels within ROUND_OFF of whole numbers rounded, with a log line).

The class table (from ingest) has columns index, name, value, ignore, color and nonzero. Masks are first brought to
class values (`mask_values`: colours mapped through the colour table, JPEG masks snapped to the nearest declared
value, and with `data.foreground: nonzero` every non-zero value made the value of the row flagged `nonzero`), then
to class indices 0..K-1 (`map_labels`), with the ignored value as IGNORE_INDEX.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from unetflow.io.formats import ImageReadError

IGNORE_INDEX = 255  # class index of pixels excluded from the loss and the evaluation


def trained_classes(classes: pd.DataFrame) -> pd.DataFrame:
    """The class table without the ignore row, in index order."""
    ignored = classes["ignore"].astype(bool) if "ignore" in classes else pd.Series(False, classes.index)
    return classes[~ignored].sort_values("index")


def class_values(classes: pd.DataFrame) -> list[int]:
    """The stored mask value of each class index, in index order (the ignored value excluded)."""
    return trained_classes(classes)["value"].astype(int).tolist()


def ignore_value(classes: pd.DataFrame) -> int | None:
    """The mask value excluded from training and evaluation, or None."""
    if "ignore" not in classes or not classes["ignore"].any():
        return None
    return int(classes.loc[classes["ignore"].astype(bool), "value"].iloc[0])


def nonzero_value(classes: pd.DataFrame) -> int | None:
    """The class value that every non-zero mask value (but the ignored one) becomes with data.foreground: nonzero,
    or None when each stored value is a class of its own."""
    if "nonzero" not in classes or not classes["nonzero"].fillna(False).astype(bool).any():
        return None
    return int(classes.loc[classes["nonzero"].fillna(False).astype(bool), "value"].iloc[0])


def class_colors(classes: pd.DataFrame) -> np.ndarray | None:
    """(K, 3) RGB colour of each class index when masks are colour-coded, else None."""
    trained = trained_classes(classes)
    if "color" not in trained or trained.empty or trained["color"].isna().any():
        return None
    return np.array([list(c) for c in trained["color"]], np.int64)


@dataclass(frozen=True)
class LabelCoding:
    """How masks encode classes, taken once from the class table: colours (or None), class values, ignored value,
    the value every non-zero value becomes (or None), and whether every mask is snapped to the nearest class
    (data.lossy_masks: snap, column `snap`; lossy files are snapped always)."""
    colors: np.ndarray | None
    values: list[int]
    ignored: int | None
    nonzero: int | None = None
    snap: bool = False

    @classmethod
    def of(cls, classes: pd.DataFrame) -> "LabelCoding":
        snap = bool(classes["snap"].any()) if "snap" in classes else False
        return cls(class_colors(classes), class_values(classes), ignore_value(classes), nonzero_value(classes), snap)


def binarised(values: np.ndarray, coding: LabelCoding) -> np.ndarray:
    """With data.foreground: nonzero, every non-zero value (but the ignored one) as the foreground class value;
    the values unchanged otherwise."""
    if coding.nonzero is None:
        return values
    foreground = (values != 0) if coding.ignored is None else (values != 0) & (values != coding.ignored)
    result = np.where(foreground, coding.nonzero, values)
    return result.astype(label_dtype("labels", result))


def map_labels(mask: np.ndarray, values: list[int], ignore_value: int | None = None) -> np.ndarray:
    """Stored mask values -> class indices 0..K-1 (values[k] becomes k), `ignore_value` -> IGNORE_INDEX, as uint8."""
    known = list(values) + ([ignore_value] if ignore_value is not None else [])
    lookup = np.zeros(int(max(mask.max(initial=0), max(known))) + 1, np.uint8)
    lookup[np.asarray(values)] = np.arange(len(values))
    if ignore_value is not None:
        lookup[ignore_value] = IGNORE_INDEX
    return lookup[mask]


SNAP_REACH = 2  # pixels: a value between the classes snaps to the nearest of the classes stored this close to it


def snap_to_nearest(values: np.ndarray, allowed: list[int]) -> np.ndarray:
    """Each value replaced by the nearest of `allowed` (ties go to the smaller); in a 2D mask of three or more classes,
    a value that is no class goes to the nearest of the classes stored within SNAP_REACH pixels of it where there are
    any: on the blended border between classes 0 and 200 a value of 100 is one of them, not a ring of class 100."""
    allowed = np.sort(np.asarray(allowed))
    edges = (allowed[:-1] + allowed[1:]) / 2
    nearest = allowed[np.searchsorted(edges, values, side="left")]
    between = ~np.isin(values, allowed)
    if values.ndim != 2 or len(allowed) < 3 or not between.any():
        return nearest
    best, levels = np.full(values.shape, np.inf), values.astype(np.float64)
    for value in allowed:  # ascending: a tie keeps the smaller
        near = ndimage.binary_dilation(values == value, np.ones((3, 3), bool), iterations=SNAP_REACH) & between
        distance = np.where(near, np.abs(levels - value), np.inf)
        closer = distance < best
        best, nearest = np.where(closer, distance, best), np.where(closer, value, nearest)
    return nearest


def color_codes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> one integer per pixel."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]


def colors_to_indices(rgb: np.ndarray, colors: np.ndarray, snap: bool) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) colours -> (class indices, mask of pixels whose colour is not in the table); `snap` maps every
    colour to the nearest table colour (Euclidean) instead."""
    if snap:
        distances = ((rgb[..., None, :].astype(np.int64) - colors) ** 2).sum(-1)
        return distances.argmin(-1).astype(np.uint8), np.zeros(rgb.shape[:2], bool)
    codes, table = color_codes(rgb), color_codes(colors)
    order = np.argsort(table)
    position = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
    unknown = table[order][position] != codes
    return order[position].astype(np.uint8), unknown


def mask_values(raw: np.ndarray, coding: LabelCoding, lossy: bool, path) -> tuple[np.ndarray, int]:
    """A raw mask (H, W) or (H, W, 3) -> (H, W) class values and the number of pixels snapped (JPEG masks only).

    Colour masks are mapped through the class colours (class value = class index); a colour outside the table
    raises ImageReadError.
    """
    colors = coding.colors
    if colors is not None:
        rgb = np.repeat(raw[..., None], 3, axis=2) if raw.ndim == 2 else raw
        indices, unknown = colors_to_indices(rgb, colors, snap=lossy)
        if unknown.any():
            found = np.unique(rgb[unknown].reshape(-1, 3), axis=0)[:5].tolist()
            raise ImageReadError(f"{path}: {int(unknown.sum())} pixels have colours {found} that are not in "
                                 f"data.colors; add them to data.colors, or, if they are blends along borders (a "
                                 f"resized or anti-aliased mask), set data.lossy_masks: snap")
        changed = int((colors_to_indices(rgb, colors, snap=False)[1]).sum()) if lossy else 0
        return indices, changed
    if raw.ndim == 3:
        if not lossy:
            colours = np.unique(raw.reshape(-1, 3), axis=0)
            raise ImageReadError(f"{path}: colour mask (H, W, 3) of {len(colours)} colour(s) (e.g. "
                                 f"{colours[:4].tolist()}); declare its class colours in data.colors "
                                 f"({{name: [r, g, b]}}), set data.instances: true if each colour is one object, "
                                 f"or store class values instead")
        raw = raw.mean(axis=2).round().astype(np.uint16)
    if not lossy:
        return binarised(raw, coding), 0
    allowed = coding.values + ([coding.ignored] if coding.ignored is not None else [])
    snapped = snap_to_nearest(raw, allowed).astype(np.uint16 if max(allowed) > 255 else np.uint8)
    return binarised(snapped, coding), int(np.count_nonzero(snapped != raw))


LABEL_LIMIT = 65535  # the largest class value or id a mask holds (16 bits) ...
ID_LIMIT = 2**32 - 1  # ... and the largest object id of an instance mask (read as uint32 above LABEL_LIMIT)
ROUND_OFF = 1e-3  # float labels no further than this from whole numbers are rounded (round-off, not soft edges)


def integer_labels(path, values: np.ndarray, limit: int = LABEL_LIMIT) -> np.ndarray:
    """Stored label values as uint8/uint16, or uint32 above 65535 when `limit` allows (instance ids): bool -> 0/1;
    other types only when finite, integral and in 0..limit, else ImageReadError naming the file."""
    if values.dtype in (np.uint8, np.uint16):
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8)
    values = without_round_off(path, values)
    if values.size and (not np.all(np.isfinite(values)) or np.any(values != np.round(values))
                        or values.min() < 0 or values.max() > limit):
        ids = limit == LABEL_LIMIT and np.all(values == np.round(values)) and 0 <= values.min() and \
            values.max() <= ID_LIMIT
        raise ImageReadError(f"{path}: labels must be whole numbers in 0..{limit} ({values.dtype} values "
                             f"from {values.min()} to {values.max()} found{label_fault(values)}); "
                             + ("instance masks (one id per object) may hold more ids: set data.instances: true"
                                if ids else "save the labels as integers from 0"))
    high = values.max() if values.size else 0
    return values.astype(np.uint8 if high <= 255 else np.uint16 if high <= LABEL_LIMIT else np.uint32)


def label_fault(values: np.ndarray) -> str:
    """What is wrong with label values, the first fault found with an example: ', NaN or infinite values', ', values
    off whole numbers, e.g. 0.996' or ', negative values, e.g. -1'; '' when only the range is."""
    if not np.all(np.isfinite(values)):
        return ", NaN or infinite values"
    off = values[values != np.round(values)]
    if off.size:
        return f", values off whole numbers, e.g. {off.flat[0]:.4g} (a header's scl_slope or an interpolation?)"
    return f", negative values, e.g. {values.min():g}" if values.min() < 0 else ""


def without_round_off(path, values: np.ndarray) -> np.ndarray:
    """Float labels all within ROUND_OFF of whole numbers (0.99999994 from a header's scaling or a float type)
    rounded, with a log line naming the file; other values as they are."""
    if not np.issubdtype(values.dtype, np.floating) or not values.size or not np.all(np.isfinite(values)):
        return values
    whole = np.round(values)
    off = float(np.abs(values - whole).max())
    if off == 0 or off > ROUND_OFF:
        return values
    logging.getLogger(__name__).info(f"{path}: {values.dtype} labels up to {off:.1g} off whole numbers (float "
                                     f"round-off), rounded")
    return whole


def label_dtype(path, labels: np.ndarray, limit: int = LABEL_LIMIT, smallest=np.uint8) -> np.dtype:
    """The type labels are written in: uint8 when they fit, else uint16, else uint32 (when `limit` allows it:
    instance ids in a NIfTI volume), never smaller than `smallest`; ValueError for non-integer, negative or too
    large labels."""
    if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be an integer array, not {labels.dtype}")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0 or high > limit:
        raise ValueError(f"{path}: labels must lie in 0..{limit} to be stored losslessly, found {low}..{high}")
    return np.promote_types(np.uint8 if high <= 255 else np.uint16 if high <= LABEL_LIMIT else np.uint32, smallest)
