"""Whole-slide prediction with bounded memory: a slide (pyramidal TIFF, SVS, NDPI, MRXS: `unetflow.io.slides`)
segmented region by region at the level whose pixel size is the one the model was trained at, background regions
skipped, the labels written as a pyramidal OME-TIFF (`unetflow.io.slide_labels`) with one summary row per class (area
in mm²).

Each region is a core of about `region` pixels read with a margin on every side and predicted by the package's
sliding window; only its core is kept. Region and margin are whole multiples of every model's tile step and the
margin at least one tile, so the tiles covering a core pixel are exactly those of predicting the whole level at
once: the result equals one-job prediction. Per-image normalisations (zscore, minmax) take their statistics from the
slide's smallest level, once per slide; ct and window need none. Regions whose core holds no tissue (found on the
smallest level as `infer.slide_tissue` says: `unetflow.infer.slide_tissue`; the log says how) are not predicted:
label NOT_PREDICTED (object id 0); nor are regions whose tiles are damaged (a warning names the file and the region's
position; the rest is predicted).

An instance package's objects are found region by region too, each written whole with one id
(`unetflow.infer.slide_objects`: the read box reaches further by the largest object), into a uint32 label pyramid with
an object table; with `geojson`, the labels' polygons are written for QuPath. 2D models only; a model's preprocessing
scale and training resolution are folded into the pixel size wanted (`slide_pixel_size / (scale * resolution)`).

A slide may be predicted in parts, runs of rows of regions (e.g. one job each), and merged, equal to one part
(`unetflow.infer.slide_parts`).
"""

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.data.normalization import EPSILON, normalize_with
from unetflow.data.preprocess import to_channels
from unetflow.infer.package import Package
from unetflow.infer.predictor import Predictor, channel_problem, labels_of, mean_probabilities
from unetflow.infer.slide_objects import (
    OBJECT_DTYPE,
    OBJECT_SIZE,
    SlideObjects,
    no_objects,
    object_margin,
    slide_outputs,
)
from unetflow.infer.slide_parts import band_rows, joined_parts, objects_file, part_rows
from unetflow.infer.slide_tissue import has_tissue, tissue_mask
from unetflow.io.formats import ImageReadError, case_stem
from unetflow.io.labels import trained_classes
from unetflow.io.slide_backends import DamagedRegionError
from unetflow.io.slide_labels import write_label_pyramid
from unetflow.io.slides import Level, Slide, block_mean, choose_level
from unetflow.io.store import IMAGE_DTYPE

log = logging.getLogger("unetflow.infer.slide")
PIXEL_SIZE_KEY = "infer.slide_pixel_size (--slide-pixel-size on the command line)"
SLIDES_FILE = "slides.parquet"  # the summary of the slides, one row each, beside their label pyramids
REGION = 2048  # core size of a region in network pixels (rounded up to the tile steps)
NOT_PREDICTED = 255  # the class label of what is not predicted: glass, damaged tiles (indices are smaller)
PROGRESS_SECONDS = 30  # a slide being predicted logs its progress at most this often


class SlideError(ValueError):
    """A package or slide cannot be predicted slide-wise; the message names the file and what to do."""


def slide_problems(package: Package) -> list[str]:
    """What keeps a package from segmenting slides: 3D models, whole-image postprocessing, models trained at
    different resolutions."""
    problems = []
    if package.has_3d_model:
        problems.append("it holds 3D models; slides are segmented by 2D models only")
    if package.predict["largest_component"]:
        problems.append("predict.largest_component is a whole-image step, not done region by region; retrain or "
                        "package without it")
    if len(set(package.resolutions)) > 1:
        problems.append("its models were trained at different resolutions; package models of one resolution")
    return [f"{package.path}: {problem}" for problem in problems]


def tile_steps(predictor: Predictor) -> tuple[int, int]:
    """The step all regions are aligned to (the least common multiple of every model's tile step on both axes) and
    the margin (the smallest multiple of it that is at least every tile)."""
    overlap = predictor.package.predict["overlap"]
    patches = [size for patch in predictor.package.patches for size in patch]
    step = math.lcm(*(max(1, round(size * (1 - overlap))) for size in patches))
    return step, step * math.ceil(max(patches) / step)


def regions(shape: tuple[int, int], core: int, margin: int, rows: tuple[int, int] | None = None):
    """(core, read) boxes (top, left, bottom, right) covering a level of `shape` (its `rows` [top, bottom), a
    multiple of `core` apart; default all), each read box the core plus `margin` on every side, clipped to the
    level."""
    first, last = rows or (0, shape[0])
    for top in range(first, last, core):
        for left in range(0, shape[1], core):
            box = (top, left, min(top + core, shape[0]), min(left + core, shape[1]))
            yield box, (max(0, box[0] - margin), max(0, box[1] - margin), min(shape[0], box[2] + margin),
                        min(shape[1], box[3] + margin))


