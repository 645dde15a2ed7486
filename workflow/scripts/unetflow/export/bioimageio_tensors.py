"""The tensors of a bioimage.io export: the package's normalisation as bioimage.io preprocessing steps, the input and
output axes (tiles of at least the training patch, grown by the network's divisibility, with a halo) and the test
input cut from a real image on the network's grid."""

import numpy as np
from bioimageio.spec.model import v0_5

from unetflow.data.normalization import EPSILON
from unetflow.data.preprocess import network_shape, to_channels
from unetflow.infer.package import Package
from unetflow.io.resample import resample_source_image, resize_slices, scaled_plane

SPACE_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
HALO_SHARE = 4  # a quarter of the patch on each side is cropped from each tile, as sliding windows weigh it least


def preprocessing(settings: dict, axes) -> list:
    """The package's normalisation (`settings`: `Package.preprocess`) as bioimage.io steps on the spatial `axes`
    (statistics per channel and image, as unetflow computes them). bioimage.io takes every step's statistics from the
    unprocessed image, so a z-score after percentile clipping uses those of the unclipped image (`not_carried` says
    so), and `zscore_nonzero` takes them of every voxel, not only of the non-zero ones; every other scheme is
    exact."""
    scheme, axes = settings["normalization"], [v0_5.AxisId(axis) for axis in axes]
    if scheme == "ct":
        ct = settings["ct"]
        return [clip(ct["low"], ct["high"]),
                v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=v0_5.FixedZeroMeanUnitVarianceKwargs(
                    mean=ct["mean"], std=max(ct["std"], EPSILON)))]
    if scheme == "window":
        low, high = settings["window"]
        return [clip(low, high), v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(
            gain=2 / (high - low), offset=-(low + high) / (high - low)))]
    low, high = settings["clip_percentiles"] or (0.0, 100.0)
    if scheme in ("zscore", "zscore_nonzero"):  # of every voxel (`not_carried` says so for zscore_nonzero)
        zscore = v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=axes))
        if settings["clip_percentiles"] is None:
            return [zscore]
        return [v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min_percentile=float(low), max_percentile=float(high),
                                                      axes=axes)), zscore]
    scaled = v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=axes, min_percentile=float(low),
                                                                max_percentile=float(high)))
    return [scaled] if settings["clip_percentiles"] is None else [scaled, clip(0.0, 1.0)]  # minmax


def clip(low: float, high: float) -> v0_5.ClipDescr:
    return v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=float(low), max=float(high)))


def input_axes(channels: int, patch, multiples) -> list:
    """Batch, channels, and each spatial axis at least the training `patch`, in steps of the network's `multiples`."""
    space = [v0_5.SpaceInputAxis(id=v0_5.AxisId(axis), size=v0_5.ParameterizedSize(min=int(size), step=int(step)))
             for axis, size, step in zip(SPACE_AXES[len(patch)], patch, multiples)]
    return [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[f"channel{c}" for c in range(channels)]), *space]


def output_axes(names: list[str], patch) -> list:
    """Batch, one channel per class (or region) `names`, and each spatial axis the input's, with a halo of a quarter
    of the patch."""
    space = [v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(axis), halo=max(1, int(size) // HALO_SHARE),
                                          size=v0_5.SizeReference(tensor_id=v0_5.TensorId(INPUT_ID),
                                                                  axis_id=v0_5.AxisId(axis)))
             for axis, size in zip(SPACE_AXES[len(patch)], patch)]
    return [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=names), *space]


def network_patch(package: Package, multiples) -> list[int]:
    """The training patch, each side rounded up to the network's multiple on that axis."""
    patch = package.patches[0]
    return [-(-size // step) * step for size, step in zip(patch, multiples)]


def raw_network_grid(image: np.ndarray, package: Package, spacing=None, axis: int = 0) -> np.ndarray:
    """A read image (C, Z, Y, X) as float32 with the package's input channels on the grid the network sees
    (`unetflow.data.preprocess.network_array` without the normalisation, which the model's preprocessing does): a
    volume (`spacing` given) resampled to the target spacing, a 2D image resized by the scale, then by the models'
    resolution."""
    image = to_channels(image, package.input_channels).astype(np.float32)
    shape = network_shape(image.shape[1:], spacing, package.preprocess, axis)
    if spacing is not None:
        return resample_source_image(image, shape)
    image = resize_slices(image, shape[1:])
    return resize_slices(image, scaled_plane(shape[1:], package.resolutions[0]))


def test_input(grid: np.ndarray, patch, name: str) -> np.ndarray:
    """The test input (1, C, *patch) cut from the centre of an image on the network's grid (C, Z, Y, X): a 2D model's
    from its middle slice; ValueError naming the image when it is smaller than the patch."""
    image = grid[:, grid.shape[1] // 2] if len(patch) == 2 else grid
    if any(side < size for side, size in zip(image.shape[1:], patch)):
        raise ValueError(f"{name}: {list(image.shape[1:])} pixels on the network's grid, smaller than the training "
                           f"patch {list(patch)}; give a larger image for the test input")
    crop = tuple(slice((side - size) // 2, (side - size) // 2 + size) for side, size in zip(image.shape[1:], patch))
    return np.ascontiguousarray(image[(slice(None), *crop)][None], dtype=np.float32)
