"""Benchmark: segmenting a whole-slide image with `unetflow.infer.slide.SlidePredictor` (regions read from the
pyramidal TIFF, predicted with a margin, labels written as a pyramidal OME-TIFF) against MONAI's pipeline for the
same level: `monai`: `WSIReader(backend="tifffile")` reads the level whole, `sliding_window_inference` (Gaussian
mode, sigma = tile / 8, softmax per tile) segments it, the argmax is written as a Deflate TIFF; `monai_wsi`: MONAI's
patch pipeline for WSIs (`WSISlidingWindowSplitter` reading each patch with its OpenSlide backend, as MONAI advises,
+ `PatchInferer` + `ZarrAvgMerger`, which averages uniformly, so its masks differ from the Gaussian blends).

All use the same random-weight U-Net (depth 3, width 8, the package of bench/slide_memory.py: patch 128, overlap
0.5, tile batch 8, float32, no mirroring) and the same input: the level normalised by `normalize_with` (window 0-255),
rounded to float16 as our regions are (`IMAGE_DTYPE`). The synthetic slide is RGB tissue everywhere (no region is
skipped as glass), JPEG tiles of 512, levels /1 and /4, 0.5 µm, predicted at 0.5 µm (level 0 as it is). The three run
interleaved `--rounds` times after an untimed warm-up on a small slide (best kept) with `--threads` torch threads;
reported: each one's wall and CPU time and their ratios (with one thread the process CPU time is the steadier clock
on a shared machine), the share of differing mask pixels (with the largest margin between MONAI's two class
probabilities there: near-ties that float rounding flips), and for ours the time in reading (`Slide.pixels`: regions
and the overview), computing (`SlidePredictor.region_probabilities`: the network and blending) and writing
(`write_label_pyramid`), timed by wrapping those functions in this script; the rest is normalisation, tissue
detection and the summary.

    python bench/slide_vs_monai.py                       # 4096 x 4096 at the predicted level, 2 rounds, 1 thread
    python bench/slide_vs_monai.py --size 512 --rounds 1 # smoke size
"""

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import tifffile
import torch
from monai.data import WSIReader
from monai.inferers import PatchInferer, WSISlidingWindowSplitter, ZarrAvgMerger, sliding_window_inference
from slide_memory import PREPROCESS, make_package

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import unetflow.infer.slide as slide_module  # noqa: E402
from unetflow.data.normalization import normalize_with  # noqa: E402
from unetflow.infer.predictor import Predictor  # noqa: E402
from unetflow.io.slides import Slide  # noqa: E402
from unetflow.io.store import IMAGE_DTYPE  # noqa: E402
from unetflow.net.model import UNet  # noqa: E402