def slide_normalizer(settings: dict, overview: np.ndarray):
    """A function normalising regions (C, H, W) float32 as the package does, the statistics of per-image schemes
    taken from `overview` (the smallest level, C, H, W)."""
    if settings["normalization"] not in ("zscore", "minmax"):
        return lambda region: normalize_with(region, settings)
    values = overview.reshape(len(overview), -1).astype(np.float32)
    low, high = np.full(len(values), -np.inf), np.full(len(values), np.inf)
    if settings["clip_percentiles"] is not None:
        low, high = np.percentile(values, settings["clip_percentiles"], axis=1)
        values = np.clip(values, low[:, None], high[:, None])
    if settings["normalization"] == "zscore":
        offset, scale = values.mean(axis=1), np.maximum(values.std(axis=1), EPSILON)
    else:
        offset, scale = values.min(axis=1), np.maximum(values.max(axis=1) - values.min(axis=1), EPSILON)
    shape = (-1, 1, 1)
    return lambda region: ((np.clip(region, low.reshape(shape), high.reshape(shape)) - offset.reshape(shape))
                           / scale.reshape(shape)).astype(np.float32)


def wanted_pixel_size(package: Package, pixel_size: float | None) -> float | None:
    """The pixel size (µm) the network saw in training: the training images' `pixel_size` (default: that of the
    package's training slides) over the preprocessing scale and the models' resolution."""
    pixel_size = package.slide_pixel_size if pixel_size is None else pixel_size
    return None if pixel_size is None else pixel_size / (package.preprocess["scale"] * package.resolutions[0])


@dataclass
class SlideLevel:
    """What every part of a slide's prediction shares: the level and factor predicted at, the label grid's shape,
    the normalisation and the tissue mask."""
    level: Level
    factor: int
    shape: tuple[int, int]
    normalize: Callable
    tissue: np.ndarray

    @property
    def pixel_size(self) -> float:
        return self.level.pixel_size * self.factor


