"""The data-set fingerprint: what the training cases (train and val of the split, never test) look like, per source
(shape, voxel spacing, intensities, foreground intensity statistics, class voxel counts, object sizes, how fine each
class of a 2D source is), and the
data-set values preprocessing and prediction need: the target spacing, the CT statistics, the automatic normalisation
scheme, the scale of 2D images and the instance mode's smallest object, each with its reason.

Foreground intensities are a seeded sample of at most SAMPLED_VOXELS voxels per source (as nnU-Net), pooled for the
data-set statistics, so a data set of any size is summarised in bounded memory and the same data give the same
numbers.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import ndimage

from unetflow.data.preprocess import source_targets
from unetflow.io.labels import IGNORE_INDEX, class_values
from unetflow.io.nifti import volume_grid, volume_spacing
from unetflow.io.sources import read_source_image, units
from unetflow.plan.resolution import SLIDES_KEEP_SIZE

SAMPLED_VOXELS = 10_000  # foreground voxels sampled per source for the intensity statistics
CT_PERCENTILES = (0.5, 99.5)  # nnU-Net's clipping range of CT intensities
AIR_HU = -900  # a CT volume holds air (about -1000 HU) or padding below it
ZERO_BACKGROUND = 0.25  # volumes whose median share of voxels zero in every channel reaches this: skull-stripped MR
ANISOTROPY = 3  # nnU-Net: a median spacing over 3 times another's makes its axis the coarse one
COARSE_PERCENTILE = 10  # the coarse axis then takes this percentile of its spacings
WIDE_OBJECT = 128  # px: 2D objects wider than this (half a CPU patch side) are scaled down to it
SMALLEST_SIDE = 64  # px: scaling never takes the median image's shorter side below this
SLIDE_WINDOW = [0, 255]  # the automatic normalisation of regions of whole-slide images (8-bit RGB)
SMALL_OBJECT_PERCENTILE = 1  # the instance mode's smallest object: this percentile of the training objects' areas


def training_rows(manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """The manifest rows of every source some fold trains or validates on: all but the test split."""
    return manifest[manifest["id"].isin(splits.loc[splits["split"] != "test", "id"])]


def source_fingerprint(row: dict, classes: pd.DataFrame,
                       seed: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """One source's fingerprint row, its sample of foreground intensities (all channels pooled), the in-plane
    diameters of its objects (`plane_diameters`) and in the instance mode the areas of its objects (`object_areas`)."""
    pixels = np.moveaxis(read_source_image(row), 0, -1)  # (Z, Y, X, C)
    labels, ids, _ = source_targets(row, classes)
    foreground = (labels > 0) & (labels != IGNORE_INDEX)
    values = pixels[foreground].ravel().astype(np.float64)
    sample = np.random.default_rng(seed).choice(values, min(SAMPLED_VOXELS, values.size), replace=False)
    volume = row["kind"] == "volume"
    stats = intensity_statistics(sample)
    fields = dict(source=str(row["id"]), image_path=str(row["image_path"]), kind=row["kind"], cases=len(units(row)),
                  shape=list(volume_grid(row["image_path"])[0] if volume else labels.shape[int(len(labels) == 1):]),
                  spacing=list(volume_spacing(row["image_path"])) if volume else None,
                  channels=int(pixels.shape[-1]), dtype=str(pixels.dtype),
                  integer_valued=bool(np.array_equal(pixels, np.round(pixels))),
                  intensity_min=float(pixels.min()), intensity_max=float(pixels.max()),
                  zero_share=float(np.mean(np.all(pixels == 0, axis=-1))),
                  foreground_voxels=int(foreground.sum()), sampled_voxels=int(sample.size),
                  **{f"foreground_{key}": value for key, value in stats.items()},
                  class_voxels=class_voxels(labels, len(class_values(classes))),
                  class_boundary_distance=None if volume else boundary_distances(labels, len(class_values(classes))),
                  **object_sizes(labels if volume else list(labels), not volume))
    return fields, sample, plane_diameters(labels), np.zeros(0) if ids is None else object_areas(ids)


def intensity_statistics(sample: np.ndarray) -> dict:
    """Mean, standard deviation and the CT_PERCENTILES of an intensity sample (NaN for an empty one)."""
    if sample.size == 0:
        return dict(mean=np.nan, std=np.nan, low=np.nan, high=np.nan)
    low, high = np.percentile(sample, CT_PERCENTILES)
    return dict(mean=float(sample.mean()), std=float(sample.std()), low=float(low), high=float(high))


def class_voxels(labels: np.ndarray, num_classes: int) -> list[int]:
    """Voxels of each class index of a source (ignored voxels left out)."""
    counts = np.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=num_classes)[:num_classes]
    return [int(count) for count in counts]


def boundary_distances(labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Per class index, the median distance (px) of its pixels to the nearest pixel of another class, over the
    slices of a 2D source's labels (Z, Y, X); None for a class it lacks. How fine a class is: about 1.5 for 4 px
    membranes, 0.29 times the radius for discs."""
    distances = [[] for _ in range(num_classes)]
    for plane in labels:
        for index in np.unique(plane):
            if index < num_classes:
                inside = plane == index
                distances[index].append(ndimage.distance_transform_edt(inside)[inside])
    return [float(np.median(np.concatenate(found))) if found else None for found in distances]


