"""Devices: which one a job runs on, GPU slots for jobs that run at the same time on one workstation, and the
memory left on a device.

Snakemake's `--resources gpu=N` limits how many GPU jobs run at once but does not say which GPU each one gets.
Each job here claims the first free slot 0..N-1 with an exclusive lock file, so concurrent jobs use different
GPUs; the lock is released when the process ends (also when it is killed). Under SLURM the scheduler already gives
every job its own GPUs (CUDA_VISIBLE_DEVICES), so no slot is claimed there. A SLURM job granted GPUs that PyTorch
does not see is warned about: it would otherwise run on the CPU without a word.
"""

import fcntl
import logging
import os
import resource
from pathlib import Path

import torch

log = logging.getLogger("unetflow.gpu")
SLURM_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")  # set when a job holds GPUs
_held = []  # open lock files, kept for the life of the process
_said = set()  # device messages already logged by this process


def claim_slot(lock_dir: str, slots: int) -> int:
    """Index of the first slot whose lock this process could take; raises when all are held."""
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        handle = open(Path(lock_dir, f"gpu{slot}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        return slot
    raise RuntimeError(f"all {slots} GPU slots in {lock_dir} are taken: run with --resources gpu={slots}")


def slurm_gpu_grant() -> dict[str, str]:
    """Inside a SLURM job that holds GPUs, its job id and the variables that say which (empty otherwise)."""
    granted = {name: os.environ[name] for name in SLURM_GPU_VARIABLES if os.environ.get(name)}
    if granted.get("SLURM_GPUS_ON_NODE") == "0":  # a count; the others list GPU indices (GPU 0 is "0")
        del granted["SLURM_GPUS_ON_NODE"]
    if "SLURM_JOB_ID" not in os.environ or not granted:
        return {}
    visible = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")}
    return {"SLURM_JOB_ID": os.environ["SLURM_JOB_ID"], **granted, **visible}


def say_once(level: int, message: str) -> None:
    """Log `message` unless this process has logged it already."""
    if message not in _said:
        _said.add(message)
        log.log(level, message)


def auto_device() -> str:
    """What 'auto' means here: 'cuda' when PyTorch sees a CUDA GPU, else 'cpu' (said once). A SLURM job granted GPUs
    that PyTorch does not see is warned about: a node problem (driver, CUDA build of torch), not a choice."""
    if torch.cuda.is_available():
        return "cuda"
    granted = slurm_gpu_grant()
    if granted:
        resources = ", ".join(f"{name}={value}" for name, value in granted.items())
        say_once(logging.WARNING, f"device auto: this SLURM job was granted GPUs ({resources}) but PyTorch sees no "
                 f"CUDA device (PyTorch {torch.__version__}, built for CUDA {torch.version.cuda}): running on the CPU. "
                 "Check the node's GPU driver and that PyTorch is a CUDA build; a CPU-only cluster requests no GPU "
                 "with gpu=0 (cluster/README.md)")
    elif "SLURM_JOB_ID" in os.environ:
        say_once(logging.INFO, "device auto: this SLURM job holds no GPU, running on the CPU")
    else:
        say_once(logging.INFO, "device auto: no CUDA device here, running on the CPU")
    return "cpu"


def pick_device(name: str = "auto", lock_dir: str = ".snakemake/gpu_slots") -> torch.device:
    """'auto' -> a CUDA GPU when present, else the CPU (`auto_device`); 'cuda' without an index, and 'auto' on CUDA ->
    a free GPU slot on a machine with several GPUs (outside SLURM); any other name is used as given."""
    if name == "auto":
        name = auto_device()
    if name == "cuda" and torch.cuda.device_count() > 1 and "SLURM_JOB_ID" not in os.environ:
        return torch.device("cuda", claim_slot(lock_dir, torch.cuda.device_count()))
    return torch.device(name)


def free_memory_bytes(device: torch.device) -> int:
    """Memory a job can still use on `device`: on CUDA the free memory plus what PyTorch's caching allocator holds
    but does not use; on the CPU the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for a `precision` setting (train.precision, predict.precision): 'auto' where the device runs
    bf16 natively (CUDA, and CPUs with native bf16 matrix instructions: AMX, AVX-512 BF16), 'bf16', 'fp32'."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def peak_memory_bytes(device: torch.device) -> int:
    """The most memory this process has held: on CUDA the peak allocated by PyTorch on `device`, on the CPU the
    process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
