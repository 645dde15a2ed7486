"""Wall-clock time of preprocessing anisotropic NIfTI volumes and of a 3D `train` job's start-up, through the
Snakefile of a given unetflow checkout, so that two versions of the code can be compared with one script.

    python bench/volume_startup.py --workdir /tmp/vs_before                          # this checkout
    python bench/volume_startup.py --workdir /tmp/vs_after --repo /path/to/other/checkout
    python bench/volume_startup.py --workdir /tmp/vs_smoke --volumes 3 --shape 32 32 6 --repeats 1   # smoke

Writes `--volumes` seeded volumes (float32 image, uint8 labels of 2 foreground classes: ellipsoids in blurred noise)
with in-plane voxel sizes drawn from 0.7-1.0 mm and slices of 2.5-3.5 mm (slices along the stored Z axis), so the
automatic target spacing resamples every volume in-plane and most along the slice axis. The config names only the
data and `train: {dims: 3, budget_steps: 1}` (keys that exist before and after the change of the volume storage).
Then, each timing repeated `--repeats` times, best and median of the wall clock of the whole `snakemake` command, and
the median of its CPU time (user plus system, all its processes; less sensitive to other load than the wall clock):

- `--until preprocess` from nothing (ingest, split, fingerprint, preprocess; the results folder removed before each);
- the preprocess job alone: `--forcerun preprocess --until preprocess` (ingest, split and the fingerprint exist);
- the train job alone: `--forcerun train --until train` (preprocessing exists): one optimiser step, so nearly all of
  it is start-up (imports, loading the cases, resampling, the plan, the final validation, writing the checkpoints);
- `--until train` with nothing to do: Snakemake's own start-up (parsing the workflow, building the DAG), which is
  in every figure above; the job lines also give each figure minus its median.

Run it niced and on an otherwise idle machine (`nice -n 10`); it prints the load average before and after.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml
from scipy import ndimage

DEFAULT_REPO = Path(__file__).resolve().parents[1]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the volumes, config and results")
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="unetflow checkout whose Snakefile runs")
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 160, 24], help="X Y Z voxels (slices along Z)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def volume(shape, spacing, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8): 3 ellipsoids of each of classes 1 and 2 drawn in mm, blurred, noise std 0.6."""
    extent = np.array(shape) * np.array(spacing)
    axes = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)]
    labels = np.zeros(shape, np.uint8)
    for label in (1, 1, 1, 2, 2, 2):
        centre = rng.uniform(0.2, 0.8, 3) * extent
        radii = rng.uniform(1 / 6, 1 / 3, 3) * np.median(extent)
        inside = sum(((a - c) / r)[tuple(slice(None) if i == k else None for i in range(3))] ** 2
                     for k, (a, c, r) in enumerate(zip(axes, centre, radii))) <= 1
        labels[inside] = label
    image = ndimage.gaussian_filter(labels.astype(np.float32), sigma=[1.0 / s for s in spacing])
    return (image + rng.normal(0, 0.6, shape)).astype(np.float32), labels


def write_data(folder: Path, count: int, shape, seed: int) -> list[list[float]]:
    """`count` volumes as folder/images/vol<i>.nii.gz and folder/masks/vol<i>.nii.gz; their spacings."""
    rng = np.random.default_rng(seed)
    spacings = []
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        in_plane = float(rng.uniform(0.7, 1.0))
        spacing = [in_plane, in_plane, float(rng.uniform(2.5, 3.5))]
        image, labels = volume(shape, spacing, rng)
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(image, affine), folder / "images" / f"vol{index}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), folder / "masks" / f"vol{index}.nii.gz")
        spacings.append([round(s, 3) for s in spacing])
    return spacings


class Runner:
    """Runs the checkout's Snakefile in the work folder and times whole commands."""

    def __init__(self, args: argparse.Namespace, config: Path):
        self.args, self.config, self.count = args, config, 0
        self.logs = args.workdir / "logs"
        self.logs.mkdir(exist_ok=True)

    def __call__(self, name: str, *extra: str) -> tuple[float, float]:
        command = [sys.executable, "-m", "snakemake", "-s", str(self.args.repo / "Snakefile"), "--directory",
                   str(self.args.workdir), "--cores", str(self.args.cores), *extra, "--configfile", str(self.config)]
        self.count += 1
        log = self.logs / f"{self.count:02d}_{name}.log"
        start, cpu_start = time.perf_counter(), children_cpu_seconds()
        with log.open("w") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        seconds, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu_start
        if result.returncode:
            sys.exit(f"volume_startup: FAILED ({name}, exit status {result.returncode}): {' '.join(command)}\n"
                     + "".join(log.read_text().splitlines(keepends=True)[-30:]))
        return seconds, cpu


