"""The workflow on a real single-node SLURM cluster (cluster/start-local-slurm.sh, two placeholder GPUs) through
profiles/slurm: by default the jobs that run a model ask sbatch for a GPU, with the CPU-only setting for none.

Slow (a few minutes: every job but the light localrules goes through sbatch and the executor's status polling).
Skipped where SLURM cannot run: not root, or its packages are missing and cannot be installed.
"""

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import yaml
from test_slide_training import CLASSES, data_set

from unetflow.infer.predictor import Predictor
from unetflow.infer.slide import SlidePredictor

REPO = Path(__file__).resolve().parents[1]
START = REPO / "cluster" / "start-local-slurm.sh"
STOP = REPO / "cluster" / "stop-local-slurm.sh"
PROFILE = REPO / "profiles" / "slurm"
ACCOUNT = "unetflow"
LOCAL_RULES = {"demo_data", "split", "leaderboard"}  # light rules marked localrule: they skip the queue
# the rules that run where a model runs: a GPU with device auto
GPU_RULES = {"plan", "train", "predict", "infer_shard", "infer_slide_part"}
CPU_ONLY = ("--set-resources", "plan:gpu=0", "train:gpu=0", "package:gpu=0", "predict:gpu=0", "infer_shard:gpu=0",
            "infer_slide_part:gpu=0")  # cluster/README.md
SLURM_COMMANDS = ("slurmctld", "slurmd", "slurmdbd", "munged", "sbatch", "sacct", "mariadbd")
WORKFLOW_TIMEOUT_S = 900
# One test session at a time uses the machine's one cluster (/etc/slurm, the state folder): a second one (the suite
# run from another checkout) waits, instead of rewriting the configs or stopping the daemons under the first.
SESSION_LOCK = Path("/tmp/unetflow-slurm-test.lock")

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0,
                       reason="a local SLURM cluster needs Linux and root"),
    pytest.mark.xdist_group("slurm"),  # one cluster: its tests run on one worker, one after another
]


def missing_prerequisites() -> list[str]:
    """SLURM daemons, clients and the executor plugin that are not installed."""
    missing = [name for name in SLURM_COMMANDS if shutil.which(name) is None]
    probe = subprocess.run([sys.executable, "-c", "import snakemake_executor_plugin_slurm"], capture_output=True,
                           check=False)
    return missing + (["snakemake-executor-plugin-slurm"] if probe.returncode else [])


