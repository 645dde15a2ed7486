"""CPU seconds that each stage script's imports cost a job before it does any work (every job of the workflow pays
them once: the demo run has eleven jobs, every end-to-end test as many).

    python bench/job_startup.py                    # every script, best of 3 fresh interpreters each
    python bench/job_startup.py train predict      # some scripts

CPU seconds (user + system of the interpreter) rather than wall seconds, so that a shared machine's load matters
little; the heavy libraries each script loads are listed with it.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
HEAVY = ("torch", "sklearn", "skimage", "matplotlib", "pandas", "scipy", "cv2", "nibabel", "tifffile")


def import_cost(script: str) -> tuple[float, list[str]]:
    """CPU seconds of importing what `script` imports in a fresh interpreter, and the heavy libraries loaded."""
    imports = re.findall(r"^(?:from|import) ([\w.]+)", (SCRIPTS / f"{script}.py").read_text(), re.M)
    code = (";".join(f"import {name}" for name in imports)
            + f";import resource,sys;u=resource.getrusage(resource.RUSAGE_SELF);"
              f"print(u.ru_utime+u.ru_stime,*(m for m in {HEAVY} if m in sys.modules))")
    fields = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True,
                            check=True).stdout.split()
    return float(fields[0]), fields[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", default=sorted(path.stem for path in SCRIPTS.glob("*.py")))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for script in args.scripts:
        costs = [import_cost(script) for _ in range(args.repeats)]
        print(f"{script:15s} {min(cost for cost, _ in costs):5.2f} s  {' '.join(costs[0][1])}")


if __name__ == "__main__":
    main()