def children_cpu_seconds() -> float:
    """User plus system CPU time of the finished child processes so far (less sensitive to load than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def git_state(repo: Path) -> str:
    """The checkout's commit and whether tracked files differ from it."""
    def git(*words):
        return subprocess.run(["git", "-C", str(repo), *words], capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> None:
    args = arguments()
    args.repo, args.workdir = args.repo.resolve(), args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    spacings = write_data(data, args.volumes, args.shape, args.seed)
    config = args.workdir / "config.yaml"
    config.write_text(yaml.safe_dump(dict(results="results", data=dict(images=str(data / "images"),
                                                                      masks=str(data / "masks")),
                                          train=dict(dims=3, budget_steps=1)), sort_keys=False))
    run, results = Runner(args, config), args.workdir / "results"
    load_before = os.getloadavg()
    timings = {"preprocess from nothing (ingest, split, fingerprint, preprocess)": [],
               "preprocess job alone": [], "train job alone (1 step)": [], "nothing to do (Snakemake start-up)": []}
    names = list(timings)
    for _ in range(args.repeats):
        shutil.rmtree(results, ignore_errors=True)
        timings[names[0]].append(run("until_preprocess", "--until", "preprocess"))
    for _ in range(args.repeats):
        timings[names[1]].append(run("preprocess", "--forcerun", "preprocess", "--until", "preprocess"))
    trained = []  # the trainer's own "trained N steps in S s" (epochs and their validation), where it logs it
    for _ in range(args.repeats):
        timings[names[2]].append(run("train", "--forcerun", "train", "--until", "train"))
        found = re.findall(r"trained \d+ steps? in ([\d.]+) s", read(results / "logs/unet/train_fold0.log"))
        trained += [float(found[-1])] if found else []
    for _ in range(args.repeats):
        timings[names[3]].append(run("nothing", "--until", "train"))
    load_after = os.getloadavg()
    overhead = statistics.median(wall for wall, _ in timings[names[3]])
    cpu_overhead = statistics.median(cpu for _, cpu in timings[names[3]])
    x, y, z = args.shape
    in_plane = sorted(s[0] for s in spacings)
    slices = sorted(s[2] for s in spacings)
    print(f"checkout {args.repo} at {git_state(args.repo)}; {args.volumes} volumes of {x}x{y}x{z} voxels, in-plane "
          f"{in_plane[0]:.2f}-{in_plane[-1]:.2f} mm, slices {slices[0]:.2f}-{slices[-1]:.2f} mm; --cores {args.cores}; "
          f"{args.repeats} repeats")
    settings = results / "preprocess" / "settings.json"
    if settings.exists():
        applied = json.loads(settings.read_text())
        print(f"target spacing {applied.get('spacing')} ({applied.get('spacing_source')})")
    stored = [path for path in (results / "preprocess").rglob("*") if path.is_file()]
    print(f"preprocess/ holds {len(stored)} files, {sum(path.stat().st_size for path in stored) / 2**20:.1f} MiB")
    print(f"{'whole snakemake command':66s} {'best':>7s} {'median':>7s}  {'median - start-up':>17s}  "
          f"{'CPU median':>10s}  {'CPU - start-up':>14s}")
    for name, values in timings.items():
        walls, cpus = [wall for wall, _ in values], [cpu for _, cpu in values]
        best, median, cpu = min(walls), statistics.median(walls), statistics.median(cpus)
        minus = (f"{median - overhead:16.1f}s  {cpu:9.1f}s  {cpu - cpu_overhead:13.1f}s" if name != names[3]
                 else f"{'':17s}  {cpu:9.1f}s")
        print(f"{name:66s} {best:6.1f}s {median:6.1f}s  {minus}")
    if trained:
        print(f"of the train job: {statistics.median(trained):.1f} s training and validating the step (median, "
              "from its log)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    (args.workdir / "volume_startup.json").write_text(json.dumps(dict(
        repo=str(args.repo), commit=git_state(args.repo), volumes=args.volumes, shape=args.shape, spacings=spacings,
        cores=args.cores, timings=timings, load_before=load_before, load_after=load_after), indent=1))


if __name__ == "__main__":
    main()