def finest_boundary_distance(table: pd.DataFrame) -> float | None:
    """The finest class of the 2D training sources: the least, over classes, of the median over sources of a class's
    `boundary_distances`; None without 2D sources."""
    rows = table["class_boundary_distance"].dropna().tolist() if "class_boundary_distance" in table else []
    if not rows:
        return None
    per_class = pd.DataFrame(rows, dtype=float).median(axis=0, skipna=True).dropna()
    return round(float(per_class.min()), 2) if len(per_class) else None


def components(array: np.ndarray):
    """(value, face-connected components, count) of each foreground class value in a label array."""
    for value in np.unique(array):
        if value not in (0, IGNORE_INDEX):
            yield (value, *ndimage.label(array == value))


def plane_diameters(labels: np.ndarray) -> np.ndarray:
    """The equivalent diameters (of the disc of the same area, in pixels) of the objects of each slice of a source's
    labels (Z, Y, X): the face-connected components of each foreground class in a 2D slice, what a 2D patch sees."""
    sizes = [np.bincount(found.ravel())[1:] for plane in labels for _, found, _ in components(plane)]
    return 2 * np.sqrt(np.concatenate(sizes) / np.pi) if sizes else np.zeros(0)


def object_areas(ids: np.ndarray) -> np.ndarray:
    """The pixel count of each object of each slice of an instance source's object ids (Z, Y, X): the objects the
    instance mode finds and scores, slice by slice."""
    counts = [np.bincount(plane.ravel())[1:] for plane in ids]
    return np.concatenate([found[found > 0] for found in counts])


def smallest_object(areas: np.ndarray) -> tuple[int, str]:
    """What `predict.min_object_size: auto` stands for, and why: the SMALL_OBJECT_PERCENTILE-th percentile of the
    training objects' areas (what the annotators drew no smaller), but at most half their median area (an object
    predicted under half the size of another cannot reach IoU 0.5 with it, so objects of one size that come out a
    little small are kept); 0 (keep all) without objects."""
    if areas.size == 0:
        return 0, "no instance masks among the training cases (or no objects in them): every predicted object kept"
    small, median = float(np.percentile(areas, SMALL_OBJECT_PERCENTILE)), float(np.median(areas))
    size = int(max(1, np.floor(min(small, median / 2))))
    bound = "their percentile" if small <= median / 2 else "half their median"
    return size, (f"the training objects' areas: {small:g} px at percentile {SMALL_OBJECT_PERCENTILE}, median "
                  f"{median:g} px; predicted objects under {size} px ({bound}) are dropped as specks")


def object_sizes(arrays, planar: bool) -> dict:
    """The count and the median and 90th-percentile voxel count of a source's objects: the face-connected
    components of each foreground class of each of its `arrays` (a volume as one 3D array; the slices of a 2D file
    or stack each); for `planar` sources also the 90th percentile of their widths (the diameter of each object's
    largest inscribed disc, so a thin network such as membranes counts as thin however far it reaches)."""
    sizes, widths = [], []
    for array in arrays if planar else [arrays]:
        for _, found, count in components(array):
            sizes.append(np.bincount(found.ravel())[1:])
            if planar:
                inside = ndimage.distance_transform_edt(found > 0)
                widths.append(2 * ndimage.maximum(inside, found, np.arange(1, count + 1)))
    sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    widths = np.concatenate(widths) if widths else np.zeros(0)
    return dict(objects=int(sizes.size), object_voxels_median=float(np.median(sizes)) if sizes.size else np.nan,
                object_voxels_p90=float(np.percentile(sizes, 90)) if sizes.size else np.nan,
                object_width_p90=float(np.percentile(widths, 90)) if widths.size else np.nan)


