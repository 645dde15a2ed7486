"""Does a Dice of class 0 hurt binary data whose foreground is sparse? `train.dice_background: false` (nnU-Net's,
what `auto` plans for such data) against `true` (what `auto` plans for ISBI 2012), two seeds each.

Generates images (default 40 of 128x128) of a few small, faint blobs (radius 2-5 px, about 1.5 % of the pixels) in
textured noise under uneven illumination, and runs the workflow up to the leaderboard with four experiments of the
same step budget; prints each experiment's test Dice of the foreground (class 1) and of the background (class 0).

    python bench/sparse_dice_background.py --workdir /tmp/sparse_dice      # 4 x 400 steps
"""

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from unetflow.io.images import write_image, write_mask  # noqa: E402


def render_sparse(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One 8-bit grey image of a few small faint blobs, and its 0/255 mask."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(3, 3 + size * size // 2500)):
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        axes = tuple(int(a) for a in rng.integers(2, 6, 2))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    texture = cv2.GaussianBlur(rng.normal(0, 0.1, (size, size)).astype(np.float32), (0, 0), 2)
    ramp = np.linspace(0, rng.uniform(-0.2, 0.2), size, dtype=np.float32)
    image = 0.3 + ramp[None, :] + texture + (mask > 0) * rng.uniform(0.15, 0.3)
    image = cv2.GaussianBlur(image, (0, 0), 1.0) + rng.normal(0, 0.06, image.shape).astype(np.float32)
    return np.clip(image * 255, 0, 255).astype(np.uint8), mask


def write_data(folder: Path, count: int, size: int) -> float:
    """Write the image/mask pairs; the foreground's share of the pixels."""
    rng, shares = np.random.default_rng(0), []
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, mask = render_sparse(rng, size)
        write_image(folder / "images" / f"case_{index:03d}.png", image)
        write_mask(folder / "masks" / f"case_{index:03d}.png", mask)
        shares.append((mask > 0).mean())
    return float(np.mean(shares))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    share = write_data(args.workdir / "data", args.count, args.size)
    experiments = {f"dice_background_{str(flag).lower()}_seed{seed}":
                   {"train": {"dice_background": flag, "seed": seed, "budget_steps": args.steps}}
                   for flag in (False, True) for seed in (0, 1)}
    config = dict(results="results", data=dict(images=str(args.workdir / "data" / "images"),
                                               masks=str(args.workdir / "data" / "masks")),
                  split=dict(train=0.6, val=0.1, test=0.3, seed=0), experiments=experiments)
    (args.workdir / "config.yaml").write_text(yaml.safe_dump(config))
    subprocess.run(["snakemake", "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(args.workdir),
                    "--configfile", str(args.workdir / "config.yaml"), "--until", "leaderboard"], check=True)
    print(f"foreground {share:.1%} of the pixels")
    for name in experiments:
        summary = pd.read_parquet(args.workdir / "results" / name / "evaluate" / "summary.parquet")
        dice = dict(zip(summary["class"], summary["dice_mean"].round(3)))
        print(f"{name}: test Dice foreground {dice[1]} / background {dice[0]}")


if __name__ == "__main__":
    main()
