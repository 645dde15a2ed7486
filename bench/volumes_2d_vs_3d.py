"""2D-slice vs 3D U-Net on generated NIfTI volumes, trained side by side by the workflow.

Writes `--count` ellipsoid volumes (unetflow.data.demo_volumes: 2 foreground classes in blurred noise, anisotropic voxel
spacing) and runs the workflow up to the leaderboard with two experiments that differ only in `train.dims` (2 and
3), everything else planned and the same time budget for each; prints the leaderboard (test Dice per class, dims,
patch size, training minutes), each experiment's plan and steps, the wall clock (data, training, prediction and
evaluation of both) and the load average.

    python bench/volumes_2d_vs_3d.py --workdir /tmp/vol_bench        # 10 volumes of 160x160x64 at 1x1x3 mm, 8 min each
    python bench/volumes_2d_vs_3d.py --workdir /tmp/vol_smoke --count 3 --shape 24 20 12 --minutes 0.1   # smoke
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from unetflow.data.demo_volumes import write_volume_pairs  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the data and the workflow's results")
    parser.add_argument("--count", type=int, default=10, help="volumes (60%% train, 20%% val, 20%% test)")
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 160, 64], help="X Y Z voxels (slices along Z)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 3.0], help="X Y Z voxel size (mm)")
    parser.add_argument("--classes", type=int, default=3, help="classes including the background")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of each experiment")
    parser.add_argument("--cores", type=int, default=2)
    return parser.parse_args()


def write_config(args) -> Path:
    """The workflow config: the generated data, a seeded split, the budget, a 2D and a 3D experiment."""
    images, masks = write_volume_pairs(args.workdir / "data", args.count, args.shape, args.spacing, args.classes)
    config = dict(results="results", data=dict(images=str(images), masks=str(masks)),
                  split=dict(train=0.6, val=0.2, test=0.2, seed=0), train=dict(budget_minutes=args.minutes),
                  experiments=dict(unet2d=dict(train=dict(dims=2)), unet3d=dict(train=dict(dims=3))))
    path = args.workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    args = arguments()
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(args)
    load_before, start = os.getloadavg(), time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(args.workdir),
               "--configfile", str(config), "--cores", str(args.cores), "results/leaderboard.parquet"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall, load_after = time.perf_counter() - start, os.getloadavg()
    results = args.workdir / "results"
    board = pd.read_parquet(results / "leaderboard.parquet")
    board["train_minutes"] = board["train_seconds"] / 60
    columns = ["experiment", "dims", "patch_size", "class_name", "n_cases", "dice_mean", "dice_std", "train_minutes"]
    print(f"{args.count} volumes of {args.shape} voxels at {args.spacing} mm, {args.classes} classes; "
          f"{args.minutes:g}-minute training budget per experiment, --cores {args.cores}")
    print(board[columns].to_string(index=False, float_format="%.3f"))
    for experiment in ("unet2d", "unet3d"):
        plan = json.loads((results / experiment / "plan.json").read_text())["settings"]
        steps = pd.read_parquet(results / experiment / "train/fold0/metrics.parquet")["steps"].iloc[-1]
        print(f"{experiment}: " + ", ".join(f"{key} {entry['value']}" for key, entry in plan.items())
              + f"; {steps} steps")
    print(f"wall clock {wall / 60:.1f} min; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")


if __name__ == "__main__":
    main()
