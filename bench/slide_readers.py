"""Benchmark: which library reads scanner slides (Aperio SVS) fastest, with equal pixels: tifffile's zarr store (as
`unetflow.io.slides` reads pyramidal TIFFs), tiffslide and openslide-python (with the openslide-bin library).

A synthetic Aperio SVS (RGB, JPEG tiles of 256, levels /1, /4, /16, a stripped thumbnail, the Aperio ImageDescription
with `MPP = 0.2500`) is written tile by tile; for each `--region` size the three readers then read the same
`--regions` random regions of that many pixels a side at every level, interleaved in `--rounds` rounds (order rotated
each round; the round of least wall time is kept: the machine is shared). Each reader's levels and pixel size are
printed, and before timing its pixels of every region compared with tifffile's (the largest absolute difference).
Ratios are to tifffile.

    python bench/slide_readers.py                      # 16384 x 16384, 20 regions per level of 512 and 2304
    python bench/slide_readers.py --size 2048 --regions 3 --region 256 --rounds 1    # smoke size
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
import tifffile
import tiffslide
import zarr

TILE = 256
STEPS = (1, 4, 16)
MPP = 0.25
HEADER = "Aperio Image Library v12.0.15"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16384, help="the base level is size x size")
    parser.add_argument("--regions", type=int, default=20, help="random regions per level")
    parser.add_argument("--region", type=int, nargs="+", default=[512, 2304],
                        help="region sizes: regions are region x region pixels of the level (2304: the default region "
                             "of infer.slide_region 2048 with its margins)")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def tile_pixels(top: int, left: int, step: int) -> np.ndarray:
    """A TILE x TILE RGB tile at level pixel (top, left) of the level with downsample `step`: pink textured tissue in
    diagonal bands, white glass between, with noise (so that JPEG compresses it about as much as real tissue)."""
    y, x = np.mgrid[top:top + TILE, left:left + TILE] * step
    tissue = np.sin((x + y) / 3000.0) > -0.3
    shade = 0.7 + 0.3 * np.sin(x / 37.0) * np.cos(y / 23.0)
    pixels = np.where(tissue[..., None], shade[..., None] * [220, 120, 190], 240)
    noise = np.random.default_rng((top, left, step)).integers(-16, 17, pixels.shape, dtype=np.int16)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def level_tiles(shape: tuple[int, int], step: int):
    for top in range(0, shape[0], TILE):
        for left in range(0, shape[1], TILE):
            yield tile_pixels(top, left, step)


def aperio_description(size: int, shape: tuple[int, int], reduced: str = "") -> str:
    """An Aperio ImageDescription: header, the base size and the tile (and for a reduced page ' -> W x H'), then the
    key = value pairs openslide and tiffslide read (MPP in µm, AppMag)."""
    return (f"{HEADER}\r\n{size}x{size} [0,0 {size}x{size}] ({TILE}x{TILE}){reduced} JPEG/RGB Q=90"
            f"|AppMag = 40|MPP = {MPP:.4f}|ScanScope ID = SS1234|Filename = synthetic")


def write_svs(path: Path, size: int) -> Path:
    """The synthetic SVS: base (tiled), thumbnail (stripped), the reduced levels (tiled), as Aperio lays them out."""
    tiled = dict(dtype=np.uint8, tile=(TILE, TILE), compression="jpeg",
                 compressionargs=dict(level=90), photometric="rgb", metadata=None)
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(level_tiles((size, size), 1), shape=(size, size, 3), description=aperio_description(
            size, (size, size)), **tiled)
        thumb = tile_pixels(0, 0, math.ceil(size / TILE))
        writer.write(thumb, description=aperio_description(size, thumb.shape, f" -> {TILE}x{TILE} -"),
                     photometric="rgb", metadata=None)
        for step in STEPS[1:]:
            shape = (math.ceil(size / step), math.ceil(size / step))
            writer.write(level_tiles(shape, step), shape=(*shape, 3),
                         description=aperio_description(size, shape, f" -> {shape[1]}x{shape[0]}"), **tiled)
    return path


class TifffileReader:
    """tifffile's zarr store of each level (the first series; an SVS's has a leading Z axis of 1)."""

    name = "tifffile + zarr"

    def __init__(self, path: Path):
        self.tif = tifffile.TiffFile(path)
        series = self.tif.series[0]
        self.levels = [zarr.open(series.aszarr(level=index), mode="r") for index in range(len(series.levels))]
        self.mpp = tifffile.tifffile.svs_description_metadata(self.tif.pages.first.description)["MPP"]

    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(level.shape[-3:-1]) for level in self.levels]

    def read(self, level: int, top: int, left: int, size: int) -> np.ndarray:
        return np.asarray(self.levels[level][..., top:top + size, left:left + size, :]).reshape(size, size, 3)


class OpenslideApiReader:
    """A reader with openslide's API (`module`: openslide or tiffslide; locations in base pixels)."""

    module = None

    def __init__(self, path: Path):
        self.slide = self.module.open_slide(str(path))
        self.mpp = float(self.slide.properties[self.module.PROPERTY_NAME_MPP_X])

    def shapes(self) -> list[tuple[int, int]]:
        return [(height, width) for width, height in self.slide.level_dimensions]

    def location(self, level: int, top: int, left: int) -> tuple[int, int]:
        """(x, y) in base pixels of a level's (top, left)."""
        scale = self.slide.level_downsamples[level]
        return round(left * scale), round(top * scale)


