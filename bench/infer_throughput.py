"""Benchmark: images per second of the whole inference path (check, read, preprocess, tiled prediction, write,
summary) on generated images, where the time goes, and the tiled prediction step against MONAI's
sliding_window_inference at the same settings in the same run.

The package holds one random U-Net of the shape the default config had before the automatic plan (depth 3, width
16, patch 256 for 512x512 images; weights do not change the speed). Images are the demo's synthetic cells, as PNG.
The whole path runs once over every image (wall clock, `--threads` torch threads); the breakdown and the MONAI
comparison run on the first `--breakdown` images, the two sliding windows interleaved, the best of `--rounds` kept
per image, clocked in process CPU time (on a shared machine far steadier than the wall clock; with --threads 1 it
is the work done).

    python bench/infer_throughput.py                      # 500 images of 512x512, 2 threads
    python bench/infer_throughput.py --images 50 --size 256
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference
from random_package import PREDICT, random_package, two_classes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.data.demo import render_case  # noqa: E402
from unetflow.infer.infer import check_images  # noqa: E402
from unetflow.infer.package import load_package  # noqa: E402
from unetflow.infer.predictor import Predictor  # noqa: E402
from unetflow.infer.summary import unit_summary  # noqa: E402
from unetflow.io.images import write_image  # noqa: E402
from unetflow.io.labels import class_values  # noqa: E402
from unetflow.io.prediction_files import prediction_path, write_class_mask  # noqa: E402
from unetflow.io.sources import read_source_image, unit_array, units  # noqa: E402

CLASSES = two_classes("cell")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=512, help="images are size x size")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads and check threads")
    parser.add_argument("--breakdown", type=int, default=20, help="images timed step by step and against MONAI")
    parser.add_argument("--rounds", type=int, default=2)
    return parser.parse_args()


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    return [write_image(folder / f"img_{index:05d}.png", render_case(rng, size)[0]) for index in range(count)]


def monai_probabilities(predictor: Predictor, image: np.ndarray) -> torch.Tensor:
    """MONAI's sliding window with the package's (single) model: same tiles, overlap, Gaussian, batch, softmax."""
    model, patch = predictor.models[0], predictor.package.patches[0]

    def softmax(tiles: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(tiles).float(), dim=1)

    with torch.no_grad():
        tensor = torch.from_numpy(image.astype(np.float32))[None]
        return sliding_window_inference(tensor, patch, PREDICT["batch_size"], softmax, overlap=PREDICT["overlap"],
                                        mode="gaussian", sigma_scale=0.125)[0]


def breakdown(predictor: Predictor, sources: pd.DataFrame, out_dir: Path, rounds: int) -> dict[str, float]:
    """Seconds per image of each step of `Predictor.predict_source`, and of MONAI's sliding window."""
    out_dir.mkdir(parents=True, exist_ok=True)
    times = {step: 0.0 for step in ("read", "preprocess", "tiled prediction (ours)", "write mask", "summary",
                                    "tiled prediction (MONAI)")}
    largest = 0.0
    for source in sources.to_dict("records"):
        start = time.process_time()
        image = read_source_image(source)  # (C, 1, H, W)
        times["read"] += time.process_time() - start
        start = time.process_time()
        network = predictor.network_array(image)
        times["preprocess"] += time.process_time() - start
        best = {"ours": float("inf"), "MONAI": float("inf")}
        for _ in range(rounds):
            for name in ("ours", "MONAI"):
                start = time.process_time()
                result = (predictor.image_probabilities(image) if name == "ours"
                          else monai_probabilities(predictor, network[:, 0]))
                best[name] = min(best[name], time.process_time() - start)
                if name == "ours":
                    probs = result
                else:
                    largest = max(largest, float(np.abs(result.numpy() - probs[:, 0]).max()))
        times["tiled prediction (ours)"] += best["ours"]  # includes the preprocessing, as in the infer path
        times["tiled prediction (MONAI)"] += best["MONAI"]
        labels = probs.argmax(0).astype(np.uint8)
        start = time.process_time()
        path = write_class_mask(prediction_path(out_dir, source["id"], source), labels, predictor.package.classes,
                                source)
        times["write mask"] += time.process_time() - start
        start = time.process_time()
        confidence = probs.max(axis=0)
        for name, unit in units(source):
            unit_summary(name, source, unit, path, unit_array(labels, unit), unit_array(confidence, unit),
                         predictor.package.classes)
        times["summary"] += time.process_time() - start
    print(f"largest |ours - MONAI| softmax difference: {largest:.2e}")
    return {step: seconds / len(sources) for step, seconds in times.items()}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_images(folder / "images", args.images, args.size)
        package_path = random_package(folder, 1, args.depth, args.base_width, args.patch, args.size,
                                      CLASSES)
        start = time.perf_counter()
        predictor = Predictor(load_package(package_path), "cpu")
        sources = check_images(files, predictor.package, args.threads)
        checked = time.perf_counter()
        summary, _ = predictor.predict_sources(sources, folder / "masks")
        seconds = time.perf_counter() - start
        assert summary["id"].nunique() == args.images and len(class_values(CLASSES)) == 2
        print(f"{args.images} images of {args.size}x{args.size}, patch {args.patch}, depth {args.depth}, width "
              f"{args.base_width}, {args.threads} threads, {torch.get_num_threads()} torch threads")
        print(f"whole infer path: {seconds:.1f} s = {args.images / seconds:.2f} images/s "
              f"(check of every image {checked - start:.1f} s, then read/preprocess/predict/write/summary)")
        steps = breakdown(predictor, sources.head(args.breakdown), folder / "breakdown", args.rounds)
    total = sum(value for step, value in steps.items() if "MONAI" not in step) - steps["preprocess"]
    print(f"\nCPU seconds per image, first {min(args.breakdown, args.images)} images (best of {args.rounds} for the "
          f"predictions):")
    for step, value in steps.items():
        share = "" if "MONAI" in step else f"  {100 * value / total:5.1f}%"
        print(f"  {step:28s} {value * 1000:8.1f} ms{share}")
    print("  (ours includes the preprocessing; shares are of read + ours + write + summary)")
    ours, monai = steps["tiled prediction (ours)"], steps["tiled prediction (MONAI)"]
    print(f"tiled prediction: ours {ours:.3f} s, MONAI {monai:.3f} s per image: MONAI / ours = {monai / ours:.2f}x")


if __name__ == "__main__":
    main()
