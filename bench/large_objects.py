"""Objects larger than a patch: the whole workflow at full resolution vs at the planned reduced resolution.

Generates images (default 40 of 1280x960) each holding one large blob (40-85 % of the image height across, as a
polyp filling an endoscopy frame) with a dark rim, whose inside mixes its own fine texture with patches of the
background's, under illumination that varies across the image more than the blob's contrast: a window inside the
blob often looks like background, and only the rim and the shape tell them apart.
Runs the workflow twice with the same time budget, `preprocess.scale: 1` and `auto` (or, with `--vary
resolution`, both at `preprocess.scale: 1` with `train.resolution: 1` and planned against the budget), and prints
the test Dice, per predicted mask the objects of at least 1000 px (1 is right; more means fragments), the largest
one's share of the foreground and the specks under 50 px, the steps trained and the minutes of each run.

    python bench/large_objects.py                                   # 40 images of 1280x960, 6 minutes each
    python bench/large_objects.py --vary resolution --count 120 --width 448 --height 384 --minutes 4
    python bench/large_objects.py --count 8 --width 320 --height 240 --minutes 0.1   # smoke
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
LARGE_PIXELS = 1000  # a predicted object this large counts as a piece of the blob
SPECK_PIXELS = 50


def render_large_object(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One 8-bit grey image with a large textured blob, and its 0/255 mask."""
    mask = np.zeros((height, width), np.uint8)
    axes = [int(height * rng.uniform(0.2, 0.42) * stretch) for stretch in (rng.uniform(0.8, 1.3), 1.0)]
    centre = (int(rng.integers(axes[0], width - axes[0])), int(rng.integers(axes[1], height - axes[1])))
    cv2.ellipse(mask, centre, tuple(axes), float(rng.uniform(0, 180)), 0, 360, 255, -1)
    warp = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), height / 12)
    mask = ((cv2.GaussianBlur(mask.astype(np.float32), (0, 0), height / 40) + 40 * warp) > 127).astype(np.uint8) * 255
    fine = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 2)
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 8)
    patches = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), height / 16) > 0
    texture = np.where((mask > 0) & patches, fine * 0.6, coarse * 2.0)  # inside, patches of background texture
    rim = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((height // 60 + 1,) * 2, np.uint8)) > 0
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.5 + 0.3 * ((np.cos(angle) * xx / width + np.sin(angle) * yy / height) - 0.5)
    image = light + 0.08 * texture + 0.02 * (mask > 0) - 0.08 * rim + rng.normal(0, 0.02, (height, width))
    return np.clip(image * 255, 0, 255).astype(np.uint8), mask


def write_data_set(root: Path, count: int, width: int, height: int, seed: int) -> None:
    """`count` image/mask PNG pairs under root/images and root/masks."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, mask = render_large_object(rng, width, height)
        cv2.imwrite(str(root / "images" / f"case_{index:03d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"case_{index:03d}.png"), mask)


def run_workflow(workdir: Path, data: Path, settings: dict, minutes: float, cores: int) -> dict:
    """The workflow to `evaluate` with `settings` (preprocess.scale, train.resolution); test Dice, objects per
    predicted mask, steps, minutes."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = dict(results="results", data=dict(images=str(data / "images"), masks=str(data / "masks")),
                  preprocess=dict(scale=settings["scale"]),
                  train=dict(budget_minutes=minutes, device="cpu", resolution=settings["resolution"]))
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
                    "--cores", str(cores), "--configfile", str(workdir / "config.yaml"), "--until", "evaluate",
                    "--quiet", "rules", "--rerun-triggers", "mtime"], check=True)
    elapsed = (time.perf_counter() - start) / 60
    results = workdir / "results"
    summary = pd.read_parquet(results / "unet" / "evaluate" / "summary.parquet")
    plan = json.loads((results / "unet" / "plan.json").read_text())["settings"]
    dice = summary.loc[summary["class"] != summary["class"].iloc[0], "dice_mean"]
    return dict(**{key: str(value) for key, value in settings.items()},
                applied_scale=json.loads((results / "preprocess" / "settings.json").read_text())["scale"],
                applied_resolution=plan["resolution"]["value"], patch="x".join(map(str, plan["patch_size"]["value"])),
                steps=int(pd.read_parquet(results / "unet" / "train" / "fold0" / "metrics.parquet")["steps"].max()),
                test_dice=float(dice.iloc[0]), **fragments(results / "unet" / "predict" / "masks"), minutes=elapsed)


def fragments(mask_dir: Path) -> dict:
    """Means over the predicted masks: objects of at least LARGE_PIXELS (1 is right; more = the blob broke apart),
    the largest object's share of the predicted foreground, and specks under SPECK_PIXELS."""
    rows = []
    for path in sorted(mask_dir.glob("*.png")):
        sizes = np.bincount(ndimage.label(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0)[0].ravel())[1:]
        rows.append(dict(large_objects=int((sizes >= LARGE_PIXELS).sum()), specks=int((sizes < SPECK_PIXELS).sum()),
                         largest_share=float(sizes.max() / sizes.sum()) if sizes.size else 0.0))
    return pd.DataFrame(rows).mean().to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget of each run")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--vary", choices=["scale", "resolution"], default="scale",
                        help="preprocess.scale 1 vs auto, or train.resolution 1 vs planned (at scale 1)")
    parser.add_argument("--workdir", default="/tmp/unetflow_bench_large_objects", help="also gets the table")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    write_data_set(workdir / "data", args.count, args.width, args.height, seed=0)
    compared = ([dict(scale=1, resolution=None), dict(scale="auto", resolution=None)] if args.vary == "scale" else
                [dict(scale=1, resolution=1), dict(scale=1, resolution=None)])
    rows = [run_workflow(workdir / f"{args.vary}_{settings[args.vary]}", workdir / "data", settings, args.minutes,
                         args.cores) for settings in compared]
    table = pd.DataFrame(rows)
    table.to_parquet(workdir / "large_objects.parquet")
    print(table.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
