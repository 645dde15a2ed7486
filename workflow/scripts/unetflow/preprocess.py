"""Preprocessing: intensity normalisation and label mapping into compact per-case arrays.

The class table (from ingest) has columns index, name, value, ignore and color. Masks are first brought to class
values (`mask_values`: colours mapped through the colour table, JPEG masks snapped to the nearest declared value),
then to class indices 0..K-1 (`map_labels`), with the ignored value as IGNORE_INDEX.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from unetflow.io import ImageReadError, is_lossy, read_image, read_mask
from unetflow.volumes import stack_image_slices, stack_mask_slices, volume_image_slices, volume_mask_slices

IGNORE_INDEX = 255  # class index of pixels excluded from the loss and the evaluation


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) image with `channels` channels: RGB to grey by luminance (ITU-R BT.601, as OpenCV), grey repeated
    into RGB, unchanged when it has them already."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image.astype(np.float32, copy=False), cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image, channels, axis=2)


def normalize(image: np.ndarray, method: str = "zscore", clip_percentiles=None) -> np.ndarray:
    """(H, W, C) image of any dtype -> (C, H, W) float32, z-scored per channel, optionally percentile-clipped first."""
    channels = image.astype(np.float32).transpose(2, 0, 1)
    if clip_percentiles is not None:
        low, high = np.percentile(channels, clip_percentiles, axis=(1, 2), keepdims=True)
        channels = np.clip(channels, low, high)
    if method == "zscore":
        mean = channels.mean(axis=(1, 2), keepdims=True)
        std = channels.std(axis=(1, 2), keepdims=True)
        return (channels - mean) / np.maximum(std, 1e-8)
    if method == "minmax":
        low, high = channels.min(axis=(1, 2), keepdims=True), channels.max(axis=(1, 2), keepdims=True)
        return (channels - low) / np.maximum(high - low, 1e-8)
    raise ValueError(f"preprocess.normalization: unknown method '{method}' (zscore or minmax)")


def map_labels(mask: np.ndarray, values: list[int], ignore_value: int | None = None) -> np.ndarray:
    """Stored mask values -> class indices 0..K-1 (values[k] becomes k), `ignore_value` -> IGNORE_INDEX, as uint8."""
    known = list(values) + ([ignore_value] if ignore_value is not None else [])
    lookup = np.zeros(int(max(mask.max(initial=0), max(known))) + 1, np.uint8)
    lookup[np.asarray(values)] = np.arange(len(values))
    if ignore_value is not None:
        lookup[ignore_value] = IGNORE_INDEX
    return lookup[mask]


def trained_classes(classes: pd.DataFrame) -> pd.DataFrame:
    """The class table without the ignore row, in index order."""
    ignored = classes["ignore"].astype(bool) if "ignore" in classes else pd.Series(False, classes.index)
    return classes[~ignored].sort_values("index")


def class_values(classes: pd.DataFrame) -> list[int]:
    """The stored mask value of each class index, in index order (the ignored value excluded)."""
    return trained_classes(classes)["value"].astype(int).tolist()


def ignore_value(classes: pd.DataFrame) -> int | None:
    """The mask value excluded from training and evaluation, or None."""
    if "ignore" not in classes or not classes["ignore"].any():
        return None
    return int(classes.loc[classes["ignore"].astype(bool), "value"].iloc[0])


def class_colors(classes: pd.DataFrame) -> np.ndarray | None:
    """(K, 3) RGB colour of each class index when masks are colour-coded, else None."""
    trained = trained_classes(classes)
    if "color" not in trained or trained.empty or trained["color"].isna().any():
        return None
    return np.array([list(c) for c in trained["color"]], np.int64)


def snap_to_nearest(values: np.ndarray, allowed: list[int]) -> np.ndarray:
    """Each value replaced by the nearest of `allowed` (ties go to the smaller)."""
    allowed = np.sort(np.asarray(allowed))
    edges = (allowed[:-1] + allowed[1:]) / 2
    return allowed[np.searchsorted(edges, values, side="left")]


def colour_codes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> one integer per pixel."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]


def colours_to_indices(rgb: np.ndarray, colors: np.ndarray, snap: bool) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) colours -> (class indices, mask of pixels whose colour is not in the table); `snap` maps every
    colour to the nearest table colour (Euclidean) instead."""
    if snap:
        distances = ((rgb[..., None, :].astype(np.int64) - colors) ** 2).sum(-1)
        return distances.argmin(-1).astype(np.uint8), np.zeros(rgb.shape[:2], bool)
    codes, table = colour_codes(rgb), colour_codes(colors)
    order = np.argsort(table)
    position = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
    unknown = table[order][position] != codes
    return order[position].astype(np.uint8), unknown


@dataclass(frozen=True)
class LabelCoding:
    """How masks encode classes, taken once from the class table: colours (or None), class values, ignored value."""
    colors: np.ndarray | None
    values: list[int]
    ignored: int | None

    @classmethod
    def of(cls, classes: pd.DataFrame) -> "LabelCoding":
        return cls(class_colors(classes), class_values(classes), ignore_value(classes))


