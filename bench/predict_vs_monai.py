"""Benchmark: unetflow.net.tiling.sliding_window_predict against MONAI's sliding_window_inference.

Same U-Net (unetflow.net.model.UNet, eval mode, random weights), same tiles, overlap and Gaussian blending (sigma =
tile / 8), same tile batch size, on the same random z-scored images, in one run. MONAI's predictor applies the softmax
per tile so that both blend probabilities: the outputs are then equal up to float rounding. Methods run interleaved, the
best of `--rounds` is kept for each (the machine is shared and noisy). Extra rows split where the difference comes from:
our tiling with the unmodified model, MONAI with our prepared model (BatchNorm folded, channels_last), and the prepared
network alone on as many tiles (the floor under any tiled predictor). All of these run in float32 on every device (equal
output). Two more rows: ours with `predict.precision: auto` (bf16 autocast where the device runs bf16 natively: CUDA,
CPUs with AMX / AVX-512 BF16; else float32), compared with MONAI in float32 at equal masks (the share of pixels whose
label differs is printed), and MONAI under bf16 autocast for reference.

On the CPU the clock is the process's CPU time with one thread (--threads 1): on a shared machine it is far less
disturbed by other users than the wall clock, and the work compared is the same. On CUDA it is the wall clock.

Roofline: the network's forward FLOPs per tile (torch's FlopCounterMode) times the tiles each method runs give its
achieved FLOP/s; on the CPU the script also measures the float32 matrix-multiply peak (a 2048^3 sgemm, same threads)
and prints each method's share of it, and the ceiling: the largest speed-up over MONAI that any predictor running the
same tiles through the same network in float32 could reach (peak / MONAI's achieved FLOP/s).

    python bench/predict_vs_monai.py                          # CPU defaults: 2 images of 512x512, 2 rounds
    python bench/predict_vs_monai.py --images 8 --size 1024   # e.g. on CUDA
    python bench/predict_vs_monai.py --model-breakdown        # only: forward time per preparation step
    python bench/predict_vs_monai.py --profile                # only: operators of one prepared forward pass
"""

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.gpu import uses_bf16  # noqa: E402
from unetflow.net.model import UNet  # noqa: E402
from unetflow.net.tiling import autocast_for, prepare_for_inference, sliding_window_predict, tile_grid  # noqa: E402

NETWORK_ALONE = "network alone (prepared)"
PEER = "MONAI (same model)"
OURS_AUTO = "ours (precision auto)"
MONAI_BF16 = "MONAI (same model, bf16)"
Predictor = Callable[[torch.Tensor], torch.Tensor]  # (C, H, W) image -> (K, H, W) probabilities on the CPU


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="images are size x size")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass, for both")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best time is kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--model-breakdown", action="store_true",
                        help="instead: time one batch of tiles through the model with each preparation step")
    parser.add_argument("--profile", action="store_true",
                        help="instead: profile one forward pass of the prepared model, operators slowest first")
    return parser.parse_args()


def ours(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, prepare: bool,
         bf16: bool = False) -> Predictor:
    """Our sliding window: with `prepare`, on a prepare_for_inference copy (made once, inside the timing) fed
    channels_last tiles; without, on the model as given, fed tiles as MONAI feeds them; bf16 autocast or float32."""
    state = {}

    def predict(image: torch.Tensor) -> torch.Tensor:
        if "model" not in state:
            state["model"] = prepare_for_inference(model, device) if prepare else model
        return sliding_window_predict(state["model"], image, (args.tile, args.tile), overlap=args.overlap,
                                      batch_size=args.batch_size, device=device, channels_last=prepare, bf16=bf16)
    return predict


