"""Training throughput: our training loop against a MONAI BasicUNet loop at matched FLOPs per image.

Ours is `unetflow.train.train.Trainer.train_epoch` itself: PatchSampler, on-device `augment_batch` (default config),
`UNet` (depth 4), CE + Dice `segmentation_loss`, Adam, channels_last and bf16 autocast as train.py sets them,
optional torch.compile; other settings the `train` defaults of workflow/schemas/config.schema.yaml, the keys left
unset planned by `unetflow.plan.plan.make_plan` as the workflow's plan rule does. MONAI's loop is what a
MONAI user writes: `BasicUNet` (its default instance norm and LeakyReLU) with features (w, 2w, 4w, 8w, 16w, w),
`DiceCELoss(to_onehot_y=True, softmax=True)`, Adam, and per-sample dictionary transforms on the CPU in a MONAI
`DataLoader` (flips, rot90, affine, elastic, noise, blur, brightness, contrast, gamma with our default
probabilities), meta-data tracking off as in MONAI's fast-training tutorial. On CUDA both get bf16 autocast.
`--compile` compiles our model only: BasicUNet's backward fails under torch 2.13's inductor on the CPU (stride
assertion in replication_pad2d_backward). Both train on the same seeded synthetic images (1 channel, 2 classes).

The loops alternate for `--rounds` rounds of `--steps` steps each (order swapped every round) after one untimed
warm-up round. A loop's images/s is that of its fastest round (the one least disturbed by other load); the
speed-up compares the two from the same run, and the median of the per-round ratios (the two loops ran back to
back) is printed too. `--variants` also times our bare model step in fp32, channels_last and bf16 autocast;
`--profile` breaks each loop's step down by operator group and times our sampling + augmentation alone.

Usage: python bench/train_throughput.py [--device cpu] [--steps 2] [--batch 8] [--size 128] [--rounds 5]
           [--base-width 16] [--cases 32] [--workers 0] [--threads 1] [--compile] [--variants] [--profile]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai import transforms as mt
from monai.data import DataLoader, Dataset, set_track_meta
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from scipy import ndimage
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from unetflow.net.model import UNet  # noqa: E402
from unetflow.train.augment import augment_batch  # noqa: E402
from unetflow.train.losses import segmentation_loss  # noqa: E402
from unetflow.train.schedule import Clock  # noqa: E402
from unetflow.train.train import Trainer  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from plan_cases import planned_config, train_defaults  # noqa: E402

DEPTH = 4  # BasicUNet always pools four times
BF16_PEAK_FLOPS = 790e12  # dense bf16 GEMM peak of an H100 / H200 (SXM)
KEYS = ["image", "label"]
PROFILE_GROUPS = {  # operator-name fragments of the profiled operator groups
    "convolutions": ("convolution", "conv2d"), "norm": ("batch_norm",), "activations": ("threshold", "relu"),
    "max-pool": ("max_pool",), "pad": ("pad",), "copies, cat": ("copy_", "aten::cat"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps per loop and round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="square image side, a multiple of 16")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one warm-up round")
    parser.add_argument("--base-width", type=int, default=16, help="our base_width; MONAI's first feature size")
    parser.add_argument("--cases", type=int, default=32, help="synthetic training images shared by both loops")
    parser.add_argument("--workers", type=int, default=0, help="MONAI DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: steady timings on a shared machine; 0 = torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (train.compile)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="our train.precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile `--steps` steps of each loop by operator group, and time our augmentation")
    parser.add_argument("--variants", action="store_true",
                        help="also time our bare model step in fp32, channels_last and bf16 autocast")
    return parser.parse_args(argv)


def synthetic_cases(count: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (image (1, H, W) float32, labels (H, W) uint8) pairs: smooth blobs, brighter inside, plus noise."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 16)
        labels = (field > field.std()).astype(np.uint8)
        image = labels + 0.5 * rng.standard_normal((size, size))
        cases.append((image[None].astype(np.float32), labels))
    return cases


def our_config(args: argparse.Namespace) -> dict:
    """The workflow's default `train` settings with this benchmark's device, sizes and step count."""
    return dict(train_defaults(), device=args.device, depth=DEPTH, base_width=args.base_width, batch_size=args.batch,
                patch_size=[args.size, args.size], iterations_per_epoch=args.steps, compile=args.compile,
                precision=args.precision)


class OurLoop:
    """`steps` iterations of the workflow's own training loop."""

    def __init__(self, cases, args: argparse.Namespace):
        cfg, plan = planned_config(our_config(args), cases, num_classes=2)  # the rest (oversampling) as planned
        ids = [f"case{i}" for i in range(len(cases))]
        # the state path is only written by Trainer.run, which the benchmark does not call
        self.trainer = Trainer(cfg, plan, cases, [], ids, Path("unused.pt"), logging.getLogger("bench"))
        self.model = self.trainer.model

    def run(self, steps: int) -> None:
        self.trainer.cfg["iterations_per_epoch"] = steps
        self.trainer.train_epoch(Clock())  # synchronises on the mean loss; a fresh clock: the budget never runs out