def start_cluster() -> subprocess.CompletedProcess:
    """Run the start script; skip the module when it failed because packages could not be installed."""
    if missing_prerequisites() and shutil.which("apt-get") is None:
        pytest.skip(f"SLURM is not installed ({', '.join(missing_prerequisites())}) and apt-get is unavailable")
    result = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHON": sys.executable}, check=False)
    if result.returncode != 0:
        missing = missing_prerequisites()
        if missing:
            pytest.skip(f"could not install {', '.join(missing)}:\n{result.stderr[-2000:]}")
        pytest.fail(f"start-local-slurm.sh failed:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local cluster, this session's alone (SESSION_LOCK); stopped at the end if this fixture started any of
    its daemons."""
    with open(SESSION_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = "started " in start_cluster().stderr
        yield
        if started:
            subprocess.run(["bash", str(STOP)], check=True, capture_output=True, timeout=300)


def run_snakemake(snakefile: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake with the SLURM profile; stdout and stderr merged."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
               "--profile", str(PROFILE), *args]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=WORKFLOW_TIMEOUT_S, check=False)


def failure_report(result: subprocess.CompletedProcess, workdir: Path) -> str:
    """The end of Snakemake's output and of every kept SLURM log (only failed jobs' logs are kept)."""
    logdir = yaml.safe_load((PROFILE / "config.yaml").read_text())["slurm-logdir"]
    kept_logs = sorted((workdir / logdir).glob("**/*.log"))
    return "\n".join([result.stdout[-4000:], *(f"--- {log}\n{log.read_text()[-3000:]}" for log in kept_logs)])


def submitted_job_ids(log: str) -> list[str]:
    """SLURM job ids that Snakemake reports having submitted."""
    return re.findall(r"has been submitted with SLURM jobid (\d+)", log)


def jobs_by_place(log: str) -> tuple[list[str], list[str]]:
    """Rules of the jobs Snakemake sent to SLURM and of those it ran itself (localrules), as it announced them."""
    return re.findall(r"^rule (\w+):", log, re.M), re.findall(r"^localrule (\w+):", log, re.M)


def sacct_records(job_ids: list[str]) -> pd.DataFrame:
    """What SLURM recorded of the given jobs (allocations only, not steps): JobID, State, Account, the rule (from
    the executor's --comment rule_<rule>_wildcards_...) and the GPUs asked for and allocated (ReqTRES, AllocTRES)."""
    output = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", ",".join(job_ids),
         "--format", "JobID,State,Account,Comment,ReqTRES,AllocTRES"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = [line.split("|") for line in output.splitlines() if line]
    records = pd.DataFrame(rows, columns=["job_id", "state", "account", "comment", "requested", "allocated"])
    records["rule"] = records.comment.str.extract(r"^rule_(\w+?)(?:_wildcards_.*)?$", expand=False)
    for column in ("requested", "allocated"):
        records[column] = records[column].str.extract(r"gres/gpu=(\d+)", expand=False).fillna("0").astype(int)
    return records


def gpus_by_rule(records: pd.DataFrame) -> dict[str, set[tuple[int, int]]]:
    """{rule: {(GPUs requested, GPUs allocated)} of its jobs}, from `sacct_records`."""
    return records.groupby("rule")[["requested", "allocated"]].apply(lambda jobs: set(jobs.itertuples(
        index=False, name=None))).to_dict()


def job_log(workdir: Path, name: str) -> str:
    """A job's own log under results/logs/unet/."""
    return (workdir / "results/logs/unet" / name).read_text()


def test_workflow_runs_every_job_through_slurm(slurm_cluster, tmp_path):
    result = run_snakemake(REPO / "Snakefile", tmp_path, "--configfile", str(REPO / "tests" / "tiny.yaml"))
    assert result.returncode == 0, failure_report(result, tmp_path)

    summaries = sorted(tmp_path.glob("results/*/evaluate/summary.parquet"))
    assert summaries, "no results/<experiment>/evaluate/summary.parquet"
    for summary in summaries:
        assert len(pd.read_parquet(summary)) > 0
        assert len(pd.read_parquet(summary.with_name("per_case.parquet"))) > 0

    job_ids = submitted_job_ids(result.stdout)
    remote, local = jobs_by_place(result.stdout)
    assert {"ingest", "fingerprint", "preprocess", "plan", "train", "package", "predict", "evaluate", "report"} <= \
        set(remote)
    assert len(job_ids) == len(remote), "every job but the localrules should be a SLURM job"
    assert set(local) == LOCAL_RULES | {"all"}
    records = sacct_records(job_ids)
    assert sorted(records.job_id) == sorted(job_ids)
    assert set(records.state) == {"COMPLETED"}
    assert set(records.account) == {ACCOUNT}
    assert gpus_by_rule(records) == {rule: {(1, 1) if rule in GPU_RULES else (0, 0)} for rule in remote}
    if not torch.cuda.is_available():  # the placeholder GPUs are no CUDA devices: the job says so
        assert "this SLURM job was granted GPUs (SLURM_JOB_ID=" in job_log(tmp_path, "train_fold0.log")
    segments_new_images_through_slurm(tmp_path)
    runs_on_a_cpu_only_cluster(tmp_path)


def segments_new_images_through_slurm(workdir: Path) -> None:
    """`infer` on copies of the test images and a whole slide made of them: a SLURM job per shard and per part of
    the slide, the masks `predict` wrote, the slide's labels those of one job."""
    predicted = sorted((workdir / "results/unet/predict/masks").glob("*.png"))
    (workdir / "new").mkdir()
    for path in predicted:
        shutil.copy(workdir / "results/demo/images" / path.name, workdir / "new" / path.name)
    demo = [cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted(workdir.glob("results/demo/images/*.png"))]
    slide = write_grey_slide(workdir / "new" / "slide.tif", demo[:8])
    config = {**yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text()),
              "infer": {"images": "new", "models": ["unet"], "shards": 2, "slide_pixel_size": 0.5, "slide_region": 64,
                        "slide_jobs": 2}}
    (workdir / "infer.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(REPO / "Snakefile", workdir, "infer", "--configfile", str(workdir / "infer.yaml"))
    assert result.returncode == 0, failure_report(result, workdir)
    remote, local = jobs_by_place(result.stdout)
    shards = local.count("infer_list")  # 1 or 2: the shards that hold images
    assert shards >= 1 and sorted(local) == ["infer", *["infer_list"] * shards, "infer_slide_list", "infer_summary"]
    # the check, a prediction per shard and per part of the slide, and the slide's merge
    assert sorted(remote) == ["infer_check", *["infer_shard"] * shards, "infer_slide", *["infer_slide_part"] * 2]
    job_ids = submitted_job_ids(result.stdout)
    assert len(job_ids) == len(remote)
    assert gpus_by_rule(sacct_records(job_ids)) == {"infer_check": {(0, 0)}, "infer_shard": {(1, 1)},
                                                    "infer_slide_part": {(1, 1)}, "infer_slide": {(0, 0)}}
    inferred = {path.name: path.read_bytes() for path in (workdir / "results/infer/unet/masks").rglob("*.png")}
    assert inferred == {path.name: path.read_bytes() for path in predicted}
    one_job = SlidePredictor(Predictor.load(workdir / "results/unet/package/unet.pt", "cpu"), region=64)
    one_job.predict(slide, workdir / "one_job.ome.tif", 0.5)
    np.testing.assert_array_equal(tifffile.imread(workdir / "results/infer/unet/masks/slide.ome.tif"),
                                  tifffile.imread(workdir / "one_job.ome.tif"))


def write_grey_slide(path: Path, images: list[np.ndarray]) -> Path:
    """A tiled grey pyramid (levels at 0.5 and 1 µm) of 8 grey images of one size, in 2 rows of 4."""
    pixels = np.vstack([np.hstack(images[:4]), np.hstack(images[4:])])
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(pixels, subifds=1, tile=(64, 64), resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        writer.write(pixels[::2, ::2], subfiletype=1, tile=(64, 64))
    return path


def runs_on_a_cpu_only_cluster(workdir: Path) -> None:
    """With the CPU-only setting, train (forced), the package and predict run as SLURM jobs that ask for no GPU, on
    the CPU."""
    result = run_snakemake(REPO / "Snakefile", workdir, "--configfile", str(REPO / "tests" / "tiny.yaml"),
                           "--forcerun", "train", "--until", "predict", *CPU_ONLY)
    assert result.returncode == 0, failure_report(result, workdir)
    records = sacct_records(submitted_job_ids(result.stdout))
    assert set(records.state) == {"COMPLETED"}
    assert gpus_by_rule(records) == {"train": {(0, 0)}, "package": {(0, 0)}, "predict": {(0, 0)}}
    assert "device auto: this SLURM job holds no GPU, running on the CPU" in job_log(workdir, "train_fold0.log")


def test_a_model_trains_on_slide_annotations_through_slurm(slurm_cluster, tmp_path):
    images, masks = data_set(tmp_path, 4)  # whole-slide images with QuPath GeoJSON annotations
    config = {**yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text()),
              "data": {"images": str(images), "masks": str(masks), "classes": CLASSES, "slide_pixel_size": 2.0}}
    (tmp_path / "slides.yaml").write_text(yaml.safe_dump(config))
    per_case = tmp_path / "results/unet/evaluate/per_case.parquet"
    result = run_snakemake(REPO / "Snakefile", tmp_path, str(per_case.relative_to(tmp_path)), "--configfile",
                           str(tmp_path / "slides.yaml"))
    assert result.returncode == 0, failure_report(result, tmp_path)
    remote, _ = jobs_by_place(result.stdout)
    assert {"ingest", "preprocess", "plan", "train", "package", "predict", "evaluate"} <= set(remote)
    assert set(sacct_records(submitted_job_ids(result.stdout)).state) == {"COMPLETED"}
    manifest = pd.read_parquet(tmp_path / "results/data/manifest.parquet")
    assert sorted(manifest["id"]) == [f"slide{index}_r0" for index in range(4)]  # the annotated regions
    assert len(pd.read_parquet(per_case)) > 0


def test_failing_rule_fails_the_run(slurm_cluster, tmp_path):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text('rule fail:\n    output: "never.txt"\n    shell: "exit 1"\n')
    result = run_snakemake(snakefile, tmp_path, "--retries", "0")  # one attempt is enough to see the failure
    assert result.returncode != 0
    assert "SLURM status is: 'FAILED'" in result.stdout
    job_ids = submitted_job_ids(result.stdout)
    assert len(job_ids) == 1
    assert list(sacct_records(job_ids).state) == ["FAILED"]
    assert not (tmp_path / "never.txt").exists()