PIXEL_SIZE = 0.5  # µm, of the base level and of the prediction
WINDOW = dict(PREPROCESS, normalization="window", window=[0, 255])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="the predicted level is size x size")
    parser.add_argument("--region", type=int, default=2048, help="our region core (infer.slide_region)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def write_slide(path: Path, size: int) -> Path:
    """The synthetic slide (see the module docstring): textured pink tissue with noise, everywhere."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size]
    shade = 0.6 + 0.25 * np.sin(x / 37.0) * np.cos(y / 23.0) + 0.15 * np.sin((x + 2 * y) / 300.0)
    pixels = np.clip(shade[..., None] * [220, 120, 190] + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    options = dict(tile=(512, 512), compression="jpeg", photometric="rgb")
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as writer:
        writer.write(pixels, subifds=1, metadata={"PhysicalSizeX": PIXEL_SIZE, "PhysicalSizeY": PIXEL_SIZE}, **options)
        writer.write(pixels[::4, ::4], subfiletype=1, **options)
    return path


class Timers:
    """Seconds spent in wrapped functions, by name."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, owner, attribute: str, name: str) -> None:
        function = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
        setattr(owner, attribute, timed)


def ours(predictor: Predictor, slide: Path, out: Path, region: int) -> Path:
    """SlidePredictor on the slide, writing the label pyramid `out` (no GeoJSON: MONAI writes none)."""
    slide_module.SlidePredictor(predictor, region, geojson=False).predict(slide, out, PIXEL_SIZE)
    return out


def monai(model: torch.nn.Module, slide: Path, out: Path, predict: dict) -> tuple[Path, torch.Tensor]:
    """MONAI's WSIReader, the same normalisation, sliding_window_inference, argmax written as a TIFF; the TIFF and
    the probabilities (K, H, W)."""
    reader = WSIReader(backend="tifffile", level=0)
    wsi = reader.read(str(slide))
    level, _ = reader.get_data(wsi, level=0)
    network = normalize_with(level.astype(np.float32), WINDOW).astype(IMAGE_DTYPE).astype(np.float32)
    patch = (128, 128)
    with torch.no_grad():
        probabilities = sliding_window_inference(torch.from_numpy(network)[None], patch, predict["batch_size"],
                                                 lambda tiles: torch.softmax(model(tiles), dim=1),
                                                 overlap=predict["overlap"], mode="gaussian", sigma_scale=0.125)
    tifffile.imwrite(out, probabilities[0].argmax(dim=0).to(torch.uint8).numpy(), compression="zlib")
    return out, probabilities[0]


def monai_wsi(model: torch.nn.Module, slide: Path, out: Path, predict: dict) -> tuple[Path, None]:
    """MONAI's patch pipeline for WSIs: `WSISlidingWindowSplitter` reads each patch from the file (OpenSlide),
    `PatchInferer` batches them, `ZarrAvgMerger` averages the softmax in zarr arrays on disk (uniformly: MONAI's
    mergers have no Gaussian weights); the argmax written as a TIFF."""
    def preprocess(patches: torch.Tensor) -> torch.Tensor:
        network = normalize_with(patches.numpy().astype(np.float32), WINDOW)
        return torch.from_numpy(network.astype(IMAGE_DTYPE).astype(np.float32))

    stores = {name: str(out.with_name(f"{out.stem}_{name}.zarr")) for name in ("store", "value_store", "count_store")}
    splitter = WSISlidingWindowSplitter((128, 128), overlap=predict["overlap"], reader="OpenSlide", level=0)
    inferer = PatchInferer(splitter, ZarrAvgMerger, predict["batch_size"], preprocessing=preprocess, **stores)
    with torch.no_grad():
        merged = inferer(str(slide), lambda tiles: torch.softmax(model(tiles), dim=1))
    tifffile.imwrite(out, np.asarray(merged[0]).argmax(axis=0).astype(np.uint8), compression="zlib")
    return out, None


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        package = make_package(folder, WINDOW)
        checkpoint = torch.load(folder / "fold0.pt", weights_only=True)
        model = UNet(**checkpoint["hparams"]).eval()
        model.load_state_dict(checkpoint["model"])
        predictor = Predictor.load(package, "cpu")
        slide, warm = write_slide(folder / "slide.ome.tif", args.size), write_slide(folder / "warm.ome.tif", 512)
        ours(predictor, warm, folder / "warm_ours.ome.tif", args.region)  # untimed warm-up of both
        monai(model, warm, folder / "warm_monai.tif", predictor.package.predict)
        monai_wsi(model, warm, folder / "warm_monai_wsi.tif", predictor.package.predict)
        timers = Timers()
        timers.wrap(Slide, "pixels", "reading")
        timers.wrap(slide_module.SlidePredictor, "region_probabilities", "computing")
        timers.wrap(slide_module, "write_label_pyramid", "writing")
        runs = dict(ours=lambda: ours(predictor, slide, folder / "ours.ome.tif", args.region),
                    monai=lambda: monai(model, slide, folder / "monai.tif", predictor.package.predict),
                    monai_wsi=lambda: monai_wsi(model, slide, folder / "monai_wsi.tif", predictor.package.predict))
        best, outputs = {}, {}
        for round_index in range(args.rounds):
            for name in list(runs)[round_index % 3:] + list(runs)[:round_index % 3]:
                before = dict(timers.seconds)
                wall, cpu = time.perf_counter(), time.process_time()
                outputs[name] = runs[name]()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                parts = {key: value - before.get(key, 0.0) for key, value in timers.seconds.items()}
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu, parts)
        with Slide(outputs["ours"]) as labels:
            masks = dict(ours=labels.read_region(0, 0, 0, *labels.levels[0].shape)[0],
                         monai=tifffile.imread(outputs["monai"][0]), monai_wsi=tifffile.imread(outputs["monai_wsi"][0]))
        probabilities = outputs["monai"][1]
        report(best, masks, (probabilities[1] - probabilities[0]).abs().numpy(), args)


def report(best: dict, masks: dict, margin: np.ndarray, args: argparse.Namespace) -> None:
    print(f"{args.size} x {args.size} RGB at {PIXEL_SIZE} µm, patch 128, overlap 0.5, batch 8, {args.threads} "
          f"torch threads, best of {args.rounds} round(s)")
    for name, (wall, cpu, _) in best.items():
        print(f"{name:9s} wall {wall:7.2f} s, CPU {cpu:7.2f} s")
    wall, _, parts = best["ours"]
    shares = {key: parts.get(key, 0.0) for key in ("reading", "computing", "writing")}
    shares["other"] = wall - sum(shares.values())
    print("ours: " + ", ".join(f"{key} {seconds:.2f} s ({100 * seconds / wall:.1f}%)"
                               for key, seconds in shares.items()))
    for peer in ("monai", "monai_wsi"):
        print(f"time ours / {peer}: wall {best['ours'][0] / best[peer][0]:.2f}, CPU "
              f"{best['ours'][1] / best[peer][1]:.2f}")
    differing = masks["ours"] != masks["monai"]
    print(f"differing mask pixels: {differing.mean():.2e} ({int(differing.sum())} of {differing.size}); MONAI's "
          f"|p1 - p0| there at most {margin[differing].max() if differing.any() else 0:.1e}, median over all pixels "
          f"{np.median(margin):.1e}")
    print(f"differing mask pixels, monai_wsi (uniform averaging) vs monai (Gaussian): "
          f"{np.mean(masks['monai_wsi'] != masks['monai']):.2e}")


if __name__ == "__main__":
    main()
