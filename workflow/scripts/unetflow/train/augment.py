"""Batch data augmentation on the training device: whole batches at once, per-sample choices as masks.

Every transform is applied to each sample independently with probability `p`; its random parameters are drawn
per sample. Configuration keys (`AUGMENT_DEFAULTS`; a partial dict is merged over it, unknown keys are errors):

- `mirror.p` (0.5): probability of flipping a sample, drawn separately for each spatial axis.
- `rot90.p` (0.5): probability of rotating a sample by 90, 180 or 270 degrees (equally likely); applied only
  when height equals width.
- `affine.p` (0.1): probability of a random rotation plus scaling, resampled once with the elastic deformation.
- `affine.rotation_deg` ([-180, 180]): range of the rotation angle in degrees, drawn uniformly.
- `affine.scale` ([0.9, 1.1]): range of the zoom factor, drawn uniformly; above 1 enlarges the content.
- `elastic.p` (0.2): probability of an elastic deformation as in the U-Net paper: random displacements on a
  coarse grid, bicubically upsampled to a dense field, resampled in the same pass as the affine transform.
- `elastic.grid` (4): number of control points of the coarse grid along each axis.
- `elastic.sigma` (10): standard deviation in pixels of the control-point displacements.
- `brightness.p` (0.15), `brightness.range` ([0.75, 1.25]): multiply intensities by a factor drawn from range.
- `contrast.p` (0.15), `contrast.range` ([0.75, 1.25]): scale intensities about their mean by a factor drawn
  from range.
- `gamma.p` (0.3), `gamma.range` ([0.7, 1.5]): rescale intensities to [0, 1], raise them to a power drawn from
  range and rescale back.
- `noise.p` (0, off), `noise.std` ([0.0, 0.1]): add Gaussian noise whose standard deviation is drawn from std
  (in intensity units).
- `blur.p` (0, off), `blur.sigma` ([0.5, 1.0]): separable Gaussian blur with standard deviation in pixels drawn
  from sigma.

The defaults are the lighter of the two strengths measured on ISBI 2012, DSB 2018 and MSD hippocampus at the CPU
budget (two seeds each; bench/training.md, "Augmentation strength"); nnU-Net's heavier set (affine p 0.2, scale
0.7-1.4, noise p 0.1, blur p 0.2) was the default before.

Spatial transforms move images bilinearly and labels (and loss weights, `augment_weighted_batch`) by nearest
neighbour with the same sampling grid; regions
sampled from outside the image get image 0 and label `fill_label`. Intensity statistics (mean, min, max) are
taken per sample and channel; intensity transforms leave labels untouched. Order: spatial (affine and
elastic), mirror, rot90, noise, blur, brightness, contrast, gamma.

Batches of 3D patches (B, C, D, H, W) get the same transforms: mirroring along each of the three axes, and
in-plane (the last two axes, H and W) rotation, scaling, elastic deformation, rot90 and blur, one transform per
sample applied alike to all its D slices (in-plane only, as for volumes whose slice axis is coarser than the
plane); intensity statistics are taken over the whole patch.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor

AUGMENT_DEFAULTS: dict = {
    "mirror": {"p": 0.5},
    "rot90": {"p": 0.5},
    "affine": {"p": 0.1, "rotation_deg": [-180.0, 180.0], "scale": [0.9, 1.1]},
    "elastic": {"p": 0.2, "grid": 4, "sigma": 10.0},
    "brightness": {"p": 0.15, "range": [0.75, 1.25]},
    "contrast": {"p": 0.15, "range": [0.75, 1.25]},
    "gamma": {"p": 0.3, "range": [0.7, 1.5]},
    "noise": {"p": 0.0, "std": [0.0, 0.1]},
    "blur": {"p": 0.0, "sigma": [0.5, 1.0]},
}


def merge_config(config: dict | None) -> dict:
    """Return `AUGMENT_DEFAULTS` with the (possibly partial) `config` merged over it; unknown keys raise."""
    merged = copy.deepcopy(AUGMENT_DEFAULTS)
    for name, options in (config or {}).items():
        if name not in merged:
            raise ValueError(f"unknown augmentation {name!r}; known: {sorted(merged)}")
        unknown = set(options) - set(merged[name])
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)} for augmentation {name!r}")
        merged[name].update(options)
    return merged


def augment_batch(images: Tensor, labels: Tensor, config: dict | None, generator: torch.Generator,
                  *, fill_label: int = 0) -> tuple[Tensor, Tensor]:
    """Augment images (B, C, H, W) or (B, C, D, H, W) float and labels (B, H, W) or (B, D, H, W) int64 with the
    transforms of `config`.

    All random draws come from `generator`, which must be on the tensors' device; the same seed gives the same
    batch. Returns new tensors of the input shapes and dtypes.
    """
    images, (labels,) = augment_with_maps(images, [labels], [fill_label], config, generator)
    return images, labels


def augment_weighted_batch(images: Tensor, labels: Tensor, weights: Tensor, config: dict | None,
                           generator: torch.Generator, *, fill_label: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """`augment_batch` with per-pixel loss weights (B, H, W) moved with the labels (weight 0 outside the image);
    the same seed gives the same images and labels as `augment_batch`."""
    images, (labels, weights) = augment_with_maps(images, [labels, weights], [fill_label, 0], config, generator)
    return images, labels, weights


def augment_with_maps(images: Tensor, maps: list[Tensor], fills: list, config: dict | None,
                      generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
    """Augment images and pixel maps (B, H, W: labels, weights) together: spatial transforms move every map by
    nearest neighbour (`fills` outside the image), intensity transforms change the images only."""
    cfg = merge_config(config)
    images, maps = resample_spatially(images, maps, cfg["affine"], cfg["elastic"], generator, fills)
    images, maps = mirror(images, maps, cfg["mirror"]["p"], generator)
    if images.shape[-1] == images.shape[-2]:
        images, maps = rotate90(images, maps, cfg["rot90"]["p"], generator)
    images = add_noise(images, cfg["noise"], generator)
    images = blur(images, cfg["blur"], generator)
    images = scale_brightness(images, cfg["brightness"], generator)
    images = scale_contrast(images, cfg["contrast"], generator)
    images = adjust_gamma(images, cfg["gamma"], generator)
    return images, maps


def draw_mask(p: float, n: int, generator: torch.Generator) -> Tensor:
    """Boolean (n,) mask, each entry True with probability p."""
    return torch.rand(n, generator=generator, device=generator.device) < p


def draw_uniform(bounds: list[float], n: int, generator: torch.Generator) -> Tensor:
    """(n,) float32 values drawn uniformly between bounds[0] and bounds[1]."""
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape (B,) values to broadcast over the trailing dimensions of `like`."""
    return values.reshape(-1, *[1] * (like.dim() - 1)).to(like.dtype)


