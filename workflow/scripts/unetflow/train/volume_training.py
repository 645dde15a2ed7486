"""Training on whole volumes (`train.dims`): whether a data set trains a 2D or a 3D U-Net, and its NIfTI volumes
rebuilt for 3D training from their stored slice cases.

`train.dims: auto` follows nnU-Net's rule of thumb: NIfTI volumes train in 3D unless they are extremely anisotropic
(the coarsest median voxel spacing more than ANISOTROPY_RATIO times the finest AND fewer than FEW_SLICES voxels
along that coarse axis: a 3D patch could hardly pool along it, and each slice is nearly independent of the next);
2D files, TIFF stacks (no spacing) and one-slice volumes train in 2D. A volume is trained as (C, S, H, W): its
slices along `data.slice_axis` stacked in slice order, as prediction stacks them, and resampled along the slice
axis to the target spacing (the stored slices are resampled in-plane only, which is all 2D training needs, as
nnU-Net's 2d configuration), with the slices' loss weights of the instance target `weight_map` when stored
(computed per slice, as the instance mode's target and objects are).
"""

import numpy as np
import pandas as pd

from unetflow.io.nifti import volume_spacing
from unetflow.io.resample import resample_image, resample_labels, resample_nearest, resampled_shape
from unetflow.io.store import CASE_IMAGE_DTYPE, load_cases
from unetflow.io.volumes import volume_rows

ANISOTROPY_RATIO = 3.0  # nnU-Net's threshold for an anisotropic spacing
FEW_SLICES = 32  # fewer voxels than this along the coarse axis of an anisotropic volume: train in 2D