class SlidePredictor:
    """A `Predictor` applied to one slide region by region (see the module docstring); a slide may be predicted in
    parts (runs of rows of regions, e.g. by separate jobs) and merged: equal to one part."""

    def __init__(self, predictor: Predictor, region: int = REGION, object_size: int = OBJECT_SIZE,
                 geojson: bool = True, tissue: str = "auto"):
        problems = slide_problems(predictor.package)
        if problems:
            raise SlideError("the package cannot segment slides:\n  - " + "\n  - ".join(problems))
        self.predictor, self.geojson, self.tissue = predictor, geojson, tissue
        self.step, self.margin = tile_steps(predictor)
        self.core = self.step * math.ceil(region / self.step)
        self.reach = object_margin(self.step, object_size) if predictor.package.instance_target else 0
        self.margin += self.reach
        self.overhang = self.margin if self.reach else 0  # the rows below its regions a part's objects may reach

    def open_level(self, slide: Slide, pixel_size: float | None) -> SlideLevel:
        """The level a slide is predicted at for the training images' `pixel_size`, with its normalisation and
        tissue mask (from the smallest level by the `tissue` rule; logged with how and its share of the slide)."""
        level, factor = choose_level(slide, wanted_pixel_size(self.predictor.package, pixel_size), PIXEL_SIZE_KEY)
        overview = slide.overview()
        tissue, how = tissue_mask(overview, self.tissue, str(slide.path))
        log.info("%s: tissue %.0f %% of the slide, %s", slide.path, 100 * tissue.mean(), how)
        return SlideLevel(level, factor, tuple(math.ceil(side / factor) for side in level.shape),
                          slide_normalizer(self.predictor.package.preprocess, overview), tissue)

    def predict(self, path, out_path, pixel_size: float | None) -> dict:
        """Segment the slide at `path` into the label pyramid `out_path` in one part; its summary (`merge`)."""
        with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as scratch:
            part = self.predict_part(path, Path(scratch, "part0.npy"), pixel_size)
            return self.merge(path, [part], out_path, pixel_size)

    def predict_part(self, path, part_path, pixel_size: float | None, part: int = 0, parts: int = 1) -> Path:
        """Part `part` of `parts` of a slide written to `part_path` (.npy): the labels of the rows of its regions
        (`part_rows`; of an instance package also the rows below that its objects reach: `band_rows`) and the
        objects it found (`objects_file`)."""
        with Slide(path) as slide:
            grid = self.open_level(slide, pixel_size)
            rows = part_rows(grid.shape[0], self.core, part, parts)
            band_top, band_bottom = band_rows(rows, grid.shape[0], self.overhang)
            band = np.lib.format.open_memmap(part_path, "w+", self.dtype, (band_bottom - band_top, grid.shape[1]))
            band[:] = 0 if self.predictor.package.instance_target else NOT_PREDICTED  # ids: 0, no object
            objects = self.slide_objects(band, band_top)
            predicted, count = self.fill_labels(slide, grid, band, rows, objects)
            band.flush()
        np.save(objects_file(part_path), objects.found_rows() if objects is not None else no_objects())
        log.info("%s: part %d of %d, rows %d-%d of level %d (x%d): %d of %d regions predicted", path, part + 1, parts,
                 *rows, grid.level.index, grid.factor, predicted, count)
        return Path(part_path)

    def merge(self, path, part_paths, out_path, pixel_size: float | None) -> dict:
        """The parts of a slide (in order) written as one label pyramid `out_path` (with its objects and polygons,
        `slide_outputs`); the slide's summary (see `slide_summary`)."""
        with Slide(path) as slide:
            grid = self.open_level(slide, pixel_size)
        package = self.predictor.package
        bands = [band_rows(part_rows(grid.shape[0], self.core, part, len(part_paths)), grid.shape[0],
                           self.overhang) for part in range(len(part_paths))]
        with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as scratch:
            labels, found = joined_parts(part_paths, bands, grid.shape, self.dtype, Path(scratch, "labels.npy"))
            write_label_pyramid(out_path, labels, grid.pixel_size)
            objects = found if package.instance_target else None
            summary = slide_summary(labels, grid.tissue, grid.pixel_size, None if package.instance_target else
                                    package.classes)
            summary.update(slide_outputs(out_path, labels, grid.level.downsample * grid.factor, grid.pixel_size,
                                         package.classes, objects, summary["tissue_mm2"], self.geojson))
            del labels  # the memory map closed before its folder goes
        return dict(summary, image_path=str(path), mask_path=str(out_path), level=grid.level.index,
                    factor=grid.factor)

    @property
    def dtype(self):
        """The labels' type: object ids of an instance package, else class indices."""
        return OBJECT_DTYPE if self.predictor.package.instance_target else np.uint8

    def slide_objects(self, band: np.ndarray, top: int) -> SlideObjects | None:
        """The collector of a slide's objects into `band` (the id map's rows from `top`) of an instance package,
        else None."""
        package = self.predictor.package
        if not package.instance_target:
            return None
        return SlideObjects(band, package.instance_target, package.predict["min_object_size"], self.reach, top,
                            package.object_probability)

    def fill_labels(self, slide: Slide, grid: SlideLevel, band: np.ndarray, rows: tuple[int, int],
                    objects: SlideObjects | None) -> tuple[int, int]:
        """Predict every region with tissue of `rows` of the label grid into `band` (its rows from `rows[0]`; with
        `objects`, the objects each read box owns), logging the progress every PROGRESS_SECONDS; (predicted, all)
        regions."""
        boxes = list(regions(grid.shape, self.core, self.margin, rows))
        todo = [(core, read) for core, read in boxes if has_tissue(grid.tissue, core, grid.shape)]
        predicted, started = 0, time.perf_counter()
        said = started
        for done, (core, read) in enumerate(todo, start=1):
            predicted += self.predict_region(slide, grid, band, rows[0], core, read, objects)
            if time.perf_counter() - said >= PROGRESS_SECONDS and done < len(todo):
                said = time.perf_counter()
                log.info("%s: %d of %d regions with tissue predicted in %.0f s, about %.0f s to go", slide.path, done,
                         len(todo), said - started, (said - started) / done * (len(todo) - done))
        return predicted, len(boxes)

    def predict_region(self, slide: Slide, grid: SlideLevel, band: np.ndarray, top: int, core, read,
                       objects: SlideObjects | None) -> bool:
        """Predict one region (its `core` box kept of the `read` box) into `band` (rows from `top`) or `objects`;
        False, with a warning, when its tiles are damaged."""
        factor = grid.factor
        try:
            pixels = slide.read_region(grid.level.index, read[0] * factor, read[1] * factor,
                                       (read[2] - read[0]) * factor, (read[3] - read[1]) * factor)
        except DamagedRegionError as error:
            log.warning("rows %d-%d, columns %d-%d of level %d (x%d) left unpredicted (%s): %s",
                        read[0] * factor, read[2] * factor, read[1] * factor, read[3] * factor,
                        grid.level.index, factor, "no object" if objects is not None else f"label {NOT_PREDICTED}",
                        error)
            return False
        region = block_mean(pixels.astype(np.float32), factor)
        network = grid.normalize(to_channels(region, self.predictor.package.input_channels))
        probs = self.region_probabilities(network)
        if objects is not None:
            objects.add(core, read, probs)
        else:
            found = labels_of(probs, self.predictor.package.regions)
            band[core[0] - top:core[2] - top, core[1]:core[3]] = found[core[0] - read[0]:core[2] - read[0],
                                                                       core[1] - read[1]:core[3] - read[1]]
        return True

    def region_probabilities(self, network: np.ndarray) -> np.ndarray:
        """The mean softmax (K, H, W) (or region sigmoid) of a normalised region (C, H, W), predicted as
        `Predictor.probabilities` does (the models' resolution already folded into the level)."""
        predictor = self.predictor
        probs = mean_probabilities(predictor.models, predictor.package.patches, network[:, None].astype(IMAGE_DTYPE),
                                   predictor.package.predict, predictor.device,
                                   sigmoid=predictor.package.regions is not None)
        return probs[:, 0].numpy()


