"""Tiled sliding-window inference in 2D and 3D: overlapping tiles blended with a Gaussian importance map (nnU-Net
style).

Each tile's softmax (a region model's sigmoid of each output) is weighted by a Gaussian that favours its centre,
where the network sees the most context; the weighted sum over all tiles is divided by the sum of the weights.
Predictions are accumulated on the compute device unless the full-resolution accumulator would not fit there, in
which case they are accumulated on the host.
"""

import contextlib
import copy
import itertools
import logging
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from unetflow.gpu import free_memory_bytes

log = logging.getLogger("unetflow.net.tiling")
PROGRESS_TILES = 2000  # an image of more tiles than this logs its progress
GAUSSIAN_FLOOR = 1e-3  # smallest un-normalised importance, as in MONAI's compute_importance_map
FLOAT32_BYTES = 4


def gaussian_importance(tile: Sequence[int], sigma_scale: float = 1 / 8,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Separable Gaussian of the tile's shape ((H, W) or (D, H, W)) with sigma = tile * sigma_scale per axis,
    centred at (t - 1) / 2 so that even tile sizes are symmetric, floored at GAUSSIAN_FLOOR (no zero weights) and
    normalised to a maximum of 1.

    Up to that normalisation (a constant factor, which cancels in the blend) it equals MONAI's
    compute_importance_map(tile, "gaussian", sigma_scale), which floors before any normalisation.
    """
    weights = torch.ones((), device=device)
    for length in tile:
        weights = weights[..., None] * gaussian_1d(length, length * sigma_scale, device)
    weights = weights.clamp_(min=GAUSSIAN_FLOOR)
    return weights / weights.max()


def gaussian_1d(length: int, sigma: float, device: torch.device | str | None = None) -> torch.Tensor:
    """exp(-x^2 / (2 sigma^2)) at x = i - (length - 1) / 2 for i in 0..length-1 (maximum below 1 for even length)."""
    offsets = torch.arange(length, dtype=torch.float32, device=device) - (length - 1) / 2
    return torch.exp(-0.5 * (offsets / sigma) ** 2)


def tile_origins(size: int, tile: int, overlap: float) -> list[int]:
    """Start positions of tiles covering [0, size): step round(tile * (1 - overlap)) (at least 1), the last tile
    flush with the end; [0] when the axis fits in one tile."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= tile:
        return [0]
    step = max(1, round(tile * (1 - overlap)))
    return list(range(0, size - tile, step)) + [size - tile]


def prepare_for_inference(model: nn.Module, device: torch.device | str | None = None,
                          channels_last: bool = True) -> nn.Module:
    """A copy of `model` for fast inference: eval mode, each BatchNorm folded into the convolution before it in
    an nn.Sequential, moved to `device`, weights in channels_last memory format (channels_last_3d for a 3D model).
    The original is left untouched."""
    prepared = copy.deepcopy(model).eval()
    fold_batchnorm(prepared)
    prepared.to(device=device)
    if channels_last:
        prepared.to(memory_format=channels_last_format(2 + spatial_dims(prepared)))
    return prepared


def spatial_dims(model: nn.Module) -> int:
    """2 or 3: the spatial axes the model's convolutions take (3 when any weight is 5D)."""
    return 3 if any(parameter.ndim == 5 for parameter in model.parameters()) else 2


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format of a tensor with `ndim` axes (batch and channels included)."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def fold_batchnorm(model: nn.Module) -> None:
    """In place: replace Conv2d -> BatchNorm2d and Conv3d -> BatchNorm3d pairs inside nn.Sequential containers by
    one equivalent convolution (valid in eval mode only, where the BatchNorm uses its running statistics)."""
    sequentials = [module for module in model.modules() if isinstance(module, nn.Sequential)]
    pairs = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))
    for sequential in sequentials:
        for index in range(len(sequential) - 1):
            conv, norm = sequential[index], sequential[index + 1]
            if any(isinstance(conv, c) and isinstance(norm, n) for c, n in pairs) and norm.track_running_stats:
                sequential[index] = fuse_conv_bn_eval(conv, norm)
                sequential[index + 1] = nn.Identity()


