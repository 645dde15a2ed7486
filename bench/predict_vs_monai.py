"""Benchmark: unetflow.tiling.sliding_window_predict against MONAI's sliding_window_inference.

Same unetflow.model.UNet (eval mode, random weights), same tiles, overlap and Gaussian blending (sigma = tile / 8),
same tile batch size, on the same random z-scored images, in one run. MONAI's predictor applies the softmax per tile
so that both blend probabilities: the outputs are then equal up to float rounding. Methods run interleaved, the best
of `--rounds` is kept for each (the machine is shared and noisy). Two extra rows split where the difference comes
from: our tiling with the unmodified model, and MONAI with our prepared model (BatchNorm folded, channels_last).

    python bench/predict_vs_monai.py                          # CPU defaults: 4 images of 512x512
    python bench/predict_vs_monai.py --images 8 --size 1024   # e.g. on CUDA
"""

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.model import UNet  # noqa: E402
from unetflow.tiling import prepare_for_inference, sliding_window_predict  # noqa: E402

Predictor = Callable[[torch.Tensor], torch.Tensor]  # (C, H, W) image -> (K, H, W) probabilities on the CPU


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=512, help="images are size x size")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass, for both")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best time is kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def ours(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, prepare: bool) -> Predictor:
    """Our sliding window; with `prepare`, on a prepare_for_inference copy (made once, inside the timing)."""
    state = {}

    def predict(image: torch.Tensor) -> torch.Tensor:
        if "model" not in state:
            state["model"] = prepare_for_inference(model, device) if prepare else model
        return sliding_window_predict(state["model"], image, (args.tile, args.tile), overlap=args.overlap,
                                      batch_size=args.batch_size, device=device, channels_last=prepare)
    return predict


def monai(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, softmax_per_tile: bool = True
          ) -> Predictor:
    """MONAI's sliding window under no_grad (and bf16 autocast on CUDA, as ours), softmax per tile or at the end."""
    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        logits = model(tiles)
        return torch.softmax(logits.float(), dim=1) if softmax_per_tile else logits.float()

    def predict(image: torch.Tensor) -> torch.Tensor:
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                    else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            blended = sliding_window_inference(image[None].to(device), (args.tile, args.tile), args.batch_size,
                                               predictor, overlap=args.overlap, mode="gaussian", sigma_scale=0.125)
        probabilities = blended[0] if softmax_per_tile else torch.softmax(blended[0], dim=0)
        return probabilities.cpu()
    return predict


def timed(predict: Predictor, images: torch.Tensor, device: torch.device) -> tuple[float, list[torch.Tensor]]:
    """Seconds to predict all images (including the copy of the result to the host), and the results."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    results = [predict(image) for image in images]
    return time.perf_counter() - start, results


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = UNet(1, args.classes, depth=args.depth, base_width=args.base_width).eval().to(device)
    images = torch.randn(args.images, 1, args.size, args.size)
    methods = {
        "ours (prepared model)": ours(model, args, device, prepare=True),
        "MONAI (same model)": monai(model, args, device),
        "ours (unprepared model)": ours(model, args, device, prepare=False),
        "MONAI (our prepared model)": monai(prepare_for_inference(model, device), args, device),
    }
    warm_up = images[:1, :, :args.tile, :args.tile]
    for predict in methods.values():
        timed(predict, warm_up, device)
    best, outputs = {name: float("inf") for name in methods}, {}
    for _ in range(args.rounds):
        for name, predict in methods.items():
            seconds, outputs[name] = timed(predict, images, device)
            best[name] = min(best[name], seconds)
    report(args, device, best, outputs, model, images)


def report(args: argparse.Namespace, device: torch.device, best: dict[str, float],
           outputs: dict[str, list[torch.Tensor]], model: torch.nn.Module, images: torch.Tensor) -> None:
    """Print images/s per method, ratios against MONAI with the same model, and the output differences."""
    peer = "MONAI (same model)"
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} images={args.images}x"
          f"{args.size}^2 tile={args.tile} overlap={args.overlap} batch={args.batch_size} UNet(depth={args.depth}, "
          f"base={args.base_width}, classes={args.classes}) rounds={args.rounds} (best kept)")
    for name, seconds in best.items():
        print(f"{name:28s} {args.images / seconds:8.3f} images/s  {seconds:8.2f} s  "
              f"speed-up vs {peer}: {best[peer] / seconds:5.2f}x")
    reference = torch.stack(outputs[peer])
    for name in best:
        print(f"max |softmax difference| {name} vs {peer}: "
              f"{(torch.stack(outputs[name]) - reference).abs().max().item():.2e}")
    logits_blended = monai(model, args, device, softmax_per_tile=False)(images[0])
    print(f"for reference, MONAI blending logits then softmax differs from blending softmax (first image) by up to "
          f"{(logits_blended - outputs[peer][0]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
