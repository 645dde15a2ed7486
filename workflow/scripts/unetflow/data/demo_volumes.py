"""Synthetic NIfTI volumes for tests and benchmarks: ellipsoids of one or more foreground classes in noise, on a
voxel grid of any (anisotropic) spacing.

Ellipsoids are drawn in physical units (mm), so on a coarse axis they span fewer voxels; each class has its own
intensity, and the image is blurred and noisy so that single voxels are ambiguous.
"""

from pathlib import Path

import numpy as np
from scipy import ndimage

from unetflow.io.nifti import write_image_volume


def ellipsoid_volume(shape, spacing, rng: np.random.Generator, num_classes: int = 2,
                     per_class: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8) of `shape` voxels of `spacing` mm: `per_class` random ellipsoids (semi-axes
    a sixth to a third of the median physical extent) of each foreground class 1..num_classes-1, later ones
    painted over earlier ones; intensity = class index plus blur and Gaussian noise (std 0.6)."""
    extent = np.array(shape) * np.array(spacing)
    grid = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    labels = np.zeros(shape, np.uint8)
    for label in [c for c in range(1, num_classes) for _ in range(per_class)]:
        centre = rng.uniform(0.2, 0.8, 3) * extent
        radii = rng.uniform(1 / 6, 1 / 3, 3) * np.median(extent)
        labels[(((grid - centre) / radii) ** 2).sum(-1) <= 1] = label
    image = ndimage.gaussian_filter(labels.astype(np.float32), sigma=[1.0 / s for s in spacing])
    return (image + rng.normal(0, 0.6, shape)).astype(np.float32), labels


def write_volume_pairs(folder, count: int, shape, spacing, num_classes: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """`count` ellipsoid volumes as NIfTI (.nii.gz, affine diag(spacing)) in folder/images and folder/masks;
    `shape` and `spacing` in stored (X, Y, Z) order."""
    rng = np.random.default_rng(seed)
    images, masks = Path(folder, "images"), Path(folder, "masks")
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*map(float, spacing), 1.0])
    for index in range(count):
        image, labels = ellipsoid_volume(shape, spacing, rng, num_classes)
        write_image_volume(images / f"vol{index}.nii.gz", image, affine)
        write_image_volume(masks / f"vol{index}.nii.gz", labels, affine)
    return images, masks
