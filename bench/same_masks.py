"""Does a change of the code change what `predict` writes? The demo, the instance demo and generated NIfTI volumes (a
2D and a 3D U-Net) run through an earlier checkout (`--before`) and this one; this checkout then predicts with the
earlier run's trained weights (its checkpoints copied in, the package rebuilt), and the masks of both are compared
pixel by pixel, with the test Dice of each. Identical masks show that the new prediction path predicts as the old
one did; the Dice of this checkout's own training shows whether training changed too.

    python bench/same_masks.py --before ../old-checkout            # about 5 minutes on 2 CPU cores
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from unetflow.data.demo_volumes import write_volume_pairs  # noqa: E402
from unetflow.io.images import read_mask  # noqa: E402
from unetflow.io.nifti import read_volume  # noqa: E402

SHORT = {"train": {"epochs": 3, "iterations_per_epoch": 10}}
VOLUME_SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25}


def cases(folder: Path) -> dict[str, dict]:
    """The configs compared: the demo, the instance demo, NIfTI volumes of one spacing in 2D and in 3D."""
    images, masks = write_volume_pairs(folder / "volumes", 8, (40, 36, 10), (1.0, 1.0, 3.0), num_classes=3, seed=1)
    volumes = {"data": {"images": str(images), "masks": str(masks)}, "split": VOLUME_SPLIT}
    return {"demo": {}, "instance demo": {"data": {"instances": True}},
            "NIfTI, 2D U-Net": {**volumes, "train": {**SHORT["train"], "dims": 2}},
            "NIfTI, 3D U-Net": {**volumes, "train": {**SHORT["train"], "dims": 3, "batch_size": 2}}}


def for_checkout(checkout: Path, config: dict) -> dict:
    """`config` as `checkout` takes it: checkouts of before the demo followed data.instances also need
    demo.instances."""
    schema = yaml.safe_load((checkout / "workflow" / "schemas" / "config.schema.yaml").read_text())
    if config.get("data", {}).get("instances") and "instances" in schema["properties"]["demo"]["properties"]:
        return {**config, "demo": {"instances": True}}
    return config


def snakemake(checkout: Path, workdir: Path, config: dict, *args: str) -> None:
    """Run the workflow of `checkout` in `workdir` with `config` over the checkout's own config file."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "case.yaml").write_text(yaml.safe_dump(for_checkout(checkout, config)))
    command = [sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(checkout / "config" / "config.yaml"), str(workdir / "case.yaml"), "--cores", "2",
               *args]
    subprocess.run(command, check=True, capture_output=True, text=True)


def read_labels(path: Path) -> np.ndarray:
    return read_volume(path)[0] if path.name.endswith((".nii", ".nii.gz")) else read_mask(path)


def compare(before: Path, after: Path) -> tuple[int, int, int]:
    """(files, differing pixels, pixels) of the masks two runs predicted, file by file by name."""
    masks = {path.name: path for path in (before / "results/unet/predict/masks").iterdir()
             if path.suffix in (".png", ".tif", ".gz", ".nii")}
    differing = total = 0
    for name, path in masks.items():
        old, new = read_labels(path), read_labels(after / "results/unet/predict/masks" / name)
        differing, total = differing + int((old != new).sum()), total + old.size
    return len(masks), differing, total


def foreground_dice(workdir: Path) -> float:
    summary = pd.read_parquet(workdir / "results/unet/evaluate/summary.parquet")
    return float(summary.loc[summary["class"] > 0, "dice_mean"].mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="an earlier checkout of unetflow")
    args = parser.parse_args(argv)
    print("case | mask files | differing pixels | of | test Dice before | same weights | own training")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, config in cases(folder).items():
            before, after = folder / name / "before", folder / name / "after"
            snakemake(args.before.resolve(), before, config)
            snakemake(REPO, after, config)
            own = foreground_dice(after)
            for checkpoint in (before / "results/unet/train").glob("fold*/model.pt"):
                shutil.copy(checkpoint, after / checkpoint.relative_to(before))
            snakemake(REPO, after, config, "--forcerun", "package")
            files, differing, total = compare(before, after)
            print(f"{name} | {files} | {differing} | {total} | {foreground_dice(before):.4f} | "
                  f"{foreground_dice(after):.4f} | {own:.4f}")


if __name__ == "__main__":
    main()
