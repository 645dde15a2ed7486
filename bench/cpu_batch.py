"""Images per second of a training step by batch size and depth: why the plan caps the 2D batch at 4 on a CPU.

Times our bare model step (`train_throughput.model_step`: UNet, CE + Dice, Adam, channels_last and bf16 autocast
where the device runs it natively, as train.py does) for every (depth, batch) pair at one patch side, the pairs
interleaved over `--rounds` rounds after one warm-up step each; each pair's best round counts (the one least
disturbed by other load). Prints images/s and the ratio to the first pair.

Usage: python bench/cpu_batch.py [--size 256] [--batches 2,4,8] [--depths 4,5] [--rounds 4] [--threads 2]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import REPO, model_step  # noqa: E402

sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from unetflow.gpu import uses_bf16  # noqa: E402


def integers(text: str) -> list[int]:
    return [int(value) for value in text.split(",")]


def main(argv=None) -> dict[tuple[int, int], float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="square patch side, a multiple of 2**depth")
    parser.add_argument("--batches", type=integers, default=[2, 4, 8])
    parser.add_argument("--depths", type=integers, default=[4, 5])
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    bf16 = uses_bf16("auto", device)
    steps = {(depth, batch): model_step(device, batch, args.size, depth, args.base_width, True, bf16)
             for depth in args.depths for batch in args.batches}
    for step in steps.values():
        step()
    best = {pair: float("inf") for pair in steps}
    for _ in range(args.rounds):
        for pair, step in steps.items():
            start = time.perf_counter()
            step()
            best[pair] = min(best[pair], time.perf_counter() - start)
    rates = {(depth, batch): batch / seconds for (depth, batch), seconds in best.items()}
    first = next(iter(rates.values()))
    print(f"{args.size}x{args.size} patches, width {args.base_width}, {'bf16' if bf16 else 'fp32'}, "
          f"{args.threads} thread(s)")
    for (depth, batch), rate in rates.items():
        print(f"depth {depth} batch {batch}: {rate:7.2f} images/s ({rate / first:.2f}x the first)")
    return rates


if __name__ == "__main__":
    main()
