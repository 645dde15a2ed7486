"""Fine-tuning (train.init) on a task far from the pretraining one: DSB 2018 nuclei to ISBI 2012 EM membranes.

Pretrains a model on all of ../shared/data/dsb2018_fluo (fluorescence nuclei, a seeded tenth validates) in the
semantic mode (`foreground: nonzero`, background/nucleus): an instance-mode package is refused for semantic data
whose outputs differ, and ISBI 2012 is semantic (membrane/cell), so only a semantic package can start it. Then, of
the 30 ISBI 2012 slices (../shared/data/isbi2012, electron microscopy), a seeded --labelled are labelled (all but one
train, one validates) and the rest are the test split. On those, experiments train for the same --steps each:
`scratch`, `tuned` (train.init: the pretrained package, the default learning rate, a new head since the classes
differ) and, per --tuned-lr, `tuned_lr<lr>`; every target experiment gets the package's network (depth, width,
patch, resolution), so only the starting weights differ; the pretraining patch is --patch pixels a side (128: a
quarter of the pixels of the plan's CPU patch of 256, so that the runs stay short on a loaded 2-core CPU). All are
scored on the same test slices (Dice of membrane and of cell) and the table gives each tuned experiment's ratios
to scratch. Budgets are optimiser steps, not minutes: on a shared, loaded machine equal minutes give the runs
unequal training.

    python bench/finetune_far_isbi2012.py                                   # 400 pretraining steps, 300 each
    python bench/finetune_far_isbi2012.py --pretrain-steps 4 --steps 4      # smoke
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_dsb2018 import DATA, data_config, experiments, snakemake, target_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.infer.package import load_package  # noqa: E402
from unetflow.train.finetune import package_network  # noqa: E402

ISBI = DATA.parent / "isbi2012"
ISBI_CLASSES = {"membrane": 0, "cell": 255}  # as config/isbi2012.yaml


def pretraining_manifest(data: Path, seed: int) -> pd.DataFrame:
    """Every DSB 2018 image, a seeded tenth validating."""
    masks = sorted((data / "masks").glob("*.png"))
    rng = np.random.default_rng(seed)
    return pd.DataFrame(dict(image=[str(data / "images" / path.name) for path in masks], mask=[str(p) for p in masks],
                             split=np.where(rng.random(len(masks)) < 0.1, "val", "train")))


def target_manifest(data: Path, labelled: int, seed: int) -> pd.DataFrame:
    """The ISBI 2012 slices in a seeded order: `labelled` of them (one validates), the rest test."""
    masks = sorted((data / "masks").glob("*.png"))
    order = np.random.default_rng(seed).permutation(len(masks))
    return pd.DataFrame(dict(image=[str(data / "images" / masks[i].name) for i in order],
                             mask=[str(masks[i]) for i in order],
                             split=["train"] * (labelled - 1) + ["val"] + ["test"] * (len(masks) - labelled)))


def class_scores(results: Path, experiment: str) -> dict:
    """Test Dice of each class, steps trained and the best validation Dice of an experiment."""
    summary = pd.read_parquet(results / experiment / "evaluate" / "summary.parquet").set_index("class_name")
    metrics = pd.read_parquet(results / experiment / "train" / "fold0" / "metrics.parquet")
    return dict(experiment=experiment, **{f"dice_{name}": float(summary.loc[name, "dice_mean"]) for name in
                                           ISBI_CLASSES}, steps=int(metrics["steps"].max()),
                val_dice=float(metrics["val_dice"].max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=int, default=4, help="labelled ISBI slices (one of them validates)")
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--patch", type=int, default=128, help="patch side of the pretraining (and so of all runs)")
    parser.add_argument("--steps", type=int, default=300, help="training budget of scratch and each tuned run")
    parser.add_argument("--tuned-lr", type=float, nargs="*", default=[3e-4], help="other learning rates to tune with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/unetflow_bench_finetune_far", help="also gets the table")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pretrain, target = pretraining_manifest(DATA, args.seed), target_manifest(ISBI, args.labelled, args.seed)
    print(f"pretraining on {len(pretrain)} DSB 2018 images (semantic), fine-tuning on {args.labelled} ISBI 2012 "
          f"slices, testing on {len(target) - args.labelled}", flush=True)
    minutes = snakemake(workdir / "pretrain", dict(
        results="results", train=dict(device="cpu", budget_steps=args.pretrain_steps, patch_size=[args.patch] * 2),
        **data_config(pretrain, workdir / "pretrain.csv", foreground="nonzero")),
        "results/unet/package/unet.pt", args.cores)
    print(f"pretraining took {minutes:.1f} min", flush=True)
    package = workdir / "pretrain" / "results" / "unet" / "package" / "unet.pt"
    network = package_network(load_package(package).models[0])
    config = dict(results="results", **data_config(target, workdir / "target.csv", classes=ISBI_CLASSES),
                  train=dict(device="cpu", budget_steps=args.steps, depth=network["depth"],
                             base_width=network["base_width"], patch_size=network["patch_size"],
                             resolution=network["resolution"]),
                  experiments=experiments(package, args.tuned_lr))
    table, minutes = target_table(workdir, config, class_scores, args.cores, "finetune_far_isbi2012")
    print(f"target runs took {minutes:.1f} min (network: {network})")
    print(table.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
