"""Benchmark: 3D tiled prediction, unetflow.net.tiling.sliding_window_predict against MONAI's
sliding_window_inference.

Same 3D U-Net (unetflow.net.model.UNet, eval mode, random weights), same tiles, overlap and Gaussian blending (sigma =
tile / 8), same tile batch size, on the same random z-scored volumes, in one run. MONAI's predictor applies the softmax
per tile, so both blend probabilities and the outputs agree up to float rounding (the largest difference is printed).
Everything runs in float32. The methods run interleaved and the best of `--rounds` counts. On the CPU the clock is the
process's CPU time (with --threads 1 by default: far less disturbed by other users of a shared machine than the wall
clock); on CUDA it is the wall clock. Rows: ours as the workflow runs it (prepare_for_inference: BatchNorm folded,
channels_last_3d), MONAI with the same model, and two rows that split the difference: our tiling with the unmodified
model fed tiles as MONAI feeds them, and MONAI given our prepared model.

    python bench/predict3d_vs_monai.py                       # CPU defaults: 1 volume 48x128x128, tiles 32x64x64
    python bench/predict3d_vs_monai.py --volumes 2 --size 128 256 256 --tile 64 128 128 --base-width 32  # CUDA
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.net.model import UNet  # noqa: E402
from unetflow.net.tiling import prepare_for_inference, sliding_window_predict, tile_grid  # noqa: E402

PEER = "MONAI (same model)"
Predictor = Callable[[torch.Tensor], torch.Tensor]  # (C, D, H, W) volume -> (K, D, H, W) probabilities on the CPU


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=3, default=[48, 128, 128], help="volume D H W")
    parser.add_argument("--tile", type=int, nargs=3, default=[32, 64, 64], help="tile D H W")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=2, help="tiles per forward pass, for both")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best time is kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


def ours(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, prepare: bool) -> Predictor:
    """Our sliding window; with `prepare` on a prepare_for_inference copy (made once, inside the timing) fed
    channels_last_3d tiles, without on the model as given, fed tiles as MONAI feeds them."""
    state = {}

    def predict(volume: torch.Tensor) -> torch.Tensor:
        if "model" not in state:
            state["model"] = prepare_for_inference(model, device) if prepare else model
        return sliding_window_predict(state["model"], volume, args.tile, overlap=args.overlap,
                                      batch_size=args.batch_size, device=device, channels_last=prepare, bf16=False)
    return predict


def monai(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> Predictor:
    """MONAI's sliding window under no_grad, the softmax applied to each tile."""
    def predict(volume: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            blended = sliding_window_inference(volume[None].to(device), args.tile, args.batch_size,
                                               lambda tiles: torch.softmax(model(tiles).float(), dim=1),
                                               overlap=args.overlap, mode="gaussian", sigma_scale=0.125)
        return blended[0].cpu()
    return predict


def timed(predict: Predictor, volumes: torch.Tensor, device: torch.device) -> tuple[float, list[torch.Tensor]]:
    """Seconds to predict all volumes (the copy of each result to the host included), and the results."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    results = [predict(volume) for volume in volumes]
    return clock() - start, results


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UNet(1, args.classes, depth=args.depth, base_width=args.base_width, dims=3).eval().to(device)
    volumes = torch.randn(args.volumes, 1, *args.size)
    methods = {
        "ours (prepared model)": ours(model, args, device, prepare=True),
        PEER: monai(model, args, device),
        "ours (unprepared model)": ours(model, args, device, prepare=False),
        "MONAI (our prepared model)": monai(prepare_for_inference(model, device), args, device),
    }
    warm_up = volumes[:1, :, :args.tile[0], :args.tile[1], :args.tile[2]]
    for predict in methods.values():
        timed(predict, warm_up, device)
    best, outputs = {name: float("inf") for name in methods}, {}
    for _ in range(args.rounds):
        for name, predict in methods.items():
            seconds, outputs[name] = timed(predict, volumes, device)
            best[name] = min(best[name], seconds)
    tiles = len(tile_grid(args.size, args.tile, args.overlap))
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} volumes={args.volumes}x"
          f"{'x'.join(map(str, args.size))} tile={'x'.join(map(str, args.tile))} ({tiles} per volume) "
          f"overlap={args.overlap} batch={args.batch_size} UNet(dims=3, depth={args.depth}, base={args.base_width}, "
          f"classes={args.classes}) rounds={args.rounds} (best kept) float32")
    reference = torch.stack(outputs[PEER])
    for name, seconds in best.items():
        difference = (torch.stack(outputs[name]) - reference).abs().max().item()
        print(f"{name:28s} {seconds / args.volumes:8.3f} s/volume  speed-up vs {PEER}: {best[PEER] / seconds:5.2f}x"
              f"  max |softmax difference| vs {PEER}: {difference:.2e}")
    print(f"ours / MONAI at equal output (both float32): {best[PEER] / best['ours (prepared model)']:.2f}x")


if __name__ == "__main__":
    main()
