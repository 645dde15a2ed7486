"""Benchmark: peak resident memory of segmenting a whole-slide image (`unetflow.infer.slide`) for two slide sizes,
the second with 4x the pixels, to show that memory does not grow with the slide.

A synthetic pyramidal OME-TIFF (RGB, JPEG tiles of 512, levels /1, /4, /16, 0.25 µm, tissue in bands) is written
tile by tile from a generator, never whole in memory; a child process segments it with a package of one random
U-Net (weights do not change the memory) at `--pixel-size` µm and reports its peak resident set size
(getrusage ru_maxrss) and the wall time.

    python bench/slide_memory.py                          # 20,000 and 40,000 px a side
    python bench/slide_memory.py --size 8000 --pixel-size 2 --region 512

That last command, 2 torch threads on the shared 2-core CPU machine (2026-12-05): 8,000 x 8,000 px (64 megapixels)
peak RSS 504 MiB, 12 s; 16,000 x 16,000 px (256 megapixels) 555 MiB, 17 s (labels 1000 x 1000 and 2000 x 2000 at
2 µm, 4 and 16 regions). With the default --region 2048 both slides fit one region, whose buffers then grow with the
slide (533 and 872 MiB): the memory is bounded by the region, not the slide. Of the ~450 MiB, torch's import is most.

`python bench/slide_memory.py --size 50000 --pixel-size 4` (same machine, load average 1-2, 2026-12-05; 13.7 minutes in
all, nearly all of it writing the slides): 50,000 x 50,000 px (2.5 gigapixels, 168 MiB of JPEG) peak RSS 741 MiB,
5 s of prediction (labels 3125 x 3125 at 4 µm, the /16 level read directly); 100,000 x 100,000 px (10 gigapixels,
668 MiB) 911 MiB, 20 s (6250 x 6250). Memory grew by 170 MiB for 4x the pixels (the label memory map's touched
pages and the overview), far under the 4 GB asked for.
"""

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from random_package import PREDICT as SHARED_PREDICT
from random_package import PREPROCESS, random_package, two_classes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.infer.predictor import Predictor  # noqa: E402
from unetflow.infer.slide import predict_slides  # noqa: E402

TILE = 512
BASE_PIXEL = 0.25  # µm
PREDICT = dict(SHARED_PREDICT, batch_size=8)
CLASSES = two_classes("tissue")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20000, help="the first slide is size x size; the second 2x a side")
    parser.add_argument("--pixel-size", type=float, default=2.0, help="µm per pixel the model predicts at")
    parser.add_argument("--region", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("PACKAGE", "SLIDE", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def tile_pixels(top: int, left: int, step: int) -> np.ndarray:
    """A TILE x TILE RGB tile of the level with downsample `step` at level pixel (top, left): pink tissue in
    diagonal bands with a fine texture, white glass between them."""
    y, x = np.mgrid[top:top + TILE, left:left + TILE] * step
    tissue = np.sin((x + y) / 4000.0) > 0.2
    shade = 0.7 + 0.3 * np.sin(x / 37.0) * np.cos(y / 23.0)
    pixels = np.where(tissue[..., None], shade[..., None] * [220, 120, 190], 240)
    return pixels.astype(np.uint8)


def level_tiles(shape: tuple[int, int], step: int):
    for top in range(0, shape[0], TILE):
        for left in range(0, shape[1], TILE):
            yield tile_pixels(top, left, step)


def write_slide(path: Path, size: int) -> Path:
    """The synthetic slide (see the module docstring), one tile in memory at a time."""
    options = dict(dtype=np.uint8, tile=(TILE, TILE), compression="jpeg", photometric="rgb")
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as writer:
        for index, step in enumerate((1, 4, 16)):
            shape = (math.ceil(size / step), math.ceil(size / step))
            extra = dict(subifds=2, metadata={"PhysicalSizeX": BASE_PIXEL, "PhysicalSizeY": BASE_PIXEL}) \
                if index == 0 else dict(subfiletype=1)
            writer.write(level_tiles(shape, step), shape=(*shape, 3), **options, **extra)
    return path


def make_package(folder: Path, preprocess: dict = PREPROCESS) -> Path:
    """A package of one random RGB U-Net (depth 3, width 8, patch 128; its checkpoint folder/fold0.pt), normalised
    as `preprocess` says."""
    return random_package(folder, 3, 3, 8, 128, 512, CLASSES, preprocess, PREDICT)


def child(package: str, slide: str, out: str, args: argparse.Namespace) -> None:
    """Segment one slide and print its summary line with this process's peak resident memory."""
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    row = predict_slides(Predictor.load(package, "cpu"), [slide], out, args.pixel_size, args.region).iloc[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB, {time.perf_counter() - start:.0f} s, labels {row['height']} x {row['width']} "
          f"at {row['pixel_size_um']:g} µm, tissue {row['tissue_mm2']:.1f} mm²")


def main() -> None:
    args = parse_args()
    if args.child:
        return child(*args.child, args)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        package = make_package(folder)
        for size in (args.size, 2 * args.size):
            slide = write_slide(folder / f"slide{size}.ome.tif", size)
            megabytes = slide.stat().st_size / 2**20
            result = subprocess.run([sys.executable, __file__, "--child", str(package), str(slide), str(folder),
                                     "--pixel-size", str(args.pixel_size), "--region", str(args.region),
                                     "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            print(f"slide {size} x {size} RGB ({size * size / 1e6:.0f} megapixels, {megabytes:.0f} MiB JPEG): "
                  f"{result.stdout.strip()}")
            slide.unlink()


if __name__ == "__main__":
    main()
