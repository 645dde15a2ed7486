"""The U-Net of Ronneberger et al. (2015) in 2D or 3D, with padded convolutions, optional normalisation and
anisotropic pooling (Isensee et al. 2021, nnU-Net)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

CONVS = {2: nn.Conv2d, 3: nn.Conv3d}
UP_CONVS = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
POOLS = {2: F.max_pool2d, 3: F.max_pool3d}
NORMS = {
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "instance": {2: lambda c: nn.InstanceNorm2d(c, affine=True), 3: lambda c: nn.InstanceNorm3d(c, affine=True)},
    "none": {2: lambda c: nn.Identity(), 3: lambda c: nn.Identity()},
}
MIN_MAP_SIZE = 4


def conv_block(in_ch: int, out_ch: int, norm: str, dims: int = 2) -> nn.Sequential:
    """(3x3(x3) conv + norm + ReLU) x 2, padded so that the block keeps the spatial size."""
    bias, conv, make_norm = norm == "none", CONVS[dims], NORMS[norm][dims]
    return nn.Sequential(
        conv(in_ch, out_ch, 3, padding=1, bias=bias), make_norm(out_ch), nn.ReLU(inplace=True),
        conv(out_ch, out_ch, 3, padding=1, bias=bias), make_norm(out_ch), nn.ReLU(inplace=True),
    )


def checked_pool_kernels(pool_kernels, depth: int, dims: int) -> list[list[int]]:
    """`pool_kernels` as `depth` lists of `dims` strides of 1 or 2; None = 2 along every axis at every level."""
    if dims not in CONVS:
        raise ValueError(f"UNet dims must be 2 or 3, got {dims!r}")
    if pool_kernels is None:
        return [[2] * dims for _ in range(depth)]
    kernels = [[int(k) for k in level] for level in pool_kernels]
    if len(kernels) != depth or any(len(level) != dims or set(level) - {1, 2} for level in kernels):
        raise ValueError(f"pool_kernels must be {depth} (depth) entries of {dims} (dims) strides of 1 or 2, "
                         f"got {pool_kernels!r}")
    return kernels


class UNet(nn.Module):
    """Encoder of conv blocks and max-pooling, decoder of up-convolutions, skips by concatenation.

    `dims` is 2 (inputs (B, C, H, W)) or 3 (inputs (B, C, D, H, W)). `depth` is the number of poolings; widths
    double at each level from `base_width`. `pool_kernels` gives each level's pooling stride per axis (1 or 2;
    None = 2 everywhere); the up-convolution of a level uses the same kernel and stride. Inputs of any size are
    padded up to a multiple of each axis' total stride and the output is cropped back to the input's size.
    With `deep_supervision`, training-mode forward returns a list of logits: full resolution first, then one per
    coarser decoder level (the padded size divided by that level's total strides); eval mode always returns the
    full-resolution logits. `hparams` holds the constructor's arguments (`pool_kernels` resolved, as lists).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 4, base_width: int = 32,
                 norm: str = "batch", deep_supervision: bool = False, dims: int = 2, pool_kernels=None):
        super().__init__()
        kernels = checked_pool_kernels(pool_kernels, depth, dims)
        self.hparams = dict(in_channels=in_channels, num_classes=num_classes, depth=depth, base_width=base_width,
                            norm=norm, deep_supervision=deep_supervision, dims=dims, pool_kernels=kernels)
        self.pool_kernels = [tuple(level) for level in kernels]
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        for level, width in enumerate(widths):
            self.encoders.append(conv_block(in_channels if level == 0 else widths[level - 1], width, norm, dims))
        self.ups = nn.ModuleList(UP_CONVS[dims](widths[level + 1], widths[level], kernel, stride=kernel)
                                 for level, kernel in enumerate(self.pool_kernels))
        self.decoders = nn.ModuleList(conv_block(2 * widths[level], widths[level], norm, dims)
                                      for level in range(depth))
        self.head = CONVS[dims](widths[0], num_classes, 1)
        self.aux_heads = nn.ModuleList(CONVS[dims](widths[level], num_classes, 1)
                                       for level in range(1, depth if deep_supervision else 1))
        self.apply(he_init)

    def size_multiple(self) -> tuple[int, ...]:
        """Per spatial axis, the product of its pooling strides: every input is padded to a multiple of it."""
        return tuple(math.prod(axis) for axis in zip(*self.pool_kernels)) or (1,) * self.hparams["dims"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        if len(size) != self.hparams["dims"]:
            raise ValueError(f"a {self.hparams['dims']}D U-Net takes inputs with {self.hparams['dims']} spatial "
                             f"axes after batch and channels, got shape {tuple(x.shape)}")
        padding = [p for n, m in zip(reversed(size), reversed(self.size_multiple())) for p in (0, -n % m)]
        x = F.pad(x, padding)
        pool = POOLS[self.hparams["dims"]]
        skips, aux = [], []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else pool(x, self.pool_kernels[level - 1]))
            skips.append(x)
        for level in reversed(range(self.hparams["depth"])):
            x = self.decoders[level](torch.cat([skips[level], self.ups[level](x)], dim=1))
            if 0 < level <= len(self.aux_heads) and self.training:
                aux.insert(0, self.aux_heads[level - 1](x))
        logits = self.head(x)[(..., *(slice(0, n) for n in size))]
        return [logits, *aux] if aux else logits


def trained_parameters(model: nn.Module) -> int:
    """How many parameters the optimiser trains (weights and biases; buffers such as norm statistics excluded)."""
    return sum(parameter.numel() for parameter in model.parameters())


def pool_kernels_for(spacing, patch, depth: int, min_size: int = MIN_MAP_SIZE) -> list[tuple[int, ...]]:
    """nnU-Net-style pooling strides for a patch of voxel `spacing` (None = isotropic): `depth` tuples of 1/2.

    At each level an axis is pooled only while its current spacing is at most twice the finest current spacing
    (a coarse axis waits until the fine ones have caught up; pooling doubles an axis' spacing) and its map stays
    at least `min_size` voxels after pooling. A level where no axis qualifies is all ones (no pooling).
    """
    spacing = [1.0] * len(patch) if spacing is None else [float(s) for s in spacing]
    size = [int(n) for n in patch]
    if len(spacing) != len(size):
        raise ValueError(f"spacing {list(spacing)} and patch {list(patch)} have different numbers of axes")
    kernels = []
    for _ in range(depth):
        finest = min(spacing)
        level = tuple(2 if s <= 2 * finest and n // 2 >= min_size else 1 for s, n in zip(spacing, size))
        spacing = [s * k for s, k in zip(spacing, level)]
        size = [n // k for n, k in zip(size, level)]
        kernels.append(level)
    return kernels


def he_init(module: nn.Module) -> None:
    """He (Kaiming) normal initialisation for convolutions, as in the U-Net paper; zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
