"""Masks saved after resizing or rotating with interpolation: a thin band of values between the classes along every
border between them (about a hundred values on 0.1 % of the pixels of a resized 0/255 mask). They are the classes
with soft edges, not hundreds of classes: ingest says so in one problem and offers the fix that keeps the objects
what they are, snapping every pixel to the nearest class (`data.lossy_masks: snap` with the classes declared).

In the masks read to check (those with the most values, up to CHECKED_FILES), a value is a class when at least
FLAT_SHARE of its pixels are inside a flat region (their 3x3 neighbourhood holds only it); a soft edge is only
borders. The other values are soft edges when they are in more than HOLDERS_SHARE of the masks (a whole data set
resized, not one mask: that is a stray, see `unetflow.data.mask_checks`), every one lies between the smallest and the
largest class value, and at least EDGE_SHARE of their pixels lie within EDGE_WIDTH pixels of two different classes.
"""

import numpy as np
from scipy import ndimage

from unetflow.io.sources import read_source_mask

FLAT_SHARE = 0.5
HOLDERS_SHARE = 0.05
EDGE_WIDTH = 2  # pixels
EDGE_SHARE = 0.9
CHECKED_FILES = 10
_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def checked_planes(rows: list[dict], read: dict) -> list[np.ndarray]:
    """The 2D masks read to check: those of the CHECKED_FILES files with the most distinct values; `read` keeps the
    masks already read by their path, so a file checked twice is read once."""
    busiest = sorted(rows, key=lambda row: -len(row["label_values"]))[:CHECKED_FILES]
    for row in busiest:
        if row["mask_path"] not in read:
            read[row["mask_path"]] = list(read_source_mask(row))
    return [plane for row in busiest for plane in read[row["mask_path"]]]


def flat_values(planes: list[np.ndarray]) -> list[int]:
    """The values of which at least FLAT_SHARE of the pixels lie inside a flat region: the classes."""
    pixels, inside = {}, {}
    for plane in planes:
        flat = ndimage.minimum_filter(plane, footprint=_EIGHT_NEIGHBOURS) == ndimage.maximum_filter(
            plane, footprint=_EIGHT_NEIGHBOURS)
        for value, count in zip(*np.unique(plane, return_counts=True)):
            pixels[int(value)] = pixels.get(int(value), 0) + int(count)
        for value, count in zip(*np.unique(plane[flat], return_counts=True)):
            inside[int(value)] = inside.get(int(value), 0) + int(count)
    return sorted(value for value, count in pixels.items() if inside.get(value, 0) >= FLAT_SHARE * count)


def near_two_classes(plane: np.ndarray, classes: list[int]) -> np.ndarray:
    """Pixels of a 2D mask within EDGE_WIDTH pixels of two different class values: the borders between classes."""
    near = sum(ndimage.binary_dilation(plane == value, _EIGHT_NEIGHBOURS, iterations=EDGE_WIDTH).astype(np.uint8)
               for value in classes)
    return near >= 2


def on_borders(planes: list[np.ndarray], classes: list[int]) -> float:
    """The share of the pixels of values other than `classes` that lie on borders between classes (1 for none)."""
    others = border = 0
    for plane in planes:
        between = ~np.isin(plane, classes)
        others += int(between.sum())
        border += int((between & near_two_classes(plane, classes)).sum())
    return border / others if others else 1.0


def soft_edge_problem(rows: list[dict], classes: list[int] | None = None) -> str | None:
    """The one problem of masks whose values other than the classes (the declared class values, or for None the
    flat values of the masks checked) are soft edges, with the fix; None when they are something else (or none)."""
    read, declared = {}, classes is not None
    classes = classes if declared else flat_values(checked_planes(rows, read))
    holders = [row for row in rows if set(row["label_values"]) - set(classes)]
    if len(holders) <= max(1, HOLDERS_SHARE * len(rows)):
        return None
    planes = checked_planes(holders, read)
    values = sorted({value for row in holders for value in row["label_values"]} - set(classes))
    if len(classes) < 2 or not values or not all(min(classes) < value < max(classes) for value in values):
        return None
    share = on_borders(planes, classes)
    if share < EDGE_SHARE:
        return None
    names = ["background", "foreground"] if len(classes) == 2 else [f"class_{value}" for value in classes]
    declare = "" if declared else f" with data.classes: {{{', '.join(f'{n}: {v}' for n, v in zip(names, classes))}}}"
    return (f"{len(holders)} of {len(rows)} masks hold {len(values)} value(s) ({values[0]} to {values[-1]}) between "
            f"the classes {classes} along the borders between them only ({share:.0%} of their pixels in the masks "
            f"checked, e.g. {holders[0]['mask_path']}): the masks were resized or rotated with interpolation, which "
            f"blends the classes at every border. Snap each pixel to the nearest class: set data.lossy_masks: "
            f"snap{declare}")
