"""Deterministic synthetic demo data: cell-like blobs with blur, noise and uneven illumination."""

from pathlib import Path

import cv2
import numpy as np

from unetflow.data.demo_cells import render_touching_cells
from unetflow.io.images import write_image, write_mask


def render_case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One 8-bit grey image of elliptical cells on a textured background, and its 0/255 mask."""
    mask = np.zeros((size, size), np.uint8)
    cells = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(4, 4 + size * size // 1200)):
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        axes = tuple(int(a) for a in rng.integers(size // 20 + 3, size // 8 + 5, 2))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, 255, -1)
        cv2.ellipse(cells, centre, axes, angle, 0, 360, float(rng.uniform(0.6, 1.0)), -1)
    background = rng.uniform(0.15, 0.35)
    ramp = np.linspace(0, rng.uniform(-0.15, 0.15), size, dtype=np.float32)
    texture = cv2.GaussianBlur(rng.normal(0, 0.08, (size, size)).astype(np.float32), (0, 0), 3)
    image = background + ramp[None, :] + texture + cells * rng.uniform(0.3, 0.5)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.8, 1.6))
    image += rng.normal(0, rng.uniform(0.03, 0.07), image.shape).astype(np.float32)
    return np.clip(image * 255, 0, 255).astype(np.uint8), mask


def write_demo_data(out_dir: str, count: int, size: int, seed: int, instances: bool = False) -> None:
    """Write `count` image/mask PNG pairs to out_dir/images and out_dir/masks: 0/255 masks, or with `instances`
    touching cells with 16-bit instance masks (see `unetflow.data.demo_cells`)."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        Path(out_dir, sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, mask = render_touching_cells(rng, size) if instances else render_case(rng, size)
        write_image(Path(out_dir, "images", f"case_{index:03d}.png"), image)
        write_mask(Path(out_dir, "masks", f"case_{index:03d}.png"), mask)
