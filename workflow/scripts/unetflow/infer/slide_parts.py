"""A slide predicted in parts (e.g. by separate jobs) and merged, equal to predicting it in one part.

Part k of n predicts a run of whole rows of regions (`part_rows`) into a band of the label grid: those rows, and of an
instance package also the rows below them that its objects may reach (`band_rows`: an object is owned, and written
whole, by the region its bounding box starts in). Merging pastes the bands in order where they hold labels, the
object ids of each after those of the parts before: as one part writes its regions in order, a later object winning
a pixel, and numbers them in order.
"""

import math
from pathlib import Path

import numpy as np

CHUNK_ROWS = 1024  # rows of a band pasted at a time while merging


def part_rows(height: int, core: int, part: int, parts: int) -> tuple[int, int]:
    """The rows [top, bottom) of a label grid of `height` that part `part` of `parts` predicts: a run of whole rows
    of regions (empty when there are more parts than rows of regions)."""
    rows = math.ceil(height / core)
    return min(height, rows * part // parts * core), min(height, rows * (part + 1) // parts * core)


def band_rows(rows: tuple[int, int], height: int, reach: int) -> tuple[int, int]:
    """The rows a part writes: its `rows` and the `reach` rows below them (those its objects may extend into)."""
    return rows[0], min(height, rows[1] + reach)


def objects_file(part_path) -> Path:
    """The object rows beside a part's band part<k>.npy: part<k>_objects.npy."""
    return Path(str(part_path).removesuffix(".npy") + "_objects.npy")


def joined_parts(part_paths, bands, shape: tuple[int, int], dtype, scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """The label grid (a memory map in `scratch`; a single part's band as it is) and the object rows (ids in the first
    column) of a slide's parts, part k's band pasted at its rows `bands[k]` (see the module docstring). ValueError
    naming the parts whose band is not the size of its rows."""
    arrays = [np.load(path, mmap_mode="r") for path in part_paths]
    wrong = [str(path) for path, array, (top, bottom) in zip(part_paths, arrays, bands)
             if array.shape != (bottom - top, shape[1])]
    if wrong or len(arrays) != len(bands):
        raise ValueError(f"the slide parts {', '.join(wrong or map(str, part_paths))} do not make up a label grid of "
                         f"{shape}; predict them again")
    found = [np.load(objects_file(path)) for path in part_paths]
    if len(arrays) == 1:
        return arrays[0], found[0]
    labels, offset = np.lib.format.open_memmap(scratch, "w+", dtype, shape), 0
    for array, (top, _), rows in zip(arrays, bands, found):
        for start in range(0, len(array), CHUNK_ROWS):
            chunk = np.asarray(array[start:start + CHUNK_ROWS])
            np.copyto(labels[top + start:top + start + len(chunk)], chunk + dtype(offset), where=chunk > 0)
        rows[:, 0] += offset
        offset += len(rows)
    return labels, np.concatenate(found)
