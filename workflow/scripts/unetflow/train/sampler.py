"""Training cases and the patches drawn from them: the stored sources loaded as 2D slices or whole volumes, held on
the training device when they fit, and random patches, a share of them centred on foreground, none of them wholly
ignored (sparse annotations: pixels labelled IGNORE_INDEX)."""

import numpy as np
import torch

from unetflow.gpu import free_memory_bytes
from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.resample import resample_labels, resample_nearest, resize_image, scaled_plane
from unetflow.io.store import has_array, load_array, load_training_arrays, stored_paths

RANDOM_TRIES = 20  # random patches drawn in a case with ignored pixels before one is centred on a labelled pixel


def training_cases(table, ids: list[str], dims: int, weights: bool = False,
                   resolution: float = 1.0) -> list[tuple[np.ndarray, ...]]:
    """The stored sources `ids` (`table`: the preprocess table) as cases of a `dims`-D U-Net: every slice (image
    (C, Y, X), labels (Y, X)) for 2D, resized by the plan's `resolution`, every source whole (image (C, Z, Y, X),
    labels (Z, Y, X)) for 3D; with `weights`, the loss weights too where they are stored."""
    cases = []
    for path in stored_paths(table, ids):
        arrays = load_training_arrays(path) if weights else (load_array(path, "image"), load_array(path, "labels"))
        if dims == 3:
            cases.append(arrays)
        else:
            image, *maps = arrays
            cases += [resized_case(image[:, z], *(array[z] for array in maps), factor=resolution)
                      for z in range(image.shape[1])]
    return cases


def validation_cases(table, ids: list[str], dims: int, resolution: float = 1.0) -> list[tuple[np.ndarray, ...]]:
    """The stored sources `ids` as validation cases, scored as evaluate scores the test cases: as `training_cases`,
    but with the labels as stored, so a 2D image resized by the plan's `resolution` is scored on its prediction
    brought back to the stored size (thin structures the resizing loses count as missed), and pixels outside a
    source's region of interest (data.rois) ignored."""
    cases = []
    for path in stored_paths(table, ids):
        image, labels = load_array(path, "image"), load_array(path, "labels")
        if has_array(path, "roi"):
            labels = np.where(load_array(path, "roi"), labels, IGNORE_INDEX).astype(labels.dtype)
        if dims == 3:
            cases.append((image, labels))
            continue
        plane = scaled_plane(labels.shape[1:], resolution)
        cases += [(image[:, z] if resolution == 1 else resize_image(image[:, z], plane).astype(image.dtype), labels[z])
                  for z in range(image.shape[1])]
    return cases


def resized_case(image: np.ndarray, labels: np.ndarray, *weights: np.ndarray, factor: float) -> tuple:
    """A 2D case (image (C, Y, X), labels, weights) resized by `factor`: the image by `resize_image` (kept in its
    stored dtype), labels by their largest share, weights by nearest neighbour."""
    if factor == 1:
        return image, labels, *weights
    plane = scaled_plane(labels.shape, factor)
    return (resize_image(image, plane).astype(image.dtype), resample_labels(labels, plane),
            *(resample_nearest(w, plane) for w in weights))


