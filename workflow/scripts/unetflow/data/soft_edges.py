"""Masks saved after resizing or rotating with interpolation: a band of values between the classes along every border
between them (about a hundred values on 0.1 % of the pixels of a resized 0/255 mask, wider bands where a mask was
scaled up more). They are the classes with soft edges, not hundreds of classes: ingest says so in one problem and
offers the fix that keeps the objects what they are, snapping every pixel to the nearest class (`data.lossy_masks:
snap` with the classes declared).

In the masks read to check (those with the most values, up to CHECKED_FILES), a value is a class when at least
FLAT_SHARE of its pixels are inside a flat region (their 3x3 neighbourhood holds only it); a soft edge is only
borders. The other values are soft edges when every one lies between the smallest and the largest class value, at
least EDGE_SHARE of their pixels lie in bands (`band_pixels`: connected runs of them next to two different classes,
no pixel further than EDGE_RADIUS from a class) and those bands line at least COVERED_SHARE of the class borders (a
whole mask resized; a few in-between pixels on one border are strays, see `unetflow.data.mask_checks`). One mask so
resized is enough.
"""

import numpy as np
from scipy import ndimage

from unetflow.io.sources import read_source_mask

FLAT_SHARE = 0.5
EDGE_RADIUS = 6  # pixels: no pixel of a soft edge is further than this from a class (a mask scaled up 6x or less)
EDGE_SHARE = 0.9
COVERED_SHARE = 0.5
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


def band_pixels(plane: np.ndarray, classes: list[int]) -> tuple[int, int, int, int]:
    """(pixels of values other than `classes`, those of them in bands between classes, class border pixels, those
    of them next to such a pixel) of a 2D mask; a band: a connected (8-neighbourhood) run of other values next to two
    different classes, none of its pixels further than EDGE_RADIUS from a class pixel."""
    other = ~np.isin(plane, classes)
    if not other.any():
        return 0, 0, 0, 0
    runs, count = ndimage.label(other, _EIGHT_NEIGHBOURS)
    neighbours = np.zeros(count + 1, int)
    for value in classes:
        neighbours[np.unique(runs[ndimage.binary_dilation(plane == value, _EIGHT_NEIGHBOURS) & other])] += 1
    thin = ndimage.maximum(ndimage.distance_transform_edt(other), runs, np.arange(count + 1)) <= EDGE_RADIUS
    in_bands = other & (neighbours >= 2)[runs] & thin[runs]
    border = ~other & (ndimage.minimum_filter(plane, footprint=_EIGHT_NEIGHBOURS) !=
                       ndimage.maximum_filter(plane, footprint=_EIGHT_NEIGHBOURS))
    lined = border & ndimage.binary_dilation(other, _EIGHT_NEIGHBOURS)
    return int(other.sum()), int(in_bands.sum()), int(border.sum()), int(lined.sum())


def on_borders(planes: list[np.ndarray], classes: list[int]) -> tuple[float, float]:
    """(the share of the pixels of values other than `classes` in bands between classes, the share of the class
    borders those bands line) of the masks (1, 1 for none)."""
    others, in_bands, border, lined = np.sum([band_pixels(plane, classes) for plane in planes], axis=0)
    return (in_bands / others if others else 1.0), (lined / border if border else 1.0)


def soft_edge_problem(rows: list[dict], classes: list[int] | None = None) -> str | None:
    """The one problem of masks whose values other than the classes (the declared class values, or for None the
    flat values of the masks checked) are soft edges, with the fix; None when they are something else (or none)."""
    read, declared = {}, classes is not None
    classes = classes if declared else flat_values(checked_planes(rows, read))
    holders = [row for row in rows if set(row["label_values"]) - set(classes)]
    values = sorted({value for row in holders for value in row["label_values"]} - set(classes))
    if len(classes) < 2 or not values or not all(min(classes) < value < max(classes) for value in values):
        return None
    share, lined = on_borders(checked_planes(holders, read), classes)
    if share < EDGE_SHARE or lined < COVERED_SHARE:
        return None
    names = ["background", "foreground"] if len(classes) == 2 else [f"class_{value}" for value in classes]
    declare = "" if declared else f" with data.classes: {{{', '.join(f'{n}: {v}' for n, v in zip(names, classes))}}}"
    return (f"{len(holders)} of {len(rows)} masks hold {len(values)} value(s) ({values[0]} to {values[-1]}) between "
            f"the classes {classes} along the borders between them only ({share:.0%} of their pixels in the masks "
            f"checked, e.g. {holders[0]['mask_path']}): the masks were resized or rotated with interpolation, which "
            f"blends the classes at every border. Snap each pixel to the nearest class: set data.lossy_masks: "
            f"snap{declare}")
