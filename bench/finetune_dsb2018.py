"""Fine-tuning (train.init) against training from scratch on few labelled images of another kind, DSB 2018 nuclei.

Splits ../shared/data/dsb2018_fluo by image kind: the images whose median nucleus is small (under --area px, about
half of them: low magnifications, crowded fields) pretrain a model (its package); of the others (larger nuclei:
other microscopes and magnifications), a seeded --labelled images are labelled (all but two train, two validate) and
the rest are the test split. On those labelled images experiments train for the same --minutes each: `scratch`,
`tuned` (train.init: the pretrained package, the default learning rate) and, per --tuned-lr, `tuned_lr<lr>` (the same
with that learning rate); all are scored on the same test images (instance mode: pixel Dice of the objects' union
and the object metrics), and the table gives each tuned experiment's ratios to scratch.

    python bench/finetune_dsb2018.py                                        # 5 min pretraining, 3 min each
    python bench/finetune_dsb2018.py --steps 300                            # 300 steps each instead
    python bench/finetune_dsb2018.py --pretrain-minutes 0.2 --minutes 0.1   # smoke
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "dsb2018_fluo"
METRICS = ("dice_mean", "object_f1_mean", "object_map_mean", "aji_mean", "pq_mean")


def median_nucleus_area(mask_path: Path) -> float:
    """The median pixel count of the nuclei of an instance mask (0 without any)."""
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    counts = np.unique(mask[mask > 0], return_counts=True)[1]
    return float(np.median(counts)) if counts.size else 0.0


def split_by_kind(data: Path, area: float, labelled: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pretraining manifest, target manifest) with fixed splits: pretraining on the images of small nuclei (a
    seeded tenth validates), the target's `labelled` images of larger nuclei (two validate) and the rest test."""
    rows = pd.DataFrame([dict(image=str(data / "images" / path.name), mask=str(path),
                              area=median_nucleus_area(path)) for path in sorted((data / "masks").glob("*.png"))])
    rng = np.random.default_rng(seed)
    pretrain = rows[rows["area"] < area].reset_index(drop=True)
    pretrain["split"] = np.where(rng.random(len(pretrain)) < 0.1, "val", "train")
    target = rows[rows["area"] >= area].sample(frac=1, random_state=seed).reset_index(drop=True)
    target["split"] = ["train"] * (labelled - 2) + ["val"] * 2 + ["test"] * (len(target) - labelled)
    return pretrain, target


def snakemake(workdir: Path, config: dict, target: str, cores: int) -> float:
    """Run the workflow in `workdir` with `config` up to `target`; the minutes it took."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", target, "-s", str(REPO / "Snakefile"), "--directory",
                    str(workdir), "--cores", str(cores), "--quiet", "rules", "--configfile",
                    str(workdir / "config.yaml")], check=True)  # the target first: --configfile takes every word after
    return (time.perf_counter() - start) / 60


def data_config(manifest: pd.DataFrame, path: Path, **data) -> dict:
    """The data (with the `data` keys) and split sections of a fixed-split manifest written to `path`."""
    manifest[["image", "mask", "split"]].to_csv(path, index=False)
    return dict(data=dict(manifest=str(path), **data), split=dict(fixed=True))


def scores(results: Path, experiment: str) -> dict:
    """Test scores of the `objects` row, steps trained and the best validation Dice of an experiment."""
    summary = pd.read_parquet(results / experiment / "evaluate" / "summary.parquet")
    row = summary[summary["class"] != summary["class"].min()].iloc[0]
    metrics = pd.read_parquet(results / experiment / "train" / "fold0" / "metrics.parquet")
    return dict(experiment=experiment, **{name: float(row[name]) for name in METRICS if name in row},
                steps=int(metrics["steps"].max()), val_dice=float(metrics["val_dice"].max()))


def experiments(package: Path, tuned_lrs: list[float]) -> dict:
    """`scratch`, `tuned` from the package (the default learning rate) and `tuned_lr<lr>` per other rate."""
    return dict(scratch={}, tuned=dict(train=dict(init=str(package))),
                **{f"tuned_lr{lr:g}": dict(train=dict(init=str(package), lr=lr)) for lr in tuned_lrs})


def with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """A table of experiments (the `experiment` index, scratch first) with each other row's ratios to scratch."""
    ratios = (table.loc[name] / table.loc["scratch"] for name in table.index[1:])
    table = pd.concat([table, pd.DataFrame(ratios, index=[f"{name} / scratch" for name in table.index[1:]])])
    return table.reset_index(names="experiment")


def target_table(workdir: Path, config: dict, score, cores: int, name: str) -> tuple[pd.DataFrame, float]:
    """The experiments of `config` run in workdir/target, each scored by `score(results, experiment)` into a row,
    with their ratios to scratch, written to workdir/<name>.parquet; the table and the minutes the runs took."""
    minutes = snakemake(workdir / "target", config, "results/leaderboard.parquet", cores)
    table = pd.DataFrame([score(workdir / "target" / "results", experiment) for experiment in config["experiments"]])
    table = with_ratios(table.set_index("experiment"))
    table.to_parquet(workdir / f"{name}.parquet")
    return table, minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", type=float, default=150.0, help="median nucleus area (px) that splits the kinds")
    parser.add_argument("--labelled", type=int, default=10, help="labelled target images (2 of them validate)")
    parser.add_argument("--pretrain-minutes", type=float, default=5.0)
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of scratch and tuned each")
    parser.add_argument("--steps", type=int, help="a budget in optimiser steps instead of --minutes (machine load "
                        "then changes no run's length)")
    parser.add_argument("--tuned-lr", type=float, nargs="*", default=[3e-4], help="other learning rates to tune with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/unetflow_bench_finetune", help="also gets the table")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pretrain, target = split_by_kind(DATA, args.area, args.labelled, args.seed)
    print(f"pretraining on {len(pretrain)} images (median nucleus < {args.area:g} px), fine-tuning on "
          f"{args.labelled} of {len(target)} others, testing on {len(target) - args.labelled}", flush=True)
    base = dict(results="results", train=dict(device="cpu", budget_minutes=args.pretrain_minutes))
    minutes = snakemake(workdir / "pretrain", {**base, **data_config(pretrain, workdir / "pretrain.csv",
                                                                     instances=True)},
                        "results/unet/package/unet.pt", args.cores)
    print(f"pretraining took {minutes:.1f} min", flush=True)
    package = workdir / "pretrain" / "results" / "unet" / "package" / "unet.pt"
    config = {**base, **data_config(target, workdir / "target.csv", instances=True),
              "train": dict(device="cpu", **(dict(budget_steps=args.steps) if args.steps else
                                             dict(budget_minutes=args.minutes))),
              "experiments": experiments(package, args.tuned_lr)}
    table, minutes = target_table(workdir, config, scores, args.cores, "finetune_dsb2018")
    print(f"target runs took {minutes:.1f} min")
    print(table.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
