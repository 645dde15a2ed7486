"""The U-Net of Ronneberger et al. (2015), with padded convolutions and optional normalisation."""

import torch
import torch.nn.functional as F
from torch import nn

NORMS = {
    "batch": nn.BatchNorm2d,
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "none": lambda c: nn.Identity(),
}


def conv_block(in_ch: int, out_ch: int, norm: str) -> nn.Sequential:
    """(3x3 conv + norm + ReLU) x 2, padded so that the block keeps the spatial size."""
    bias = norm == "none"
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias), NORMS[norm](out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias), NORMS[norm](out_ch), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder of conv blocks and 2x2 max-pooling, decoder of 2x2 up-convolutions, skips by concatenation.

    `depth` is the number of poolings; widths double at each level from `base_width`. Inputs of any size are
    padded up to a multiple of 2**depth and the output is cropped back, so the output has the input's size.
    With `deep_supervision`, training-mode forward returns a list of logits: full resolution first, then one per
    coarser decoder level (each half the size of the previous); eval mode always returns the full-resolution logits.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 4, base_width: int = 32,
                 norm: str = "batch", deep_supervision: bool = False):
        super().__init__()
        self.hparams = dict(in_channels=in_channels, num_classes=num_classes, depth=depth,
                            base_width=base_width, norm=norm, deep_supervision=deep_supervision)
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        for level, width in enumerate(widths):
            self.encoders.append(conv_block(in_channels if level == 0 else widths[level - 1], width, norm))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
                                 for level in range(depth))
        self.decoders = nn.ModuleList(conv_block(2 * widths[level], widths[level], norm) for level in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(widths[level], num_classes, 1)
                                       for level in range(1, depth if deep_supervision else 1))
        self.apply(he_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2 ** self.hparams["depth"]
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple))
        skips, aux = [], []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for level in reversed(range(self.hparams["depth"])):
            x = self.decoders[level](torch.cat([skips[level], self.ups[level](x)], dim=1))
            if 0 < level <= len(self.aux_heads) and self.training:
                aux.insert(0, self.aux_heads[level - 1](x))
        logits = self.head(x)[..., :height, :width]
        return [logits, *aux] if aux else logits


def he_init(module: nn.Module) -> None:
    """He (Kaiming) normal initialisation for convolutions, as in the U-Net paper; zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