def monai_features(base_width: int) -> tuple[int, ...]:
    """BasicUNet feature sizes with our UNet's widths: (w, 2w, 4w, 8w, 16w) and w after the last upsampling."""
    return tuple(base_width * 2**level for level in range(DEPTH + 1)) + (base_width,)


def monai_transforms(size: int) -> mt.Compose:
    """Per-sample dictionary transforms equivalent to our default augmentation (same probabilities)."""
    return mt.Compose([
        mt.RandAffined(KEYS, prob=0.2, rotate_range=np.pi, scale_range=(-0.3, 0.4), mode=("bilinear", "nearest"),
                       padding_mode="zeros"),
        mt.Rand2DElasticd(KEYS, spacing=size // 3, magnitude_range=(0, 10), prob=0.2,
                          mode=("bilinear", "nearest"), padding_mode="zeros"),
        mt.RandFlipd(KEYS, prob=0.5, spatial_axis=0),
        mt.RandFlipd(KEYS, prob=0.5, spatial_axis=1),
        mt.RandRotate90d(KEYS, prob=0.5, max_k=3),
        mt.RandGaussianNoised("image", prob=0.1, std=0.1),
        mt.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), prob=0.2),
        mt.RandScaleIntensityd("image", factors=0.25, prob=0.15),
        mt.RandScaleIntensityFixedMeand("image", factors=0.25, prob=0.15),
        mt.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),
    ])


def endless(loader):
    """Batches from `loader`, epoch after epoch."""
    while True:
        yield from loader