class PatchSampler:
    """Training cases held on the device when they fit in half its free memory (else on the host, batches copied
    over); draws random patches, a share of them centred on foreground pixels. Cases are 2D, image (C, H, W) and
    labels (H, W) with a 2D patch, or volumes, image (C, D, H, W) and labels (D, H, W) with a 3D patch.

    Cases are kept as compact as they are stored (images float16, labels uint8, foreground pixels as int32 flat
    indices: about 3-4 bytes per pixel of a grey image, so large 3D data sets fit in memory); batches are
    converted to float32 images and int64 labels on the training device. Cases of (image, labels, weights) carry
    per-pixel loss weights (float16, the instance target `weight_map`), cropped with the labels.

    A patch never holds only ignored pixels: cases without a labelled pixel are never drawn, and in a case with
    ignored pixels a random patch is drawn again until it holds a labelled one (uniform among such patches; after
    RANDOM_TRIES, one centred on a random labelled pixel)."""

    def __init__(self, cases: list[tuple[np.ndarray, ...]], patch: list[int], device: torch.device,
                 foreground_share: float):
        self.patch, self.device, self.foreground_share = patch, device, foreground_share
        data_bytes = sum(array.nbytes for case in cases for array in case)
        self.storage = device if data_bytes < free_memory_bytes(device) // 2 else torch.device("cpu")
        self.images, self.labels, self.weights, self.foreground = [], [], [], []
        self.with_ignored, self.labelled = set(), []  # cases with ignored pixels; cases with labelled pixels
        for index, (image, labels, *weights) in enumerate(cases):
            ignored = labels == IGNORE_INDEX
            self.with_ignored.update([index] if ignored.any() else [])
            self.labelled += [] if ignored.all() else [index]
            self.weights += [torch.from_numpy(padded_to_patch(w[None], w, patch)[1]).to(self.storage) for w in weights]
            image, labels = padded_to_patch(image, labels, patch)
            self.images.append(torch.from_numpy(image).to(self.storage))
            self.labels.append(torch.from_numpy(labels).to(self.storage))
            foreground = np.flatnonzero((labels > 0) & (labels != IGNORE_INDEX)).astype(np.int32)
            self.foreground.append(torch.from_numpy(foreground))
        self.with_foreground = [i for i, fg in enumerate(self.foreground) if len(fg)]
        if not self.labelled:
            raise ValueError("every training pixel has the ignore label: nothing to train on; check the masks")

    def origin(self, case: int, centre_on_foreground: bool, generator: torch.Generator) -> list[int]:
        """First corner of a patch in `case`, random (holding a labelled pixel) or centred on a random foreground
        pixel."""
        if centre_on_foreground:
            return self.centred(case, self.foreground[case], generator)
        for _ in range(RANDOM_TRIES):
            origin = [int(torch.randint(s - p + 1, (1,), generator=generator))
                      for p, s in zip(self.patch, self.labels[case].shape)]
            window = tuple(slice(start, start + size) for start, size in zip(origin, self.patch))
            if case not in self.with_ignored or bool((self.labels[case][window] != IGNORE_INDEX).any()):
                return origin
        labelled = torch.nonzero(self.labels[case].flatten() != IGNORE_INDEX)[:, 0].cpu()
        return self.centred(case, labelled, generator)

    def centred(self, case: int, points: torch.Tensor, generator: torch.Generator) -> list[int]:
        """First corner of a patch in `case` centred on a random one of `points` (flat indices)."""
        shape = self.labels[case].shape
        centre = np.unravel_index(int(points[torch.randint(len(points), (1,), generator=generator)]), shape)
        return [min(max(0, c - p // 2), s - p) for c, p, s in zip(centre, self.patch, shape)]

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: images (B, C, *patch) and labels (B, *patch); round(share * B) patches centred on foreground."""
        images, labels, _ = self.sample_weighted(batch_size, generator)
        return images, labels

    def sample_weighted(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """`sample` plus the patches' loss weights (B, *patch) float32, or None when the cases have none."""
        n_foreground = round(self.foreground_share * batch_size) if self.with_foreground else 0
        images, labels, weights = [], [], []
        for index in range(batch_size):
            on_foreground = index < n_foreground
            pool = self.with_foreground if on_foreground else self.labelled
            case = pool[int(torch.randint(len(pool), (1,), generator=generator))]
            window = tuple(slice(start, start + size)
                           for start, size in zip(self.origin(case, on_foreground, generator), self.patch))
            images.append(self.images[case][(slice(None), *window)])
            labels.append(self.labels[case][window])
            weights += [self.weights[case][window]] if self.weights else []
        return (torch.stack(images).to(self.device, non_blocking=True).float(),
                torch.stack(labels).to(self.device, non_blocking=True).long(),
                torch.stack(weights).to(self.device, non_blocking=True).float() if weights else None)


def padded_to_patch(image: np.ndarray, labels: np.ndarray, patch: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Image (C, *shape) and labels (*shape) zero-padded at the end of each axis up to at least the patch size (the
    arrays themselves when they are large enough: no copy)."""
    pad = [(0, max(0, p - s)) for p, s in zip(patch, labels.shape)]
    if not any(after for _, after in pad):
        return image, labels
    return np.pad(image, [(0, 0), *pad]), np.pad(labels, pad)


