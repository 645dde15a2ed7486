"""Label images of slides (class indices or object ids): a pyramidal, tiled OME-TIFF written tile by tile from a
label array on disk (a memory map), its subresolutions taken by nearest neighbour (every 2nd pixel of the level
above), the pixel size in its OME metadata, so that viewers (QuPath, napari) overlay it on the slide."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

TILE = 256
COMPRESSION = "zlib"


def pyramid_shapes(shape: tuple[int, int], tile: int = TILE) -> list[tuple[int, int]]:
    """The (height, width) of every level: the full size, then halved (rounding up) until one side fits a tile."""
    shapes = [tuple(shape)]
    while min(shapes[-1]) > tile:
        shapes.append(tuple((side + 1) // 2 for side in shapes[-1]))
    return shapes


def level_tiles(labels: np.ndarray, step: int, tile: int = TILE) -> Iterator[np.ndarray]:
    """The tiles (tile x tile, zero-padded at the far edges) of `labels` taken at every `step`th pixel, in the
    row-major order tifffile writes them; one tile in memory at a time."""
    height, width = (len(range(0, side, step)) for side in labels.shape)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            part = labels[top * step:(top + tile) * step:step, left * step:(left + tile) * step:step]
            padded = np.zeros((tile, tile), labels.dtype)
            padded[:part.shape[0], :part.shape[1]] = part
            yield padded


def write_label_pyramid(path, labels: np.ndarray, pixel_size: float, tile: int = TILE) -> Path:
    """`labels` (H, W) of an unsigned integer type (uint8 classes, uint32 object ids; an array or a memory map)
    written to `path` as a tiled pyramidal OME-TIFF (SubIFDs), `pixel_size` µm per base pixel in its OME metadata and
    TIFF resolution tags."""
    shapes = pyramid_shapes(labels.shape, tile)
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as writer:
        for index, shape in enumerate(shapes):
            size = pixel_size * 2 ** index
            options = dict(metadata={"axes": "YX", "PhysicalSizeX": size, "PhysicalSizeY": size})
            if index:
                options = dict(subfiletype=1)
            writer.write(level_tiles(labels, 2 ** index, tile), shape=shape, dtype=labels.dtype, tile=(tile, tile),
                         compression=COMPRESSION, resolution=(1e4 / size, 1e4 / size), resolutionunit="CENTIMETER",
                         subifds=len(shapes) - 1 if index == 0 else None, **options)
    return path
