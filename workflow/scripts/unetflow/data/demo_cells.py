"""Synthetic touching cells with instance masks (the demo data of the instance mode, `data.instances: true`).

Cells are ellipses around centres drawn at a minimum spacing below their diameter, so neighbours overlap; each
pixel of an overlap goes to the nearest centre (a Voronoi cut), so every cell is one convex, connected object and
touching cells share a straight border. The image shows each cell with its own brightness, a slightly darker rim
(as nuclei in fluorescence) and the usual blur, noise and uneven background of the demo.
"""

import cv2
import numpy as np

CELL_RADIUS = 0.075     # mean semi-axis, as a share of the image side
MIN_SPACING = 1.3       # minimum distance between centres, in mean semi-axes (< 2: neighbours overlap)
CELLS_PER_AREA = 0.75   # target number of cells per (image area / mean cell area)


def cell_centres(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """(N, 2) centres (y, x), drawn uniformly with rejection of those closer than MIN_SPACING * radius."""
    target = int(CELLS_PER_AREA * size * size / (np.pi * radius * radius))
    centres = []
    for _ in range(target * 30):
        point = rng.uniform(0, size, 2)
        if all(np.hypot(*(point - other)) >= MIN_SPACING * radius for other in centres):
            centres.append(point)
        if len(centres) == target:
            break
    return np.array(centres).reshape(-1, 2)


def cell_ids(rng: np.random.Generator, size: int, centres: np.ndarray, radius: float) -> np.ndarray:
    """Instance ids (size, size) uint16: pixel -> its nearest centre when inside that centre's ellipse, else 0."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    offsets_y = yy[None] - centres[:, 0, None, None].astype(np.float32)
    offsets_x = xx[None] - centres[:, 1, None, None].astype(np.float32)
    nearest = np.argmin(offsets_y**2 + offsets_x**2, axis=0)
    axes = rng.uniform(0.8, 1.25, (len(centres), 2)) * radius
    angles = rng.uniform(0, np.pi, len(centres))
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    along = (offsets_x * cos + offsets_y * sin) / axes[:, 0, None, None]
    across = (-offsets_x * sin + offsets_y * cos) / axes[:, 1, None, None]
    inside = np.take_along_axis(along**2 + across**2 <= 1, nearest[None], axis=0)[0]
    return np.where(inside, nearest + 1, 0).astype(np.uint16)


def render_touching_cells(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One 8-bit grey image of touching cells and its instance mask (uint16 ids 1..N, 0 = background)."""
    radius = CELL_RADIUS * size
    ids = cell_ids(rng, size, cell_centres(rng, size, radius), radius)
    brightness = np.concatenate([[0.0], rng.uniform(0.6, 1.0, int(ids.max()))]).astype(np.float32)
    cells = brightness[ids]
    edges = cv2.dilate(ids, np.ones((3, 3), np.uint8)) != cv2.erode(ids, np.ones((3, 3), np.uint8))
    rim = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), 1.0)
    background = rng.uniform(0.15, 0.3)
    ramp = np.linspace(0, rng.uniform(-0.1, 0.1), size, dtype=np.float32)
    texture = cv2.GaussianBlur(rng.normal(0, 0.06, (size, size)).astype(np.float32), (0, 0), 3)
    image = background + ramp[None, :] + texture + cells * (1 - 0.45 * np.clip(rim, 0, 1)) * 0.5
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.6, 1.0))
    image += rng.normal(0, rng.uniform(0.02, 0.05), image.shape).astype(np.float32)
    return np.clip(image * 255, 0, 255).astype(np.uint8), ids
