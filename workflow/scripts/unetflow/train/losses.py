"""Segmentation losses: cross-entropy, soft Dice, their sum, and deep supervision; on regions (data.regions), binary
cross-entropy and soft Dice of each region's sigmoid (nnU-Net's DC_and_BCE).

The soft Dice of classes covers the foreground classes 1..K-1 (nnU-Net's do_bg=False), or every class with
`dice_background` (the plan's `train.dice_background`: class 0 when it is not a dominant background, as ISBI 2012's
membranes stored as 0).

Pixels labelled IGNORE_INDEX (255, see `unetflow.io.labels`) count in neither loss. Optional per-pixel weights (the
instance target `weight_map`) weight the cross-entropy only: the mean over valid pixels of weight x CE, which is
the plain CE when every weight is 1; the Dice part is unchanged. Region targets come from the class indices through
a lookup (256, R) float tensor (`unetflow.io.regions.Regions.lookup`: class index -> membership of each region).
"""

import torch
import torch.nn.functional as F

from unetflow.io.labels import IGNORE_INDEX


def soft_dice(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft Dice of each channel of probabilities and targets (B, C, ...), pooled over the batch ("batch Dice")."""
    dims = (0, *range(2, probs.ndim))
    return (2 * (probs * targets).sum(dims) + 1e-5) / ((probs + targets).sum(dims) + 1e-5)


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, dice_background: bool = False) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (1..K-1; all K with `dice_background`), pooled over the batch
    ("batch Dice")."""
    probs = logits.float().softmax(dim=1)
    valid = (labels != IGNORE_INDEX).unsqueeze(1)
    one_hot = F.one_hot(labels.masked_fill(~valid[:, 0], 0), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    return 1 - soft_dice(probs * valid, one_hot * valid)[first_dice_class(dice_background):].mean()


def first_dice_class(dice_background: bool) -> int:
    """The first class the Dice (loss and validation) covers: 0 with `dice_background`, else 1."""
    return 0 if dice_background else 1


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy averaged over the pixels not ignored, each weighted by `weights` (B, H, W) when given."""
    if weights is None:
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = labels != IGNORE_INDEX
    return (per_pixel * weights.float() * valid).sum() / valid.sum().clamp_min(1)


def region_targets(labels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """The region masks (B, R, ...) float of class indices (B, ...) through the lookup `regions` (256, R)."""
    return regions[labels].movedim(-1, 1)


def region_loss(logits: torch.Tensor, labels: torch.Tensor, regions: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss of region logits (B, R, ...): 'ce', binary cross-entropy with logits averaged over the pixels not
    ignored and the regions; 'dice', 1 - mean soft Dice of the regions' sigmoid; 'ce_dice', their sum."""
    logits, valid = logits.float(), (labels != IGNORE_INDEX).unsqueeze(1).float()
    targets = region_targets(labels, regions)
    loss = 0
    if kind in ("ce", "ce_dice"):
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        loss = (bce * valid).sum() / (valid.sum() * logits.shape[1]).clamp_min(1)
    if kind in ("dice", "ce_dice"):
        loss = loss + 1 - soft_dice(logits.sigmoid() * valid, targets * valid).mean()
    return loss


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce_dice",
                      weights: torch.Tensor | None = None, regions: torch.Tensor | None = None,
                      dice_background: bool = False) -> torch.Tensor:
    """The configured loss: 'ce', 'dice' or 'ce_dice' (their sum, as in nnU-Net); `weights` weight the CE; the Dice
    covers class 0 too with `dice_background`; with the region lookup `regions`, the `region_loss` of region
    logits."""
    if regions is not None:
        return region_loss(logits, labels, regions, kind)
    ce = weighted_cross_entropy(logits, labels, weights) if kind in ("ce", "ce_dice") else 0
    dice = soft_dice_loss(logits, labels, dice_background) if kind in ("dice", "ce_dice") else 0
    return ce + dice


def deep_supervision_loss(outputs: list[torch.Tensor], labels: torch.Tensor, kind: str,
                          weights: torch.Tensor | None = None, regions: torch.Tensor | None = None,
                          dice_background: bool = False) -> torch.Tensor:
    """Weighted sum over resolutions (weights 1, 1/2, 1/4, ... normalised), labels (and per-pixel weights)
    downsampled by nearest neighbour."""
    levels = torch.tensor([0.5**i for i in range(len(outputs))])
    levels = levels / levels.sum()
    total = 0
    for level, logits in zip(levels.tolist(), outputs):
        target = F.interpolate(labels[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
        pixel_weights = None if weights is None else \
            F.interpolate(weights[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0]
        total = total + level * segmentation_loss(logits, target, kind, pixel_weights, regions,
                                                   dice_background)
    return total