class TiffslideReader(OpenslideApiReader):
    """tiffslide's TiffSlide."""

    name, module = "tiffslide", tiffslide

    def read(self, level: int, top: int, left: int, size: int) -> np.ndarray:
        return self.slide.read_region(self.location(level, top, left), level, (size, size), as_array=True)


class OpenslideReader(OpenslideApiReader):
    """openslide-python's OpenSlide (RGBA PIL images; the alpha dropped)."""

    name, module = "openslide", openslide

    def read(self, level: int, top: int, left: int, size: int) -> np.ndarray:
        return np.asarray(self.slide.read_region(self.location(level, top, left), level, (size, size)))[..., :3]


def random_regions(shapes: list[tuple[int, int]], count: int, size: int, seed: int = 0) -> list[tuple]:
    """`count` random (level, top, left) per level, each region inside its level."""
    rng = np.random.default_rng(seed)
    return [(level, int(rng.integers(0, max(1, shape[0] - size))), int(rng.integers(0, max(1, shape[1] - size))))
            for level, shape in enumerate(shapes) for _ in range(count)]


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        path = write_svs(Path(scratch) / "synthetic.svs", args.size)
        print(f"wrote {args.size} x {args.size} SVS ({path.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - start:.0f} s; openslide vendor: {openslide.OpenSlide.detect_format(path)}")
        readers = [TifffileReader(path), TiffslideReader(path), OpenslideReader(path)]
        for reader in readers:
            print(f"{reader.name:16s} levels {reader.shapes()}, MPP {reader.mpp:g} µm")
        for size in args.region:
            compare(readers, size, args)


def compare(readers: list, size: int, args: argparse.Namespace) -> None:
    """Check that every reader reads the pixels tifffile reads, then time them on regions of `size` (see the module
    docstring)."""
    shapes = readers[0].shapes()
    sizes = [min(size, *shape) for shape in shapes]
    regions = random_regions(shapes, args.regions, size)
    print(f"regions of {size} x {size} (clipped to small levels), {len(regions)} of them:")
    for reader in readers[1:]:
        difference = max(int(np.abs(reader.read(level, top, left, sizes[level]).astype(int)
                                    - readers[0].read(level, top, left, sizes[level])).max())
                         for level, top, left in regions)
        print(f"  {reader.name:16s} largest |difference| to tifffile {difference}")
    best = {reader.name: (math.inf, math.inf) for reader in readers}
    for round_index in range(args.rounds):
        for reader in readers[round_index % 3:] + readers[:round_index % 3]:
            wall, cpu = time.perf_counter(), time.process_time()
            for level, top, left in regions:
                reader.read(level, top, left, sizes[level])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[reader.name] = min(best[reader.name], (wall, cpu))
    report(readers, best, sum(sizes[level] ** 2 for level, _, _ in regions))


def report(readers: list, best: dict, pixels: int) -> None:
    """Each reader's best round: wall and CPU seconds (tifffile and zarr decode tiles on several threads), Mpx/s of
    wall time and both times relative to tifffile's."""
    wall0, cpu0 = best[readers[0].name]
    for reader in readers:
        wall, cpu = best[reader.name]
        print(f"  {reader.name:16s} {wall:7.3f} s wall, {cpu:7.3f} s CPU ({pixels / wall / 1e6:6.1f} Mpx/s); "
              f"/ tifffile: wall {wall / wall0:.2f}, CPU {cpu / cpu0:.2f}")


if __name__ == "__main__":
    sys.exit(main())