def mask_values(raw: np.ndarray, coding: LabelCoding, lossy: bool, path) -> tuple[np.ndarray, int]:
    """A raw mask (H, W) or (H, W, 3) -> (H, W) class values and the number of pixels snapped (JPEG masks only).

    Colour masks are mapped through the class colours (class value = class index); a colour outside the table
    raises ImageReadError.
    """
    colors = coding.colors
    if colors is not None:
        rgb = np.repeat(raw[..., None], 3, axis=2) if raw.ndim == 2 else raw
        indices, unknown = colours_to_indices(rgb, colors, snap=lossy)
        if unknown.any():
            found = np.unique(rgb[unknown].reshape(-1, 3), axis=0)[:5].tolist()
            raise ImageReadError(f"{path}: {int(unknown.sum())} pixels have colours {found} that are not in "
                                 f"data.colors; add them to the colour table")
        changed = int((colours_to_indices(rgb, colors, snap=False)[1]).sum()) if lossy else 0
        return indices, changed
    if raw.ndim == 3:
        if not lossy:
            raise ImageReadError(f"{path}: colour mask (H, W, 3); declare its colours in data.colors "
                                 f"({{name: [r, g, b]}}) or store class values instead")
        raw = raw.mean(axis=2).round().astype(np.uint16)
    if not lossy:
        return raw, 0
    allowed = coding.values + ([coding.ignored] if coding.ignored is not None else [])
    snapped = snap_to_nearest(raw, allowed).astype(np.uint16 if max(allowed) > 255 else np.uint8)
    return snapped, int(np.count_nonzero(snapped != raw))


def source_images(row) -> np.ndarray:
    """Every slice of the row's image source as (S, H, W, C): one slice for 2D files."""
    if row["kind"] == "volume":
        return volume_image_slices(row["image_path"], int(row["slice_axis"]))
    if row["kind"] == "stack":
        return stack_image_slices(row["image_path"])
    return read_image(row["image_path"])[None]


def source_masks(row, colour: bool) -> np.ndarray:
    """Every slice of the row's mask source as (S, H, W) values, or (S, H, W, 3) colours when `colour`."""
    path = row["mask_path"]
    if row["kind"] == "volume":
        return volume_mask_slices(path, int(row["slice_axis"]))
    if row["kind"] == "stack":
        return stack_image_slices(path) if colour else stack_mask_slices(path)
    if colour:
        image = read_image(path)
        return np.repeat(image, 3, axis=2)[None] if image.shape[2] == 1 else image[None]
    return read_mask(path)[None]


def row_kind(row) -> str:
    """The row's source kind ('image', 'stack' or 'volume'); manifests without the column hold 2D images."""
    return row["kind"] if "kind" in row and isinstance(row["kind"], str) else "image"


def case_labels(rows: pd.DataFrame, classes: pd.DataFrame) -> list[np.ndarray]:
    """Class indices (H, W) uint8 (ignored pixels IGNORE_INDEX) of every row, all rows from one mask source.

    The ground truth as training sees it; evaluation can use it for any manifest row (2D file, stack or volume slice).
    """
    first = rows.iloc[0].copy()
    first["kind"] = row_kind(first)
    coding = LabelCoding.of(classes)
    slices = source_masks(first, coding.colors is not None)
    lossy = is_lossy(first["mask_path"])
    labels = []
    for _, row in rows.iterrows():
        raw = slices[int(row["slice"]) if first["kind"] != "image" else 0]
        mapped, _ = mask_values(raw, coding, lossy, first["mask_path"])
        labels.append(mapped if coding.colors is not None else map_labels(mapped, coding.values, coding.ignored))
    return labels


def preprocess_source(rows: pd.DataFrame, classes: pd.DataFrame, out_dir: str, normalization: str,
                      clip_percentiles) -> list[dict]:
    """Preprocess every row of one source (a 2D file, a TIFF stack or a volume, read once); one npz per row."""
    first = rows.iloc[0].copy()
    first["kind"] = row_kind(first)
    images = source_images(first)
    results = []
    for (_, row), labels in zip(rows.iterrows(), case_labels(rows, classes)):
        image = images[int(row["slice"]) if first["kind"] != "image" else 0]
        image = normalize(to_channels(image, int(row.get("input_channels", image.shape[2]))), normalization,
                          clip_percentiles)
        path = Path(out_dir, f"{row['id']}.npz")
        np.savez(path, image=image.astype(np.float16), labels=labels)
        results.append(dict(id=row["id"], array_path=str(path), height=labels.shape[0], width=labels.shape[1],
                            channels=image.shape[0],
                            foreground_fraction=float(((labels > 0) & (labels != IGNORE_INDEX)).mean())))
    return results


def preprocess_case(row: pd.Series, classes: pd.DataFrame, out_dir: str, normalization: str,
                    clip_percentiles) -> dict:
    """Normalise one case's image, map its mask, save both to out_dir/<id>.npz; return its manifest row."""
    return preprocess_source(row.to_frame().T, classes, out_dir, normalization, clip_percentiles)[0]


def load_case(array_path: str) -> tuple[np.ndarray, np.ndarray]:
    """A preprocessed case: image (C, H, W) float16 as stored (half the memory of float32; consumers convert
    batches) and labels (H, W) uint8 (IGNORE_INDEX = ignored pixel)."""
    with np.load(array_path) as arrays:
        return arrays["image"], arrays["labels"]