def sliding_window_predict(model: nn.Module, image: torch.Tensor, tile: Sequence[int], overlap: float = 0.5,
                           batch_size: int = 4, mirror_axes: Sequence[int] = (),
                           device: torch.device | str | None = None, max_device_bytes: int | None = None,
                           channels_last: bool = True, bf16: bool | None = None,
                           sigmoid: bool = False) -> torch.Tensor:
    """Softmax probabilities (K, *spatial), or with `sigmoid` the sigmoid of each output (a region model's),
    float32 on the CPU, of `model` on `image` (C, H, W) or (C, D, H, W) by overlapping tiles of shape `tile` (one
    size per spatial axis).

    Images smaller than the tile are zero-padded symmetrically and the result cropped back. `mirror_axes` (a subset
    of the spatial axes: 0, 1 = H, W in 2D; 0, 1, 2 = D, H, W in 3D) averages the probabilities over all flip
    combinations of those axes. `device` defaults to the model's; the model is moved there and run in eval mode
    (each module's previous mode is restored afterwards). Predictions are accumulated on the device unless twice
    the accumulator (K * voxels float32) exceeds `max_device_bytes` (default: free CUDA memory, unlimited on the
    CPU), then on the host. `bf16` autocast: None = on CUDA only; True also on the CPU (fast only with AMX /
    AVX-512 BF16; not equal to float32 output). `channels_last` feeds tiles in that memory format (fastest with a
    prepare_for_inference model).
    """
    tile = tuple(int(size) for size in tile)
    if len(tile) != image.ndim - 1:
        raise ValueError(f"a tile of {len(tile)} axes {list(tile)} for an image of shape {tuple(image.shape)} "
                         f"(channels first, then {image.ndim - 1} spatial axes)")
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    padded, crop = pad_to_tile(image.to(device=device, dtype=torch.float32), tile)
    shape = padded.shape[1:]
    origins = tile_grid(shape, tile, overlap)
    importance = gaussian_importance(tile, device=device)
    with eval_mode(model), torch.inference_mode(), autocast_for(device, bf16):
        tiles = iter_tile_batches(padded, tile, origins, batch_size, channels_last)
        summed = accumulate_weighted_probabilities(model, tiles, importance,
                                                   flip_combinations(mirror_axes, len(tile)), shape, max_device_bytes,
                                                   sigmoid)
        summed.div_(accumulate_weights(importance, origins, shape, summed.device))
    return summed[(slice(None), *crop)].cpu().contiguous()