def spatial_axes(images: Tensor) -> tuple[int, ...]:
    """The spatial axes of a (B, C, ...) batch."""
    return tuple(range(2, images.dim()))


def select(mask: Tensor, changed: Tensor, original: Tensor) -> Tensor:
    """Per-sample choice between `changed` (where mask) and `original`."""
    return torch.where(mask.reshape(-1, *[1] * (original.dim() - 1)), changed, original)


# --- spatial transforms ---------------------------------------------------------------------------------------

def resample_spatially(images: Tensor, maps: list[Tensor], affine_cfg: dict, elastic_cfg: dict,
                       generator: torch.Generator, fills: list) -> tuple[Tensor, list[Tensor]]:
    """Rotate, scale and elastically deform samples in one fused resampling; untouched samples stay exact."""
    if affine_cfg["p"] <= 0 and elastic_cfg["p"] <= 0:
        return images, maps
    batch, (height, width) = maps[0].shape[0], maps[0].shape[-2:]
    matrices, affine_mask = draw_affine_matrices(affine_cfg, batch, generator)
    displacement, elastic_mask = draw_elastic_displacement(elastic_cfg, batch, height, width, generator)
    coords = source_pixel_coordinates(matrices, displacement)
    moved_images = sample_images_bilinear(images, coords)
    mask = affine_mask | elastic_mask
    moved_maps = [select(mask, sample_labels_nearest(pixels, coords, fill), pixels)
                  for pixels, fill in zip(maps, fills)]
    return select(mask, moved_images, images), moved_maps