def planned_scale(table: pd.DataFrame) -> tuple[float, str]:
    """The factor 2D images are resized by, and why: 1, unless the typical large object (the median over images of
    their 90th-percentile object width) is wider than WIDE_OBJECT px; then the factor that brings it to WIDE_OBJECT
    (a patch then holds a whole object with its surroundings, not only its texture), rounded down to 0.01 and never
    taking the median image's shorter side under SMALLEST_SIDE px. Volumes are resampled by spacing instead."""
    flat = table[table["kind"] != "volume"]
    widths = flat["object_width_p90"].dropna() if "object_width_p90" in flat else pd.Series(dtype=float)
    if widths.empty:
        return 1.0, "no 2D images with objects among the training cases"
    width = float(widths.median())
    if width <= WIDE_OBJECT:
        return 1.0, f"objects up to {width:.0f} px wide (90th percentile, median over images) fit a patch"
    shorter = float(np.median([min(shape[-2:]) for shape in flat["shape"]]))
    scale = max(np.floor(WIDE_OBJECT / width * 100) / 100, min(1.0, SMALLEST_SIDE / shorter))
    return float(scale), (f"objects up to {width:.0f} px wide (90th percentile, median over images), over "
                          f"{WIDE_OBJECT} px: images scaled by {scale:g} so a patch holds whole objects")


def millimetres(values) -> list[float]:
    """Voxel sizes as plain floats to 6 significant digits (headers store float32)."""
    return [float(f"{value:.6g}") for value in values]


def target_spacing(spacings: np.ndarray) -> tuple[list[float] | None, str]:
    """The spacing volumes are resampled to, and why: the median of the training volumes' spacings; when one axis's
    median is over ANISOTROPY times another's, that coarse axis takes the COARSE_PERCENTILE-th percentile of its
    spacings instead, but not less than the other axes' (nnU-Net's rule for anisotropic data)."""
    if len(spacings) == 0:
        return None, "no NIfTI volumes among the training cases: 2D images are not resampled"
    median = np.median(spacings, axis=0)
    coarse = int(np.argmax(median))
    if median[coarse] <= ANISOTROPY * median.min():
        return millimetres(median), f"the median spacing of the {len(spacings)} training volume(s)" + \
            thick_axes_note(spacings)
    others = max(size for axis, size in enumerate(median) if axis != coarse)
    target = median.copy()
    target[coarse] = max(float(np.percentile(spacings[:, coarse], COARSE_PERCENTILE)), others)
    return millimetres(target), (
        f"the median spacing of the {len(spacings)} training volume(s), anisotropic (axis {coarse}: "
        f"{median[coarse]:.3g} vs {median.min():.3g}, over {ANISOTROPY}x): axis {coarse} takes the "
        f"{COARSE_PERCENTILE}th percentile of its spacings{thick_axes_note(spacings)}")


def thick_axes_note(spacings: np.ndarray) -> str:
    """For anisotropic volumes (one axis over ANISOTROPY times another) that disagree on which axis is the thick one
    (axial and coronal acquisitions stored as they are): how many have each, which makes their median nearly isotropic
    and upsamples every thick axis; else ''."""
    thick = spacings.max(axis=1) > ANISOTROPY * spacings.min(axis=1)
    axes = np.bincount(np.argmax(spacings[thick], axis=1), minlength=3) if thick.any() else np.zeros(3, int)
    if np.count_nonzero(axes) < 2:
        return ""
    counts = ", ".join(f"axis {axis} in {count}" for axis, count in enumerate(axes) if count)
    return (f"; but the anisotropic volumes disagree on their thick axis ({counts}: acquired in different planes?), "
            f"so every thick axis is resampled to the fine spacing, which is slow; set preprocess.spacing, or train "
            f"each plane's volumes as a data set of its own")


def slide_normalization(table: pd.DataFrame, ct: dict | None) -> tuple[str, str]:
    """The automatic normalisation of regions of whole-slide images, one for the whole data set, so that a slide
    segmented region by region is normalised as its training regions were (a per-image z-score would differ between
    a region and the whole slide): 8-bit slides the fixed window SLIDE_WINDOW; others (16-bit fluorescence) the
    clipped foreground statistics of the training regions, as `ct` (the 8-bit window would saturate them)."""
    dtypes = sorted(set(table["dtype"]))
    if dtypes == ["uint8"] or ct is None:
        return "window", (f"regions of whole-slide images ({', '.join(dtypes) or 'uint8'}): the fixed window "
                          f"{SLIDE_WINDOW}, one normalisation for every region and slide")
    return "ct", (f"regions of whole-slide images of {', '.join(dtypes)} pixels: clipped to the training foreground's "
                  f"{CT_PERCENTILES} percentiles ({ct['low']:g}, {ct['high']:g}) and z-scored with its mean and std, "
                  f"one normalisation for every region and slide (the 8-bit window {SLIDE_WINDOW} would saturate them)")