def monai(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, softmax_per_tile: bool = True,
          bf16: bool = False) -> Predictor:
    """MONAI's sliding window under no_grad, softmax per tile or at the end; bf16 autocast or float32."""
    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        logits = model(tiles)
        return torch.softmax(logits.float(), dim=1) if softmax_per_tile else logits.float()

    def predict(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast_for(device, bf16):
            blended = sliding_window_inference(image[None].to(device), (args.tile, args.tile), args.batch_size,
                                               predictor, overlap=args.overlap, mode="gaussian", sigma_scale=0.125)
        probabilities = blended[0] if softmax_per_tile else torch.softmax(blended[0], dim=0)
        return probabilities.cpu()
    return predict


def network_alone(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> Predictor:
    """Only the prepared model's forward passes on as many tiles, in the same batches, as one image needs: the floor
    under any tiled predictor (no tile slicing, softmax or blending). Returns the last batch's logits."""
    prepared = prepare_for_inference(model, device)
    tile_count = len(tile_grid((args.size, args.size), (args.tile, args.tile), args.overlap))
    tiles = torch.randn(args.batch_size, 1, args.tile, args.tile, device=device)
    tiles = tiles.contiguous(memory_format=torch.channels_last)

    def predict(image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast_for(device, bf16=False):
            for start in range(0, tile_count, args.batch_size):
                logits = prepared(tiles[:tile_count - start])
            return logits.float().cpu()
    return predict


def forward_flops_per_tile(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> int:
    """FLOPs of one forward pass of the model on one tile."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, args.tile, args.tile, device=device))
    return counter.get_total_flops()


def cpu_float32_peak(size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the fastest of `repeats` float32 (size x size) matrix products with the current torch threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.mm(a, b)
    fastest = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b, out=out)
        fastest = min(fastest, time.process_time() - start)
    return 2 * size**3 / fastest


def clock_for(device: torch.device) -> Callable[[], float]:
    """Process CPU time on the CPU (robust to other users of a shared machine), wall time on CUDA."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def timed(predict: Predictor, images: torch.Tensor, device: torch.device) -> tuple[float, list[torch.Tensor]]:
    """Seconds to predict all images (including the copy of the result to the host), and the results."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    clock = clock_for(device)
    start = clock()
    results = [predict(image) for image in images]
    return clock() - start, results


def model_breakdown(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> None:
    """Print the forward time per tile of the model as given, with BatchNorm folded, in channels_last, and both."""
    variants = {
        "as given": model,
        "BatchNorm folded": prepare_for_inference(model, device, channels_last=False),
        "channels_last": copy.deepcopy(model).to(memory_format=torch.channels_last),
        "both (prepare_for_inference)": prepare_for_inference(model, device),
    }
    tiles = torch.randn(args.batch_size, 1, args.tile, args.tile, device=device)
    best = {name: float("inf") for name in variants}
    with torch.inference_mode(), autocast_for(device):
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, variant in variants.items():
                seconds, _ = timed(lambda batch, run=variant: run(batch).float().cpu(), tiles[None], device)
                best[name] = min(best[name], seconds)
    for name, seconds in best.items():
        print(f"{name:30s} {seconds / args.batch_size:7.3f} s/tile  speed-up vs as given: "
              f"{best['as given'] / seconds:5.2f}x")


def profile_forward(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> None:
    """Print the operators of one forward pass of the prepared model on a batch of tiles (after two warm-up
    passes), slowest first, with their input shapes."""
    prepared = prepare_for_inference(model, device)
    tiles = torch.randn(args.batch_size, 1, args.tile, args.tile, device=device)
    tiles = tiles.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):
            prepared(tiles)
        with torch.profiler.profile(record_shapes=True) as profiler:
            prepared(tiles)
    print(profiler.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UNet(1, args.classes, depth=args.depth, base_width=args.base_width).eval().to(device)
    if args.model_breakdown:
        print(f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} tile={args.tile} "
              f"rounds={args.rounds} clock={clock_for(device).__name__}")
        return model_breakdown(model, args, device)
    if args.profile:
        return profile_forward(model, args, device)
    images = torch.randn(args.images, 1, args.size, args.size)
    methods = {
        "ours (prepared model)": ours(model, args, device, prepare=True),
        PEER: monai(model, args, device),
        "ours (unprepared model)": ours(model, args, device, prepare=False),
        "MONAI (our prepared model)": monai(prepare_for_inference(model, device), args, device),
        NETWORK_ALONE: network_alone(model, args, device),
        OURS_AUTO: ours(model, args, device, prepare=True, bf16=uses_bf16("auto", device)),
        MONAI_BF16: monai(model, args, device, bf16=True),
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
    report_roofline(args, device, best, model)


def report_roofline(args: argparse.Namespace, device: torch.device, best: dict[str, float],
                    model: torch.nn.Module) -> None:
    """Print each method's achieved FLOP/s (network forward FLOPs of the tiles it runs) and, on the CPU, its share
    of the measured float32 peak and the float32 ceiling on any speed-up over MONAI."""
    tiles = len(tile_grid((args.size, args.size), (args.tile, args.tile), args.overlap)) * args.images
    flops = forward_flops_per_tile(model, args, device) * tiles
    peak = cpu_float32_peak() if device.type == "cpu" else None
    print(f"network forward: {flops / tiles / 1e9:.2f} GFLOP per tile, {tiles} tiles"
          + (f"; float32 matmul peak {peak / 1e9:.0f} GFLOP/s" if peak else ""))
    for name, seconds in best.items():
        share = f"  {flops / seconds / peak:6.1%} of the float32 peak" if peak else ""
        print(f"{name:28s} {flops / seconds / 1e9:8.1f} GFLOP/s{share}")
    if peak:
        print(f"float32 ceiling: no predictor running these tiles through this network in float32 can be more than "
              f"{peak * best[PEER] / flops:.2f}x faster than MONAI (same model) here")


def report(args: argparse.Namespace, device: torch.device, best: dict[str, float],
           outputs: dict[str, list[torch.Tensor]], model: torch.nn.Module, images: torch.Tensor) -> None:
    """Print images/s per method, ratios against MONAI with the same model, the output differences, and the two
    headline ratios: at equal output (float32) and at equal masks (ours with predict.precision auto)."""
    peer = PEER
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} images={args.images}x"
          f"{args.size}^2 tile={args.tile} overlap={args.overlap} batch={args.batch_size} UNet(depth={args.depth}, "
          f"base={args.base_width}, classes={args.classes}) rounds={args.rounds} (best kept) "
          f"clock={clock_for(device).__name__}")
    for name, seconds in best.items():
        print(f"{name:28s} {args.images / seconds:8.3f} images/s  {seconds:8.2f} s  "
              f"speed-up vs {peer}: {best[peer] / seconds:5.2f}x")
    reference = torch.stack(outputs[peer])
    for name in [name for name in best if name not in (peer, NETWORK_ALONE)]:
        print(f"max |softmax difference| {name} vs {peer}: "
              f"{(torch.stack(outputs[name]) - reference).abs().max().item():.2e}")
    labels = torch.stack(outputs[OURS_AUTO]).argmax(1) != reference.argmax(1)
    print(f"ours / MONAI at equal output (both float32): {best[peer] / best['ours (prepared model)']:.2f}x")
    print(f"ours / MONAI at equal masks (ours predict.precision auto = "
          f"{'bf16' if uses_bf16('auto', device) else 'float32'}, MONAI float32): {best[peer] / best[OURS_AUTO]:.2f}x;"
          f" labels differing from MONAI's: {labels.float().mean().item():.4%} of pixels (random weights: near-ties"
          f" everywhere; bench/predict_precision.py measures trained models)")
    logits_blended = monai(model, args, device, softmax_per_tile=False)(images[0])
    print(f"for reference, MONAI blending logits then softmax differs from blending softmax (first image) by up to "
          f"{(logits_blended - outputs[peer][0]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
