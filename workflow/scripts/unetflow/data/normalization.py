"""Intensity normalisation schemes (`preprocess.normalization`), shared by preprocessing and inference.

- `zscore`: minus the mean, over the standard deviation, per channel: of each 2D image, of a whole volume (all its
  slices together, so they share one scale);
- `zscore_nonzero`: the same, with the statistics of the voxels that are not zero in every channel (a skull-stripped
  MR's brain), which stay 0 (nnU-Net's `use_mask_for_norm`), so that the zeros around an object, however many, do
  not change how it is normalised;
- `minmax`: to [0, 1] between the minimum and the maximum, per image or volume alike;
- `ct`: clipped to the 0.5/99.5 percentiles of the training set's foreground intensities, then minus their mean, over
  their standard deviation (nnU-Net's CT scheme; the statistics come from the data-set fingerprint);
- `window`: clipped to a fixed window [low, high] (e.g. [-1000, 1000] HU) and mapped linearly onto [-1, 1].

`zscore`, `zscore_nonzero` and `minmax` may clip each image or volume to its own percentiles first
(`preprocess.clip_percentiles`; of `zscore_nonzero`, of the voxels it normalises).
"""

import numpy as np

SCHEMES = ("zscore", "zscore_nonzero", "minmax", "ct", "window")
EPSILON = 1e-8


def normalize(channels: np.ndarray, method: str = "zscore", clip_percentiles=None, ct: dict | None = None,
              window=None) -> np.ndarray:
    """An image (C, ...) of any dtype normalised by `method` as one (statistics per channel over all its other
    axes), float32 of the same shape (see the module docstring; `ct`: the fingerprint's low, high, mean and std;
    `window`: [low, high])."""
    channels = np.ascontiguousarray(channels, np.float32)  # sums alike whatever the layout of the array given
    axes = tuple(range(1, channels.ndim))
    if method == "ct":
        return ((np.clip(channels, ct["low"], ct["high"]) - ct["mean"]) / max(ct["std"], EPSILON)).astype(np.float32)
    if method == "window":
        low, high = window
        return ((np.clip(channels, low, high) - (low + high) / 2) / ((high - low) / 2)).astype(np.float32)
    if method == "zscore_nonzero":
        return zscore_inside(channels, np.any(channels != 0, axis=0), clip_percentiles)
    if clip_percentiles is not None:
        low, high = np.percentile(channels, clip_percentiles, axis=axes, keepdims=True)
        channels = np.clip(channels, low, high)
    if method == "zscore":
        mean = channels.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        std = channels.std(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        return (channels - mean) / np.maximum(std, EPSILON)
    if method == "minmax":
        low, high = channels.min(axis=axes, keepdims=True), channels.max(axis=axes, keepdims=True)
        return (channels - low) / np.maximum(high - low, EPSILON)
    raise ValueError(f"preprocess.normalization: unknown method '{method}' (one of {', '.join(SCHEMES)})")


def zscore_inside(channels: np.ndarray, inside: np.ndarray, clip_percentiles=None) -> np.ndarray:
    """Each channel (C, ...) float32 z-scored with the statistics of the `inside` voxels (clipped to their
    percentiles first, if given), the others 0; a plain z-score when nothing is inside."""
    if not inside.any():
        inside = np.ones_like(inside)
    values = channels[:, inside]
    if clip_percentiles is not None:
        low, high = np.percentile(values, clip_percentiles, axis=1, keepdims=True)
        values = np.clip(values, low, high)
    mean = values.mean(axis=1, dtype=np.float64).astype(np.float32)
    std = np.maximum(values.std(axis=1, dtype=np.float64), EPSILON).astype(np.float32)
    normalised = np.zeros_like(channels)
    normalised[:, inside] = (values - mean[:, None]) / std[:, None]
    return normalised


def normalize_with(channels: np.ndarray, settings: dict) -> np.ndarray:
    """`normalize` with the resolved preprocessing settings (normalization, clip_percentiles, ct, window)."""
    return normalize(channels, settings["normalization"], settings["clip_percentiles"], settings["ct"],
                     settings["window"])