def automatic_normalization(table: pd.DataFrame, ct: dict | None, slides: bool = False) -> tuple[str, str]:
    """The scheme `preprocess.normalization: auto` stands for, and why: for regions of whole-slide images (`slides`)
    `slide_normalization`; for 2D images the per-image z-score; for NIfTI volumes `ct` when every
    training volume looks like CT (whole-number intensities reaching AIR_HU or below: air) and has foreground, else
    the per-volume z-score (a heuristic; set the scheme to override it); volumes of several channels per channel;
    volumes with a background of zeros (ZERO_BACKGROUND, not CT) `zscore_nonzero`."""
    if slides:
        return slide_normalization(table, ct)
    volumes = table[table["kind"] == "volume"]
    if volumes.empty:
        return "zscore", "2D images: each image z-scored on its own"
    zeros = float(volumes["zero_share"].median()) if "zero_share" in volumes else 0.0
    if zeros >= ZERO_BACKGROUND and not (volumes["intensity_min"] <= AIR_HU).all():
        return "zscore_nonzero", (f"volumes with a background of zeros (a median {zeros:.0%} of their voxels zero in "
                                  f"every channel: skull-stripped or padded): each channel of each volume z-scored "
                                  f"with the statistics of its non-zero voxels, the zeros kept 0 (nnU-Net's "
                                  f"use_mask_for_norm), so that how much empty space a file holds does not matter")
    if (volumes["channels"] > 1).any():
        return "zscore", ("volumes of several channels (modalities, the 4th axis): each channel of each volume "
                          "z-scored on its own (the CT scheme is for a single CT channel)")
    air = volumes["integer_valued"].astype(bool) & (volumes["intensity_min"] <= AIR_HU)
    ct_like = bool(air.all())
    if ct_like and ct is not None:
        return "ct", (f"the training volumes look like CT (whole numbers down to {volumes['intensity_min'].min():g}, "
                      f"at most {AIR_HU} in each): clipped to the foreground's {CT_PERCENTILES} percentiles, "
                      f"z-scored with its mean and std")
    if ct_like:
        return "zscore", "CT-like volumes, but no foreground voxels to take CT statistics from: each volume z-scored"
    if air.any():
        return "zscore", (f"{int(air.sum())} of {len(volumes)} training volumes look like CT (whole-number "
                          f"intensities down to air, at most {AIR_HU}), but not {not_ct(volumes[~air])}: each "
                          f"volume z-scored on its own; if all are CT, set preprocess.normalization: ct")
    return "zscore", ("volumes that do not look like CT (whole-number intensities down to air, at most "
                      f"{AIR_HU}, in every training volume): each volume z-scored on its own")


def not_ct(volumes: pd.DataFrame, limit: int = 5) -> str:
    """The training volumes that do not look like CT, each with why ('ct12 (minimum 0)'), the first few."""
    named = [f"{row['source']} ({'minimum ' if row['integer_valued'] else 'not whole numbers, minimum '}"
             f"{row['intensity_min']:g})" for row in volumes.head(limit).to_dict("records")]
    return ", ".join(named) + (f" and {len(volumes) - limit} more" if len(volumes) > limit else "")


def fingerprint_data(manifest: pd.DataFrame, classes: pd.DataFrame, splits: pd.DataFrame, seed: int = 0,
                     threads: int = 1) -> tuple[pd.DataFrame, dict]:
    """The per-source fingerprint table of the training cases (train and val of the split) and the data-set values
    (target spacing, CT statistics, automatic normalisation, scale of 2D images, the instance mode's smallest
    object, each with its reason)."""
    sources = training_rows(manifest, splits).sort_values("image_path").to_dict("records")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda item: source_fingerprint(item[1], classes, seed + item[0]),
                                enumerate(sources)))
    table = pd.DataFrame([result[0] for result in results])
    pooled, diameters, areas = (np.concatenate([result[part] for result in results]) if results else np.zeros(0)
                                for part in (1, 2, 3))
    ct = intensity_statistics(pooled) if pooled.size else None
    volumes = table[table["kind"] == "volume"]
    spacings = np.array(volumes["spacing"].tolist()).reshape(-1, 3)
    spacing, spacing_reason = target_spacing(spacings)
    slides = "slide_level" in manifest.columns and bool(manifest["slide_level"].notna().any())
    scheme, scheme_reason = automatic_normalization(table, ct, slides)
    scale, scale_reason = (1.0, SLIDES_KEEP_SIZE) if slides else planned_scale(table)
    min_object_size, min_object_size_reason = smallest_object(areas)
    summary = dict(sources=len(table), cases=int(table["cases"].sum()), volumes=len(volumes),
                   median_spacing=None if volumes.empty else millimetres(np.median(spacings, axis=0)),
                   target_spacing=spacing, target_spacing_reason=spacing_reason, normalization=scheme,
                   normalization_reason=scheme_reason, window=SLIDE_WINDOW if scheme == "window" else None,
                   scale=scale, scale_reason=scale_reason, slides=slides, ct=ct,
                   foreground_samples=int(pooled.size), boundary_distance=finest_boundary_distance(table),
                   object_diameter_p90=round(float(np.percentile(diameters, 90)), 1) if diameters.size else 0.0,
                   min_object_size=min_object_size, min_object_size_reason=min_object_size_reason)
    return table, summary
