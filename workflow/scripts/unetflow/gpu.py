"""Devices: which one a job runs on, GPU slots for jobs that run at the same time on one workstation, and the
memory left on a device.

Snakemake's `--resources gpu=N` limits how many GPU jobs run at once but does not say which GPU each one gets.
Each job here claims the first free slot 0..N-1 with an exclusive lock file, so concurrent jobs use different
GPUs; the lock is released when the process ends (also when it is killed). Under SLURM the scheduler already gives
every job its own GPUs (CUDA_VISIBLE_DEVICES), so no slot is claimed there.
"""

import fcntl
import os
import resource
from pathlib import Path

import torch

_held = []  # open lock files, kept for the life of the process


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


def pick_device(name: str = "auto", lock_dir: str = ".snakemake/gpu_slots") -> torch.device:
    """'auto' -> a CUDA GPU when present, else the CPU; 'cuda' without an index -> a free GPU slot on a machine with
    several GPUs (outside SLURM); any other name is used as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
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