class MonaiLoop:
    """`steps` iterations of a MONAI user's training loop."""

    def __init__(self, cases, args: argparse.Namespace):
        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.model = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2,
                               features=monai_features(args.base_width)).to(self.device)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        data = [{"image": image, "label": labels[None]} for image, labels in cases]
        loader = DataLoader(Dataset(data, monai_transforms(args.size)), batch_size=args.batch, shuffle=True,
                            drop_last=True, num_workers=args.workers, persistent_workers=args.workers > 0)
        self.batches = endless(loader)

    def run(self, steps: int) -> None:
        self.model.train()
        total = torch.zeros((), device=self.device)
        for _ in range(steps):
            batch = next(self.batches)
            images, labels = batch["image"].to(self.device), batch["label"].to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
                logits = self.model(images)
            loss = self.loss_fn(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        float(total)  # synchronise, as ours does


def model_flops(model: torch.nn.Module, size: int) -> tuple[int, int]:
    """FLOPs per (1, 1, size, size) image of the forward pass and of forward + backward (a training step)."""
    image = torch.randn(1, 1, size, size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as forward:
        model(image)
    with FlopCounterMode(display=False) as step:
        model(image).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return forward.get_total_flops(), step.get_total_flops()


def time_interleaved(loops: dict, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of `steps` steps of each loop per round; one untimed warm-up round, order swapped each round."""
    for loop in loops.values():
        loop.run(min(steps, 2))
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for round_index in range(rounds):
        names = list(loops) if round_index % 2 == 0 else list(reversed(loops))
        for name in names:
            start = time.perf_counter()
            loops[name].run(steps)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def report(args, flops: dict[str, tuple[int, int]], seconds: dict[str, list[float]]) -> dict[str, float]:
    """Print images/s, FLOPs per image, achieved FLOP/s (and share of the bf16 peak on CUDA); return images/s."""
    device = torch.device(args.device)
    rates = {name: args.steps * args.batch / min(times) for name, times in seconds.items()}
    print(f"device {device}, {torch.get_num_threads()} CPU threads, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.steps} steps x {args.rounds} rounds, compile (ours) {args.compile}, "
          f"precision (ours) {args.precision}, "
          f"MONAI workers {args.workers}")
    for name, rate in rates.items():
        forward, step = flops[name]
        achieved = step * rate
        line = (f"{name:>5}: {rate:8.2f} images/s  forward {forward / 1e9:.3f} GFLOP/image  training step "
                f"{step / 1e9:.3f} GFLOP/image  achieved {achieved / 1e12:.4f} TFLOP/s")
        if device.type == "cuda":
            line += f" ({100 * achieved / BF16_PEAK_FLOPS:.2f}% of 790 TFLOP/s bf16)"
        rounds = ", ".join(f"{args.steps * args.batch / s:.2f}" for s in seconds[name])
        print(line + f"  [per round: {rounds}]")
    print(f"forward FLOPs ours / MONAI: {flops['ours'][0] / flops['monai'][0]:.3f}")
    paired = statistics.median(m / o for o, m in zip(seconds["ours"], seconds["monai"]))
    print(f"speed-up ours / MONAI (best round of each): {rates['ours'] / rates['monai']:.2f}x; "
          f"median of per-round ratios: {paired:.2f}x")
    return rates


def model_step(device: torch.device, batch: int, size: int, depth: int, base_width: int, channels_last: bool,
               bf16: bool):
    """One bare training step of our model (UNet, segmentation_loss, Adam; no sampling or augmentation) on a fixed
    seeded batch, as a function to time."""
    images = torch.randn(batch, 1, size, size, device=device, generator=torch.Generator(device).manual_seed(0))
    labels = (images[:, 0] > 0).long()
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = UNet(1, 2, depth, base_width).to(device).to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            logits = model(images.contiguous(memory_format=memory_format))
        loss = segmentation_loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())
    return step


def model_step_variants(args: argparse.Namespace) -> dict[str, float]:
    """Best seconds of our bare model step (`model_step`) in fp32, with channels_last, and with channels_last + bf16
    autocast, interleaved over `rounds`: what enabling the CUDA-only settings of train.py on this device would
    give."""
    device = torch.device(args.device)

    def make_step(channels_last: bool, bf16: bool):
        return model_step(device, args.batch, args.size, DEPTH, args.base_width, channels_last, bf16)

    steps = {"fp32": make_step(False, False), "fp32 channels_last": make_step(True, False),
             "bf16 channels_last": make_step(True, True)}
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(times[1:]) for name, times in seconds.items()}
    for name, time_s in best.items():
        print(f"model step {name:>18}: {args.batch / time_s:8.2f} images/s  ({best['fp32'] / time_s:.2f}x fp32)")
    return best


def profile_loops(loops: dict, steps: int) -> dict[str, dict[str, float]]:
    """Self CPU milliseconds per step of each loop, in total and by operator group (torch.profiler)."""
    tables = {}
    for name, loop in loops.items():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            loop.run(steps)
        events = prof.key_averages()
        table = {"total": sum(e.self_cpu_time_total for e in events) / 1e3 / steps}
        for group, fragments in PROFILE_GROUPS.items():
            table[group] = sum(e.self_cpu_time_total for e in events
                               if any(fragment in e.key for fragment in fragments)) / 1e3 / steps
        tables[name] = table
        print(f"profile {name:>5}, ms per step: " + ", ".join(f"{key} {value:.0f}" for key, value in table.items()))
    return tables


def time_our_augmentation(loop: OurLoop, rounds: int) -> float:
    """Best seconds of our patch sampling + `augment_batch` for one batch, as in `train_epoch`."""
    trainer = loop.trainer
    sample_rng, augment_rng = torch.Generator().manual_seed(0), torch.Generator(trainer.device).manual_seed(0)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        images, labels = trainer.sampler.sample(trainer.cfg["batch_size"], sample_rng)
        images, _ = augment_batch(images, labels, trainer.cfg["augment"], augment_rng)
        float(images.sum())  # synchronise
        seconds.append(time.perf_counter() - start)
    print(f"our sampling + augmentation: {1000 * min(seconds):.1f} ms per batch")
    return min(seconds)


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_track_meta(False)
    cases = synthetic_cases(args.cases, args.size)
    loops = {"ours": OurLoop(cases, args), "monai": MonaiLoop(cases, args)}
    flops = {name: model_flops(loop.model, args.size) for name, loop in loops.items()}
    if abs(flops["ours"][0] / flops["monai"][0] - 1) > 0.1:
        print("warning: forward FLOPs differ by more than 10%", file=sys.stderr)
    rates = report(args, flops, time_interleaved(loops, args.steps, args.rounds))
    if args.profile:
        profile_loops(loops, args.steps)
        time_our_augmentation(loops["ours"], args.rounds)
    if args.variants:
        model_step_variants(args)
    return rates


if __name__ == "__main__":
    main()