def draw_affine_matrices(cfg: dict, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(B, 2, 2) maps from output to source pixel offsets (rotation / zoom; identity where not applied), mask."""
    mask = draw_mask(cfg["p"], batch, generator)
    angle = torch.deg2rad(draw_uniform(cfg["rotation_deg"], batch, generator)) * mask
    zoom = torch.where(mask, draw_uniform(cfg["scale"], batch, generator), 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2), mask


def draw_elastic_displacement(cfg: dict, batch: int, height: int, width: int,
                              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(B, H, W, 2) dense (x, y) displacements in pixels, bicubically upsampled from a coarse grid; mask."""
    mask = draw_mask(cfg["p"], batch, generator)
    coarse = torch.randn(batch, 2, cfg["grid"], cfg["grid"], generator=generator, device=generator.device)
    coarse = coarse * cfg["sigma"] * per_sample(mask, coarse)
    dense = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return dense.permute(0, 2, 3, 1), mask


def source_pixel_coordinates(matrices: Tensor, displacement: Tensor) -> Tensor:
    """(B, H, W, 2) source (x, y) pixel coordinates: centre + matrix @ (output - centre) + displacement."""
    _, height, width, _ = displacement.shape
    device = displacement.device
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], device=device)
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    offsets = torch.stack([xs, ys], -1) - centre
    return centre + torch.einsum("bij,hwj->bhwi", matrices, offsets) + displacement