def tile_grid(shape: Sequence[int], tile: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """Origins of all tiles covering an image of spatial `shape`, one coordinate per axis, in raster order."""
    return list(itertools.product(*(tile_origins(size, length, overlap) for size, length in zip(shape, tile))))


def tile_slices(origin: Sequence[int], tile: Sequence[int]) -> tuple[slice, ...]:
    """The spatial slices of the tile at `origin`."""
    return tuple(slice(start, start + length) for start, length in zip(origin, tile))


def iter_tile_batches(image: torch.Tensor, tile: Sequence[int], origins: list[tuple[int, ...]], batch_size: int,
                      channels_last: bool) -> Iterator[tuple[list[tuple[int, ...]], torch.Tensor]]:
    """(origins, (B, C, *tile) tiles) for consecutive batches of at most `batch_size` tiles of `image`; an image of
    over PROGRESS_TILES tiles logs each tenth of them done (a whole mosaic takes minutes on a CPU)."""
    memory_format = channels_last_format(image.ndim + 1) if channels_last else torch.contiguous_format
    tenths = {math.ceil(len(origins) * k / 10) for k in range(1, 10)} if len(origins) > PROGRESS_TILES else set()
    for start in range(0, len(origins), batch_size):
        batch = origins[start:start + batch_size]
        tiles = torch.stack([image[(slice(None), *tile_slices(origin, tile))] for origin in batch])
        yield batch, tiles.contiguous(memory_format=memory_format)
        if done := [tenth for tenth in tenths if tenth <= start + len(batch)]:
            tenths -= set(done)
            log.info("tiles of an image of %s: %d of %d done", "x".join(map(str, image.shape[1:])),
                     start + len(batch), len(origins))


def accumulate_weighted_probabilities(model: nn.Module,
                                      batches: Iterator[tuple[list[tuple[int, ...]], torch.Tensor]],
                                      importance: torch.Tensor, flips: list[tuple[int, ...]], shape: Sequence[int],
                                      max_device_bytes: int | None, sigmoid: bool = False) -> torch.Tensor:
    """Sum over tiles of importance * mean-over-flips softmax (or sigmoid), as a (K, *shape) float32 tensor on the
    tiles' device, or on the host when it does not fit there (see fits_on_device)."""
    tile_weight = importance / len(flips)
    accumulator = None
    for origins, tiles in batches:
        weighted = summed_probabilities(model, tiles, flips, sigmoid).mul_(tile_weight)
        if accumulator is None:
            on_device = fits_on_device(weighted.shape[1], shape, tiles.device, max_device_bytes)
            accumulator = zeros_outside_inference((weighted.shape[1], *shape), tiles.device if on_device else "cpu")
        add_tiles(accumulator, weighted.to(accumulator.device), origins)
    return accumulator


def accumulate_weights(importance: torch.Tensor, origins: list[tuple[int, ...]], shape: Sequence[int],
                       device: torch.device) -> torch.Tensor:
    """(1, *shape) sum of the importance maps of all tiles."""
    weights = zeros_outside_inference((1, *shape), device)
    add_tiles(weights, importance.to(device).expand(len(origins), 1, *importance.shape), origins)
    return weights


def zeros_outside_inference(shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """float32 zeros that are a normal tensor (not an inference tensor), so that callers may modify the result."""
    with torch.inference_mode(False):
        return torch.zeros(tuple(shape), dtype=torch.float32, device=device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the duration of the block, then give every module back its previous mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (the CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def pad_to_tile(image: torch.Tensor, tile: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad (C, *spatial) symmetrically up to at least the tile size; also the slices that crop it back."""
    pads, crop = [], []
    for size, tile_size in zip(image.shape[1:], tile):
        missing = max(tile_size - size, 0)
        pads.append((missing // 2, missing - missing // 2))
        crop.append(slice(missing // 2, missing // 2 + size))
    return F.pad(image, [side for pair in reversed(pads) for side in pair]), tuple(crop)


def flip_combinations(mirror_axes: Sequence[int], dims: int = 2) -> list[tuple[int, ...]]:
    """Tensor dims (of a (B, C, *spatial) batch) to flip for every subset of the spatial `mirror_axes` (0 = the
    first spatial axis; `dims` spatial axes)."""
    if not set(mirror_axes) <= set(range(dims)):
        raise ValueError(f"mirror_axes must be a subset of {tuple(range(dims))}, got {mirror_axes}")
    dims = sorted(2 + axis for axis in set(mirror_axes))
    return [combo for count in range(len(dims) + 1) for combo in itertools.combinations(dims, count)]


def autocast_for(device: torch.device, bf16: bool | None = None) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `bf16` is true, or when it is None and the device is CUDA; else nothing."""
    if bf16 or (bf16 is None and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def summed_probabilities(model: nn.Module, tiles: torch.Tensor, flips: list[tuple[int, ...]],
                         sigmoid: bool = False) -> torch.Tensor:
    """Sum over `flips` of the float32 softmax (or sigmoid) of the model on the flipped tiles, flipped back."""
    total = None
    for dims in flips:
        logits = model(tiles.flip(dims) if dims else tiles).float()
        probabilities = logits.sigmoid() if sigmoid else torch.softmax(logits, dim=1)
        probabilities = probabilities.flip(dims) if dims else probabilities
        total = probabilities if total is None else total.add_(probabilities)
    return total


def fits_on_device(num_classes: int, shape: Sequence[int], device: torch.device,
                   max_device_bytes: int | None) -> bool:
    """Whether twice the (K, *shape) float32 accumulator fits in `max_device_bytes`, by default the free CUDA
    memory (including memory cached by PyTorch's allocator); always true on the CPU unless a budget is given."""
    needed = 2 * num_classes * math.prod(shape) * FLOAT32_BYTES
    if max_device_bytes is None:
        if device.type != "cuda":
            return True
        max_device_bytes = free_memory_bytes(device)
    return needed <= max_device_bytes


def add_tiles(accumulator: torch.Tensor, tiles: torch.Tensor, origins: Sequence[tuple[int, ...]]) -> None:
    """In place: add each (K, *tile) tile of `tiles` into `accumulator` (K, *shape) at its origin."""
    tile = tiles.shape[2:]
    for origin, values in zip(origins, tiles):
        accumulator[(slice(None), *tile_slices(origin, tile))] += values
