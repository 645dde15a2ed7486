"""The U-Net paper's training target for touching objects (Ronneberger et al. 2015, section 3, eq. 2).

The target is binary foreground in which touching objects are separated by background: every object pixel with a
neighbour of another id (8-connected) becomes background, so two touching objects are split by a 2-pixel gap. Each
pixel gets the loss weight

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

with d1, d2 the distances to the nearest and the second-nearest object, w0 = 10 and sigma = 5 pixels as in the
paper (the defaults of `preprocess.weight_map`), and w_c the class-balancing weight (the more frequent class of
the image weighs 1, the other the ratio of their pixel counts, at most MAX_CLASS_WEIGHT). The border term is given
to background pixels only (inside an object d1 is 0 and the term is meaningless), so it peaks at about w0 + w_c on
the gaps between touching objects.
The term is negligible once d1 + d2 exceeds about 4.3 sigma, so each object's distance transform is computed on a
window of its bounding box widened by that reach instead of the whole image.
"""

import math

import numpy as np
from scipy import ndimage

W0 = 10.0
SIGMA = 5.0
REACH_SIGMAS = math.sqrt(2 * math.log(1e4))  # beyond this many sigma the border term is below w0 * 1e-4
MAX_CLASS_WEIGHT = 10.0
WEIGHT_DTYPE = np.float16  # as stored in the case
FULL_CONNECTIVITY = np.ones((3, 3), bool)


def separated_objects(ids: np.ndarray) -> np.ndarray:
    """The id map without the pixels that touch another object (8-connected): touching objects split by a gap."""
    other = np.where(ids == 0, np.iinfo(ids.dtype).max, ids)
    larger_neighbour = ndimage.grey_dilation(ids, footprint=FULL_CONNECTIVITY, mode="nearest") != ids
    smaller_neighbour = ndimage.grey_erosion(other, footprint=FULL_CONNECTIVITY, mode="nearest") != other
    return np.where((ids > 0) & (larger_neighbour | smaller_neighbour), 0, ids)


def nearest_two_distances(ids: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel the distances to the nearest and the second-nearest object (inf beyond `reach` of them), each
    object's Euclidean distance transform computed on its bounding box widened by `reach`."""
    first = np.full(ids.shape, np.inf, np.float32)
    second = np.full(ids.shape, np.inf, np.float32)
    margin = int(math.ceil(reach))
    for index, box in enumerate(ndimage.find_objects(ids), start=1):
        if box is None:
            continue
        window = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, ids.shape))
        distance = ndimage.distance_transform_edt(ids[window] != index).astype(np.float32)
        near, far = first[window], second[window]
        second[window] = np.minimum(far, np.maximum(near, distance))
        first[window] = np.minimum(near, distance)
    return first, second


def class_weights(foreground: np.ndarray) -> np.ndarray:
    """w_c per pixel: 1 for the image's more frequent class, count ratio (at most MAX_CLASS_WEIGHT) for the other."""
    counts = np.bincount(foreground.ravel().astype(np.int64), minlength=2).astype(np.float64)
    weights = np.minimum(counts.max() / np.maximum(counts, 1), MAX_CLASS_WEIGHT)
    return weights[foreground.astype(np.int64)].astype(np.float32)


def border_weight_map(ids: np.ndarray, w0: float = W0, sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """An instance id map -> (binary target uint8 with touching objects separated, weights float16): the paper's
    w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, w_c(x) on object pixels."""
    objects = separated_objects(ids)
    foreground = (objects > 0).astype(np.uint8)
    first, second = nearest_two_distances(objects, REACH_SIGMAS * sigma)
    border = w0 * np.exp(-((first + second) ** 2) / (2 * sigma**2))
    weights = class_weights(foreground) + np.where(foreground == 0, border, 0)
    return foreground, weights.astype(WEIGHT_DTYPE)