def sample_images_bilinear(images: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of images (B, ..., H, W) at (B, H, W, 2) pixel coordinates, the same for every plane of a
    sample; 0 outside the image."""
    height, width = images.shape[-2:]
    size = torch.tensor([width, height], device=coords.device)
    grid = (2 * coords + 1) / size - 1
    planes = images.reshape(images.shape[0], -1, height, width)
    moved = F.grid_sample(planes, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved.reshape(images.shape)


def sample_labels_nearest(labels: Tensor, coords: Tensor, fill_label) -> Tensor:
    """Nearest-neighbour lookup of a pixel map (labels, loss weights; B, ..., H, W) at (B, H, W, 2) pixel
    coordinates, the same for every plane of a sample (exact values); fill_label outside."""
    batch, (height, width) = labels.shape[0], labels.shape[-2:]
    ix, iy = torch.round(coords).long().unbind(-1)
    inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    flat = (iy.clamp(0, height - 1) * width + ix.clamp(0, width - 1)).reshape(batch, 1, -1)
    planes = labels.reshape(batch, -1, height * width)
    gathered = planes.gather(2, flat.expand(-1, planes.shape[1], -1)).reshape(labels.shape)
    inside = inside.reshape(batch, *[1] * (labels.dim() - 3), height, width)
    return torch.where(inside, gathered, torch.full_like(gathered, fill_label))


def mirror(images: Tensor, maps: list[Tensor], p: float, generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
    """Flip each sample (image and pixel maps) along each spatial axis independently with probability p (axes in
    order, the last two last)."""
    if p <= 0:
        return images, maps
    for axis in range(1 - maps[0].dim(), 0):
        mask = draw_mask(p, images.shape[0], generator)
        images = select(mask, images.flip(axis), images)
        maps = [select(mask, pixels.flip(axis), pixels) for pixels in maps]
    return images, maps


def rotate90(images: Tensor, maps: list[Tensor], p: float, generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
    """With probability p rotate a (square) sample and its pixel maps by k * 90 degrees, k uniform in {1, 2, 3}."""
    if p <= 0:
        return images, maps
    batch = images.shape[0]
    mask = draw_mask(p, batch, generator)
    turns = torch.randint(1, 4, (batch,), generator=generator, device=generator.device)
    rotated_images, rotated_maps = images, list(maps)
    for k in (1, 2, 3):
        chosen = mask & (turns == k)
        rotated_images = select(chosen, images.rot90(k, dims=(-2, -1)), rotated_images)
        rotated_maps = [select(chosen, pixels.rot90(k, dims=(-2, -1)), rotated)
                        for pixels, rotated in zip(maps, rotated_maps)]
    return rotated_images, rotated_maps


# --- intensity transforms -------------------------------------------------------------------------------------

def add_noise(images: Tensor, cfg: dict, generator: torch.Generator) -> Tensor:
    """Add zero-mean Gaussian noise with a per-sample standard deviation."""
    if cfg["p"] <= 0:
        return images
    batch = images.shape[0]
    mask = draw_mask(cfg["p"], batch, generator)
    std = draw_uniform(cfg["std"], batch, generator)
    noise = torch.randn(images.shape, generator=generator, device=generator.device, dtype=images.dtype)
    return select(mask, images + noise * per_sample(std, images), images)


def blur(images: Tensor, cfg: dict, generator: torch.Generator) -> Tensor:
    """Separable in-plane Gaussian blur (the last two axes) with a per-sample sigma (grouped convolution,
    replicated borders)."""
    if cfg["p"] <= 0:
        return images
    batch, (height, width) = images.shape[0], images.shape[-2:]
    channels = images[0, ..., 0, 0].numel()  # channels times the slices of a 3D patch
    mask = draw_mask(cfg["p"], batch, generator)
    sigma = draw_uniform(cfg["sigma"], batch, generator)
    radius = max(1, math.ceil(3 * max(cfg["sigma"])))
    kernels = gaussian_kernels(sigma, radius).to(images.dtype).repeat_interleave(channels, 0)
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernels[:, None, None, :],
                    groups=batch * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernels[:, None, :, None],
                    groups=batch * channels)
    return select(mask, flat.reshape(images.shape), images)


def gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """(B, 2 * radius + 1) normalised 1D Gaussian kernels, one per sigma."""
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    return kernels / kernels.sum(1, keepdim=True)


def scale_brightness(images: Tensor, cfg: dict, generator: torch.Generator) -> Tensor:
    """Multiply each sample's intensities by a random factor."""
    if cfg["p"] <= 0:
        return images
    batch = images.shape[0]
    mask = draw_mask(cfg["p"], batch, generator)
    factor = draw_uniform(cfg["range"], batch, generator)
    return select(mask, images * per_sample(factor, images), images)


def scale_contrast(images: Tensor, cfg: dict, generator: torch.Generator) -> Tensor:
    """Scale each sample's intensities about their per-channel mean by a random factor."""
    if cfg["p"] <= 0:
        return images
    batch = images.shape[0]
    mask = draw_mask(cfg["p"], batch, generator)
    factor = draw_uniform(cfg["range"], batch, generator)
    mean = images.mean(dim=spatial_axes(images), keepdim=True)
    return select(mask, (images - mean) * per_sample(factor, images) + mean, images)


def adjust_gamma(images: Tensor, cfg: dict, generator: torch.Generator) -> Tensor:
    """Gamma-correct each sample's intensities, rescaled per channel to [0, 1] and back."""
    if cfg["p"] <= 0:
        return images
    batch = images.shape[0]
    mask = draw_mask(cfg["p"], batch, generator)
    gamma = draw_uniform(cfg["range"], batch, generator)
    low = images.amin(dim=spatial_axes(images), keepdim=True)
    span = (images.amax(dim=spatial_axes(images), keepdim=True) - low).clamp_min(1e-8)
    unit = ((images - low) / span).clamp(0, 1)
    return select(mask, unit ** per_sample(gamma, images) * span + low, images)

