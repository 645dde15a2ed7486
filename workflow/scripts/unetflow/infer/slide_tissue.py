"""Where a slide's tissue lies, from its smallest level: regions without tissue are not predicted.

`infer.slide_tissue` says how. `auto`: of an RGB slide the stained (saturated) side of Otsu's threshold on the
saturation; of a slide without colour (grey, fluorescence, RGB whose saturation stays under COLOURLESS, or an RGB
fluorescence composite, whose median brightness is under DARK_FIELD: its dark noise has no meaningful hue) one side of
Otsu's threshold on the mean intensity: the side with clearly more texture (TEXTURE_RATIO times the other's median
local deviation: glass and an empty dark field are flat), else the side away from the background the slide's edge
shows where CLEAR_EDGE of it lies on one side (bright glass of a brightfield scan, dark of a fluorescence one); where
neither tells, the edge's majority with a warning naming the setting. `dark` and `bright` name the tissue's side of
the mean intensity (of any slide), `all` predicts every region.
"""

import logging
import math

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

log = logging.getLogger("unetflow.infer.slide_tissue")
TISSUE_RULES = ("auto", "dark", "bright", "all")
TISSUE_SMOOTHING = 1.0  # px of the smallest level: a grey slide's nuclei blur into their tissue before Otsu
CLEAR_EDGE = 0.9  # share of a slide's edge on one side of the threshold for that side to be clearly the background
TEXTURE_RATIO = 2.0  # how many times one side's median local deviation must exceed the other's to be clearly tissue
COLOURLESS = 0.1  # an RGB slide whose saturation stays below this (99.9th percentile) is read as a grey one
DARK_FIELD = 0.2  # an RGB slide whose median brightness (HSV value) is below this is read as a grey one
TEXTURE_WINDOW = 3  # px of the smallest level over which the local deviation of the intensity is taken


def tissue_mask(overview: np.ndarray, rule: str = "auto", name: str = "slide") -> tuple[np.ndarray, str]:
    """The tissue of a slide's smallest level (C, H, W) by `rule` (see the module docstring), and how it was found
    (for the log; a warning names the slide, `name`, where it cannot be told)."""
    if rule == "all":
        return np.ones(overview.shape[1:], bool), "every region (infer.slide_tissue: all)"
    kind = ""
    if rule == "auto" and overview.shape[0] == 3:
        hsv = rgb2hsv(np.moveaxis(overview, 0, -1))
        kind = rgb_kind(hsv)
        if not kind:
            return above_otsu(hsv[..., 1]), "the stained side of Otsu's threshold on the saturation"
    intensity = overview.astype(np.float32).mean(axis=0)
    bright = above_otsu(ndimage.gaussian_filter(intensity, TISSUE_SMOOTHING))
    if not bright.any():
        return bright, "none: the slide's smallest level has one value"
    side, reason = (rule, "infer.slide_tissue") if rule != "auto" else tissue_side(intensity, bright, name)
    return (bright if side == "bright" else ~bright), f"{kind}the {side} side of Otsu's threshold ({reason})"


def rgb_kind(hsv: np.ndarray) -> str:
    """Why an RGB slide's overview (H, W, 3 in HSV) is read as one without colour ('' for a stained slide)."""
    if np.median(hsv[..., 2]) < DARK_FIELD:
        return "an RGB slide on a dark field: "
    return "an RGB slide without colour: " if np.percentile(hsv[..., 1], 99.9) < COLOURLESS else ""


def above_otsu(values: np.ndarray) -> np.ndarray:
    """Where `values` exceed their Otsu threshold (nowhere when they are all equal)."""
    if values.min() == values.max():
        return np.zeros(values.shape, bool)
    return values > threshold_otsu(values)


def tissue_side(intensity: np.ndarray, bright: np.ndarray, name: str) -> tuple[str, str]:
    """The tissue's side of a grey slide (`bright` or `dark`) and why: the side with clearly more texture, else the
    side away from the one the slide's edge clearly shows; a warning naming `infer.slide_tissue` where neither
    tells."""
    textures = side_textures(intensity, bright)
    if None not in textures and max(textures) > 0 and max(textures) >= TEXTURE_RATIO * min(textures):
        side = "bright" if textures[0] > textures[1] else "dark"
        return side, f"more texture: local deviation {max(textures):.1f} against {min(textures):.1f} on the other"
    edge_bright = float(edge_pixels(bright).mean())
    side, edge = ("dark", "bright") if edge_bright > 0.5 else ("bright", "dark")
    reason = f"{100 * max(edge_bright, 1 - edge_bright):.0f} % of the slide's edge is {edge}"
    if max(edge_bright, 1 - edge_bright) < CLEAR_EDGE:
        deviations = " against ".join("-" if value is None else f"{value:.1f}" for value in textures)
        log.warning("%s: cannot tell the tissue from the background by texture (local deviation %s, bright against "
                    "dark) or by the edge (%s): the %s side taken; if that is wrong, set infer.slide_tissue "
                    "(--slide-tissue) to dark, bright or all", name, deviations, reason, side)
    return side, reason


def side_textures(intensity: np.ndarray, bright: np.ndarray) -> tuple[float | None, float | None]:
    """The median local deviation of the intensity inside the bright and the dark side (each eroded by half the
    window, so that the step between them counts on neither); None for a side without inside."""
    texture = local_deviation(intensity)
    insides = [ndimage.binary_erosion(side, iterations=TEXTURE_WINDOW // 2) for side in (bright, ~bright)]
    return tuple(float(np.median(texture[inside])) if inside.any() else None for inside in insides)


def edge_pixels(values: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of an image (H, W)."""
    return np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])


def local_deviation(intensity: np.ndarray) -> np.ndarray:
    """The standard deviation of `intensity` (H, W) in a TEXTURE_WINDOW square around each pixel."""
    mean = ndimage.uniform_filter(intensity, TEXTURE_WINDOW)
    return np.sqrt(np.maximum(ndimage.uniform_filter(intensity * intensity, TEXTURE_WINDOW) - mean * mean, 0))


def has_tissue(tissue: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    """Whether the tissue mask (any size) has tissue inside a box of a level of `shape` (at least one mask pixel)."""
    scale = (tissue.shape[0] / shape[0], tissue.shape[1] / shape[1])
    top, left = int(box[0] * scale[0]), int(box[1] * scale[1])
    bottom, right = max(top + 1, math.ceil(box[2] * scale[0])), max(left + 1, math.ceil(box[3] * scale[1]))
    return bool(tissue[top:bottom, left:right].any())