def volume_geometry(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per NIfTI volume of an ingest manifest: volume, slice_axis (of the stored X, Y, Z array), shape and
    spacing (lists in the order of the training arrays: slice axis first, then the slice's height and width axes;
    spacing from the image's header, the only place training reads it)."""
    rows = []
    for name, slices in manifest[volume_rows(manifest)].groupby("volume"):
        first = slices.iloc[0]
        axis, spacing = int(first["slice_axis"]), volume_spacing(first["image_path"])
        rows.append(dict(volume=name, slice_axis=axis, shape=[len(slices), int(first["height"]), int(first["width"])],
                         spacing=[spacing[axis], *(s for a, s in enumerate(spacing) if a != axis)]))
    return pd.DataFrame(rows, columns=["volume", "slice_axis", "shape", "spacing"])


def choose_dims(requested, manifest: pd.DataFrame, geometry: pd.DataFrame,
                patch_size: list[int] | None = None) -> tuple[int, str]:
    """The U-Net's dims for the training cases of an ingest `manifest` (its volumes' `volume_geometry`) and why:
    `requested` (2, 3 or 'auto', the value of train.dims; with 'auto', an explicit train.patch_size decides by its
    number of sides). ValueError naming train.dims when 3 is asked of data that is not all multi-slice volumes."""
    sides = len(patch_size) if requested == "auto" and patch_size is not None else None
    if requested == 2 or sides == 2:
        return 2, "set in the config" if requested == 2 else "train.patch_size has 2 sides"
    setting = "train.dims is 3" if requested == 3 else "train.patch_size has 3 sides" if sides == 3 else None
    single = geometry.loc[[shape[0] == 1 for shape in geometry["shape"]], "volume"].tolist()
    others = manifest.loc[~volume_rows(manifest), "id"].tolist()
    if others or single or geometry.empty:
        what = (f"{len(others)} 2D case(s) (images or TIFF stack pages, e.g. {others[:3]})" if others else
                f"one-slice NIfTI volume(s) ({single[:3]})" if single else "no cases")
        if setting:
            raise ValueError(f"config key {setting} but the training data holds {what}: a 3D U-Net trains on NIfTI "
                             f"volumes of several slices; set train.dims to 2 or auto (and a 2-sided patch size)")
        return 2, f"the training data holds {what}"
    if setting:
        return 3, "set in the config" if requested == 3 else setting
    spacing = np.median(np.stack(geometry["spacing"].tolist()), axis=0)
    shape = np.median(np.stack(geometry["shape"].tolist()), axis=0)
    coarse, ratio = int(np.argmax(spacing)), float(spacing.max() / spacing.min())
    median = f"median spacing {spacing.round(4).tolist()}, median shape {shape.astype(int).tolist()}"
    if ratio > ANISOTROPY_RATIO and shape[coarse] < FEW_SLICES:
        return 2, (f"volumes too anisotropic for 3D ({median}: spacing ratio {ratio:.1f} > {ANISOTROPY_RATIO:g} "
                   f"and {shape[coarse]:g} < {FEW_SLICES} voxels along the coarse axis)")
    return 3, (f"NIfTI volumes, not extremely anisotropic ({median}: spacing ratio {ratio:.1f}; 2D only above "
               f"{ANISOTROPY_RATIO:g} with under {FEW_SLICES} voxels along the coarse axis)")


def volume_units(manifest: pd.DataFrame, ids: list[str], split_name: str) -> dict[str, list[str]]:
    """{volume: its case ids in slice order} of the volumes among `ids`, sorted by name. ValueError when a volume
    has slices both in and out of `ids` (a split grouped by another column than the volume)."""
    chosen = manifest[manifest["id"].isin(ids)]
    units = {}
    for name, slices in chosen.groupby("volume"):
        every = manifest[manifest["volume"] == name]
        if len(every) != len(slices):
            raise ValueError(f"volume {name}: {len(slices)} of its {len(every)} slices are in the {split_name} cases; "
                             f"3D training (train.dims) needs whole volumes: keep split.group_by unset (the volume)")
        units[name] = slices.sort_values("slice")["id"].tolist()
    return units


def load_volume_cases(preprocessed: pd.DataFrame, geometry: pd.DataFrame, units: dict[str, list[str]],
                      target_spacing=None, weights: bool = False) -> list[tuple[np.ndarray, ...]]:
    """Each volume's stored slice cases stacked (`units`: see `volume_units`): image (C, S, H, W) float16 and labels
    (S, H, W) uint8, with `weights` also the slices' loss weights (S, H, W) float16 when they are stored
    (`unetflow.instances.weight_map`); resampled along the slice axis to `target_spacing`'s entry for it (X, Y, Z; None: as
    stored) from the volume's spacing in `geometry` (`volume_geometry`): the image by cubic spline, the labels by
    largest share (no new values), the weights by nearest neighbour."""
    table = geometry.set_index("volume")
    volumes = []
    for name, ids in units.items():
        images, labels, *maps = zip(*load_cases(preprocessed, ids, weights))
        image, labels, maps = np.stack(images, axis=1), np.stack(labels), [np.stack(slices) for slices in maps]
        slices = slices_on_target(table.loc[name], target_spacing)
        if slices != len(ids):
            shape = (slices, *labels.shape[1:])
            image, labels = resample_image(image, shape).astype(CASE_IMAGE_DTYPE), resample_labels(labels, shape)
            maps = [resample_nearest(weight_map, shape) for weight_map in maps]
        volumes.append((image, labels, *maps))
    return volumes


def slices_on_target(volume: pd.Series, target_spacing) -> int:
    """How many slices a volume (a row of `volume_geometry`) has on `target_spacing` (X, Y, Z) along its slice axis;
    its own count when `target_spacing` is None."""
    if target_spacing is None:
        return volume["shape"][0]
    target = target_spacing[int(volume["slice_axis"])]
    return resampled_shape(volume["shape"][:1], volume["spacing"][:1], (target,))[0]


def median_spacing(geometry: pd.DataFrame, units: dict[str, list[str]],
                   volumes: list[tuple[np.ndarray, ...]]) -> list[float]:
    """The median voxel spacing (slice axis first) of the training `volumes` (the arrays of `units`): the one in
    `geometry` (`volume_geometry`), scaled by how preprocessing and `load_volume_cases` resampled them (their shape
    against the original)."""
    table = geometry.set_index("volume").loc[list(units)]
    spacing = [np.array(spacing) * np.array(shape) / labels.shape
               for spacing, shape, (_, labels, *_) in zip(table["spacing"], table["shape"], volumes)]
    return [float(s) for s in np.median(np.stack(spacing), axis=0)]


def training_cases(manifest: pd.DataFrame, geometry: pd.DataFrame, preprocessed: pd.DataFrame, train_ids: list[str],
                   val_ids: list[str], dims: int, target_spacing=None):
    """Training and validation cases for a `dims`-D U-Net, and the training volumes' median spacing (None in 2D):
    2D cases as stored or whole volumes (`geometry`: the manifest's `volume_geometry`) resampled along the slice
    axis to `target_spacing` (`load_volume_cases`), training cases with their loss weights when stored."""
    if dims == 2:
        return load_cases(preprocessed, train_ids, weights=True), load_cases(preprocessed, val_ids), None
    train_units = volume_units(manifest, train_ids, "training")
    val_units = volume_units(manifest, val_ids, "validation")
    train = load_volume_cases(preprocessed, geometry, train_units, target_spacing, weights=True)
    spacing = median_spacing(geometry, train_units, train)
    return train, load_volume_cases(preprocessed, geometry, val_units, target_spacing), spacing