def slide_summary(labels: np.ndarray, tissue: np.ndarray, pixel_size: float, classes: pd.DataFrame | None,
                  band: int = 1024) -> dict:
    """One slide's summary: the pixel size (µm) of the labels, the tissue area (mm², from the tissue mask) and (with
    `classes`) pixels and area (mm²) per trained class (`pixels_<name>`, `area_mm2_<name>`) within the tissue mask
    (a region with tissue is predicted whole, its glass too, by a model that may never have seen glass), `labels`
    counted band by band."""
    mm2 = (pixel_size / 1000) ** 2
    row = dict(pixel_size_um=pixel_size, height=labels.shape[0], width=labels.shape[1],
               tissue_mm2=float(tissue.mean()) * labels.size * mm2)
    if classes is None:
        return row
    counts = np.zeros(256, np.int64)
    columns = np.arange(labels.shape[1]) * tissue.shape[1] // labels.shape[1]
    for top in range(0, labels.shape[0], band):
        rows = np.arange(top, min(top + band, labels.shape[0])) * tissue.shape[0] // labels.shape[0]
        inside = tissue[np.ix_(rows, columns)]  # the tissue mask's pixel of each label pixel
        counts += np.bincount(np.asarray(labels[top:top + band])[inside], minlength=256)
    for entry in trained_classes(classes).to_dict("records"):
        pixels = int(counts[entry["index"]])
        row.update({f"pixels_{entry['name']}": pixels, f"area_mm2_{entry['name']}": pixels * mm2})
    return row


def slide_row(path, name: str, package: Package, pixel_size: float | None) -> tuple[dict | None, list[str]]:
    """A slide checked without decoding it: its row (id = output `name`, kind `slide`, the level and factor it is
    predicted at, that grid's height and width, channels) and its problems (unreadable, no level of the wanted pixel
    size, channels the package was not trained on)."""
    try:
        with Slide(path) as slide:
            level, factor = choose_level(slide, wanted_pixel_size(package, pixel_size), PIXEL_SIZE_KEY)
            row = dict(id=name, image_path=str(path), kind="slide", slices=1, slice_axis=0, level=level.index,
                       factor=factor, height=math.ceil(level.shape[0] / factor),
                       width=math.ceil(level.shape[1] / factor), channels=slide.channels, dtype="uint8")
    except ImageReadError as error:
        return None, [str(error)]
    channels = channel_problem(row["channels"], package)
    return row, [f"{path}: {channels}"] if channels else []


def predict_slides(predictor: Predictor, paths, out_dir, pixel_size: float | None, region: int = REGION,
                   names=None, object_size: int = OBJECT_SIZE, geojson: bool = True,
                   tissue: str = "auto") -> pd.DataFrame:
    """Segment each slide into out_dir/<name>.ome.tif (`names`: default, each file's stem; a name may hold
    sub-folders; beside it its objects and polygons, see `unetflow.infer.slide_objects`); one summary row per slide.
    SlideError listing every slide's problem before any is predicted."""
    if not len(paths):
        return pd.DataFrame()
    slides, rows = SlidePredictor(predictor, region, object_size, geojson, tissue), []
    problems = [problem for path in paths for problem in slide_row(path, "", predictor.package, pixel_size)[1]]
    if problems:
        raise SlideError(f"{len(problems)} slide(s) cannot be segmented:\n  - " + "\n  - ".join(problems))
    for path, name in zip(paths, names or [case_stem(path) for path in paths]):
        out_path = Path(out_dir, f"{name}.ome.tif")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        rows.append(dict(id=name, **slides.predict(path, out_path, pixel_size)))
    return pd.DataFrame(rows)
