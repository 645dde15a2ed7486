"""How many CPU threads a job uses: the rule's `threads`, but no more than the CPUs it was given. Inside a SLURM job
Snakemake counts the node's CPUs (`--cores all`), not the job's allocation, so a job that asked for 4 CPUs may be
handed 8 threads: SLURM_CPUS_PER_TASK and the process's CPU affinity (a cgroup or task binding) bound them."""

import os


def job_threads(threads: int) -> int:
    """`threads` (Snakemake's), at most SLURM_CPUS_PER_TASK when set and the CPUs this process may run on; at least
    1."""
    limits = [int(threads), len(os.sched_getaffinity(0))]
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        limits.append(int(os.environ["SLURM_CPUS_PER_TASK"]))
    return max(1, min(limits))
