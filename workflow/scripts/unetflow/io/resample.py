"""Resampling to a voxel spacing: new grid shapes, images by cubic spline, labels without inventing classes, and
predicted class probabilities back onto each input's own grid.

Grids are resampled edge to edge (`scipy.ndimage.zoom` with `grid_mode=True`: the first and last voxels' outer
edges stay where they were), so a round trip returns to the same extent. An axis one voxel long is never resampled.
"""

import cv2
import numpy as np
from scipy import ndimage

IMAGE_ORDER = 3  # cubic B-spline for intensities (nnU-Net's choice)


def resampled_shape(shape, spacing, target) -> tuple[int, ...]:
    """The grid shape that covers `shape` voxels of `spacing` with voxels of `target` (at least 1 per axis; axes
    one voxel long, and axes whose target is None, keep their length)."""
    return tuple(length if length == 1 or goal is None else max(1, round(length * size / goal))
                 for length, size, goal in zip(shape, spacing, target))


def _zoom(array: np.ndarray, shape, order: int) -> np.ndarray:
    """`array` resampled to `shape` (same dimensions) by a spline of `order`, edge to edge, in its own dtype
    (float16, which scipy.ndimage does not take, through float32: stored loss weights)."""
    if tuple(array.shape) == tuple(shape):
        return array
    if array.dtype == np.float16:
        return _zoom(array.astype(np.float32), shape, order).astype(np.float16)
    factors = [new / old for new, old in zip(shape, array.shape)]
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def resample_image(image: np.ndarray, shape) -> np.ndarray:
    """Intensities (C, ...) float32 on a grid of `shape` (the spatial axes), each channel by cubic spline."""
    image = np.asarray(image, np.float32)
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    return np.stack([_zoom(channel, shape, IMAGE_ORDER) for channel in image])


def resize_image(image: np.ndarray, shape) -> np.ndarray:
    """A 2D image (C, H, W) float32 resized to `shape` (H', W'): by pixel-area averaging when it shrinks (no
    aliasing of fine texture), by cubic spline when it grows."""
    image = np.asarray(image, np.float32)
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    if shape[0] <= image.shape[1] and shape[1] <= image.shape[2]:
        return np.stack([cv2.resize(channel, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) for channel in image])
    return resample_image(image, shape)


def resample_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Label values on a grid of `shape`: each value's indicator map is interpolated linearly (averaged over pixel
    areas when a 2D map shrinks) and every voxel takes the value with the largest share (nnU-Net's way), so no value
    appears that `labels` did not hold."""
    if tuple(labels.shape) == tuple(shape):
        return labels
    values = np.unique(labels)
    if len(values) == 1:
        return np.full(shape, values[0], labels.dtype)
    if labels.ndim == 2 and shape[0] <= labels.shape[0] and shape[1] <= labels.shape[1]:
        shares = resize_image(np.stack([labels == value for value in values]), shape)
    else:
        shares = np.stack([_zoom((labels == value).astype(np.float32), shape, 1) for value in values])
    return values[np.argmax(shares, axis=0)].astype(labels.dtype)


def resample_nearest(ids: np.ndarray, shape) -> np.ndarray:
    """Integer maps (object ids) or loss weights on a grid of `shape` by nearest neighbour."""
    return _zoom(ids, shape, 0)


def resample_probabilities(probabilities: np.ndarray, shape) -> np.ndarray:
    """Class probabilities (K, ...) on a grid of `shape` (the spatial axes) by linear interpolation: a voxel's
    values stay a convex mix of its neighbours', so they still sum to 1."""
    if tuple(probabilities.shape[1:]) == tuple(shape):
        return probabilities
    return np.stack([_zoom(channel, shape, 1) for channel in probabilities])


def resample_source_image(image: np.ndarray, shape) -> np.ndarray:
    """A volume (C, Z, Y, X) float32 on a grid of `shape` (Z', Y', X') by cubic spline, in two passes as nnU-Net
    does for anisotropic data: each slice in-plane, then along the slice axis."""
    image = np.asarray(image, np.float32)
    if tuple(image.shape[2:]) != tuple(shape[1:]):
        image = np.stack([np.stack([_zoom(plane, shape[1:], IMAGE_ORDER) for plane in channel]) for channel in image])
    return resample_image(image, shape)


def resize_slices(image: np.ndarray, plane) -> np.ndarray:
    """Every slice of an image (C, Z, Y, X) resized to `plane` (Y', X') by `resize_image` (2D images and the pages
    of a stack, which have no spacing)."""
    image = np.asarray(image, np.float32)
    if tuple(image.shape[2:]) == tuple(plane):
        return image
    return np.stack([resize_image(image[:, z], plane) for z in range(image.shape[1])], axis=1)


def scaled_plane(plane, factor: float) -> tuple[int, int]:
    """The size (Y', X') of a plane (Y, X) resized by `factor` (at least 1 pixel a side)."""
    return tuple(max(1, round(side * factor)) for side in plane)


def resample_source_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Label values (Z, Y, X) on a grid of `shape` by `resample_labels`, each slice in-plane, then along the slice
    axis (no value appears that `labels` did not hold)."""
    if tuple(labels.shape[1:]) != tuple(shape[1:]):
        labels = np.stack([resample_labels(plane, shape[1:]) for plane in labels])
    return resample_labels(labels, shape)
