"""Share of the training time spent in validation, whole validation set every epoch vs `train.val_share`.

A generated data set of mixed image sizes (up to 1920x1080, cell-like blobs as the demo's) is split 70/15/15 as
the default split does; the same U-Net trains the same steps twice: with `val_share: 1` (every validation case
every epoch, as before issue 13) and with the default `val_share`. Each run prints its epochs' validation seconds
and share, and the share of the whole run (epochs plus the final choice of checkpoint on the full validation set).

With `--volume ZxYxX`, the cases are generated volumes of that shape instead (`unetflow.data.demo_volumes`,
1 mm voxels), trained by a 3D U-Net, one of them validating: one large validation volume.

    python bench/validation_share.py                          # 1000 images, 2 epochs x 25 steps, batch 4
    python bench/validation_share.py --volume 128x160x128 --count 5 --epochs 6 --batch 2   # one validation volume
    python bench/validation_share.py --count 40 --epochs 1 --iterations 2 --sizes 96x64   # smoke
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_cases import planned_config, train_defaults  # noqa: E402

from unetflow.data.demo import render_case  # noqa: E402
from unetflow.data.demo_volumes import ellipsoid_volume  # noqa: E402
from unetflow.data.normalization import normalize  # noqa: E402
from unetflow.train.train import Trainer  # noqa: E402

SIZES = "1920x1080,1280x720,1024x768,720x576,640x480,512x512,384x288"  # width x height, drawn uniformly


def mixed_size_cases(count: int, sizes: list[tuple[int, int]], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` (normalised image (1, H, W) float16, labels (H, W)) cases, each of a size drawn from `sizes`."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        width, height = sizes[rng.integers(len(sizes))]
        image, mask = render_case(rng, max(width, height))
        cases.append((normalize(image[None, :height, :width]).astype(np.float16),
                      (mask[:height, :width] > 0).astype(np.uint8)))
    return cases


def volume_cases(count: int, shape: list[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` (image (1, Z, Y, X) float16, labels) volumes of ellipsoids of `shape` 1 mm voxels."""
    rng = np.random.default_rng(seed)
    return [(image[None].astype(np.float16), labels)
            for image, labels in (ellipsoid_volume(shape, (1.0, 1.0, 1.0), rng) for _ in range(count))]


def run(name: str, cfg: dict, train, val, workdir: Path) -> dict:
    """Train once (the unset keys planned from the training cases, as the workflow plans them); the validation
    seconds and shares of its epochs and of the whole run (setup excluded)."""
    cfg, plan = planned_config(cfg, train, num_classes=2)
    trainer = Trainer(cfg, plan, train, val, [str(i) for i in range(len(train))], workdir / f"{name}.state",
                      logging.getLogger(name))
    start = time.perf_counter()
    metrics = trainer.run(workdir / f"{name}_best.pt", workdir / f"{name}_last.pt")
    total = time.perf_counter() - start
    epochs, epoch_validation = metrics["seconds"].sum(), metrics["val_seconds"].sum()
    final = total - epochs  # the final choice of checkpoint on the whole validation set, and checkpoint writing
    return dict(run=name, val_cases_per_epoch=int(metrics["val_cases"].max()),
                validated_epochs=int((metrics["val_cases"] > 0).sum()), epochs=len(metrics),
                train_s=epochs - epoch_validation, epoch_val_s=epoch_validation, epoch_val_share=epoch_validation
                / epochs, final_choice_s=final, run_val_share=(epoch_validation + final) / total, total_s=total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--sizes", default=SIZES, help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default="whole,default", help="which of the two runs, comma-separated")
    parser.add_argument("--volume", help="ZxYxX: volumes of this shape (3D), one validating, instead of images")
    parser.add_argument("--workdir", default="/tmp/unetflow_bench_validation", help="also gets the table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(side) for side in size.split("x")) for size in args.sizes.split(",")]
    start = time.perf_counter()
    if args.volume:
        cases = volume_cases(args.count, [int(side) for side in args.volume.split("x")], seed=0)
        n_val, n_test, what = 1, 0, f"volumes of {args.volume}"
    else:
        cases = mixed_size_cases(args.count, sizes, seed=0)
        n_val = n_test = max(1, round(0.15 * args.count))
        what = f"images ({args.sizes})"
    train, val = cases[n_val + n_test:], cases[:n_val]
    print(f"{args.count} {what} generated in {time.perf_counter() - start:.0f} s; "
          f"train/val/(test) {len(train)}/{len(val)}/{n_test}; {args.epochs} epochs x {args.iterations} steps")
    cfg = dict(train_defaults(), device="cpu", epochs=args.epochs, iterations_per_epoch=args.iterations,
               batch_size=args.batch)
    runs = {"whole": ("whole validation set every epoch (val_share 1)", dict(cfg, val_share=1.0)),
            "default": (f"default val_share {cfg['val_share']}", cfg)}
    rows = [run(*runs[name], train, val, workdir) for name in args.runs.split(",")]
    table = pd.DataFrame(rows)
    table.to_parquet(workdir / "validation_share.parquet")
    print(table.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
