"""Images whose masks are sparse GeoJSON polygon annotations (QuPath), turned into ordinary image/mask pairs at ingest.

A whole-slide image (`unetflow.io.slides`) is never trained whole: its annotated regions are, read at the level of
`data.slide_pixel_size` (`choose_level`, a finer level block-averaged by a whole factor). A region is the bounding
box of the classified annotations with MARGIN pixels of context on every side, boxes that then overlap merged into
one, cut into pieces of at most MAX_SIDE pixels a side (pieces without any annotated pixel dropped). Each piece becomes
a source `<slide stem>_r<k>` of its own, all of one slide in one split group (the slide's stem). A plain image keeps
its whole self. Their masks (`unetflow.io.annotations.rasterise`) hold each polygon's class value from
`data.classes` and the ignore value everywhere else, so unannotated pixels count in neither the loss nor the
evaluation; or, with `data.unannotated` a class (say `background`, where only the objects are annotated), that
class's value. Pieces and masks are written as PNG files into the ingest's `annotated` folder and the pairs point there,
so every later stage reads them as any other image and mask.

A slide whose mask is a label image instead (mask values over the whole slide, at any resolution of its aspect: a
plain image or a pyramid) is cut the same way when `data.slide_pixel_size` is set (else it is trained whole, as any
image): the label image is resampled (nearest neighbour) onto the training grid and the boxes of its labelled pixels
(those not `data.ignore_label`; every pixel without one) become regions.
"""

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from unetflow.io.annotations import annotation_problems, grid_box, rasterise, read_annotations
from unetflow.io.formats import ImageReadError, is_annotation
from unetflow.io.images import image_info, read_mask, write_image, write_mask
from unetflow.io.slides import Level, Slide, block_mean, choose_level, is_slide

log = logging.getLogger("unetflow.data.annotated")
PIXEL_SIZE_KEY = "data.slide_pixel_size"
MARGIN = 64  # pixels of context (ignored in the loss) around every annotated box, at the training level
MAX_SIDE = 2048  # at most this many pixels a side per source


def ignore_value(classes: dict, ignore_label: int | None) -> int:
    """The mask value of unannotated pixels: data.ignore_label, else 255 unless a class has it, else the smallest
    value no class has."""
    if ignore_label is not None:
        return int(ignore_label)
    taken = set(classes.values())
    return 255 if 255 not in taken else next(value for value in range(65536) if value not in taken)


def merged_boxes(boxes: list[tuple[int, int, int, int]], margin: int,
                 shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Boxes (top, left, bottom, right) grown by `margin`, clipped to `shape`, those that overlap merged until none
    does; sorted."""
    grown = [(max(0, t - margin), max(0, left - margin), min(shape[0], b + margin), min(shape[1], r + margin))
             for t, left, b, r in boxes]
    merged = True
    while merged:
        merged, result = False, []
        for box in grown:
            for index, other in enumerate(result):
                if box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]:
                    result[index] = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]),
                                     max(box[3], other[3]))
                    merged = True
                    break
            else:
                result.append(box)
        grown = result
    return sorted(grown)


def pieces(box: tuple[int, int, int, int], side: int = MAX_SIDE) -> list[tuple[int, int, int, int]]:
    """A box cut into a grid of equal pieces of at most `side` pixels a side."""
    top, left, bottom, right = box
    rows, columns = math.ceil((bottom - top) / side), math.ceil((right - left) / side)
    ys = np.linspace(top, bottom, rows + 1).round().astype(int)
    xs = np.linspace(left, right, columns + 1).round().astype(int)
    return [(int(ys[i]), int(xs[j]), int(ys[i + 1]), int(xs[j + 1])) for i in range(rows) for j in range(columns)]


def missing_pixel_size(path) -> str:
    """The problem of a slide to cut into regions without data.slide_pixel_size."""
    return (f"{path}: a slide is trained at the pixel size of {PIXEL_SIZE_KEY}, which is not set; set it (µm per "
            f"pixel to train at, e.g. 1.0)")


def training_grid(slide: Slide, pixel_size: float) -> tuple[Level, int, tuple[int, int]]:
    """The level a slide is trained at for `pixel_size`, the whole factor it is still reduced by (`choose_level`),
    and the shape of that training grid."""
    level, factor = choose_level(slide, pixel_size, PIXEL_SIZE_KEY)
    return level, factor, tuple(math.ceil(side / factor) for side in level.shape)


def region_pair(pair: dict, slide: Slide, level: Level, factor: int, box: tuple[int, int, int, int],
                labels: np.ndarray, number: int, out_dir: Path) -> dict:
    """The pair of region `box` (top, left, bottom, right) of a slide's training grid: its pixels and `labels`
    written into `out_dir` as source `<slide stem>_r<number>` (the slide's split group); its `origin` (manifest
    columns) names the slide, the mask file, the pixel size, level and box."""
    name = f"{pair['stem']}_r{number}"
    return dict(pair, stem=name, group=pair.get("group", pair["stem"]),
                image=write_image(out_dir / f"{name}.png", slide_region(slide, level.index, factor, box)),
                mask=written_mask(out_dir / f"{name}_mask.png", labels),
                origin=dict(source_image=str(slide.path), annotations=str(pair["mask"]),
                            pixel_size_um=level.pixel_size * factor, slide_level=level.index, slide_box=list(box)))


def slide_region(slide: Slide, level: int, factor: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels (H, W, C) of a box on the grid of `level` reduced by `factor`, in the slide's dtype."""
    top, left, bottom, right = box
    pixels = slide.read_region(level, top * factor, left * factor, (bottom - top) * factor, (right - left) * factor)
    if factor > 1:
        pixels = np.rint(block_mean(pixels, factor)).astype(pixels.dtype)
    return np.moveaxis(pixels[:, :bottom - top, :right - left], 0, -1)


def slide_pairs(pair: dict, classes: dict, ignore: int, fill: int, pixel_size: float | None,
                out_dir: Path) -> tuple[list[dict], list[str]]:
    """The pairs of a slide's annotated regions (see the module docstring), written into `out_dir`, and problems."""
    path = pair["image"]
    annotations = read_annotations(pair["mask"])
    with Slide(path) as slide:
        problems = annotation_problems(annotations, pair["mask"], classes, slide.levels[0].shape)
        if pixel_size is None:
            problems.append(missing_pixel_size(path))
        if problems:
            return [], problems
        return region_pairs(pair, slide, annotations, classes, ignore, fill, pixel_size, out_dir), []


def region_pairs(pair: dict, slide: Slide, annotations: list, classes: dict, ignore: int, fill: int,
                 pixel_size: float, out_dir: Path) -> list[dict]:
    """The pairs of a slide's annotated regions at `pixel_size` (`region_pair`), `fill` where no annotation is,
    written into `out_dir`."""
    level, factor, shape = training_grid(slide, pixel_size)
    scale = level.downsample * factor
    boxes = merged_boxes([grid_box(a, scale) for a in annotations if not a.ignored], MARGIN, shape)
    pairs = []
    for piece in [piece for box in boxes for piece in pieces(box)]:
        labels = rasterise(annotations, classes, ignore, piece, scale, fill=fill)
        if not (labels == fill).all():
            pairs.append(region_pair(pair, slide, level, factor, piece, labels, len(pairs), out_dir))
    return pairs


def written_mask(path: Path, labels: np.ndarray) -> Path:
    """`labels` written as a PNG mask at `path`."""
    write_mask(path, labels)
    return path


def image_pairs(pair: dict, classes: dict, ignore: int, fill: int, out_dir: Path) -> tuple[list[dict], list[str]]:
    """A plain image's pair with its annotations rasterised over the whole image into `out_dir`, and problems."""
    annotations = read_annotations(pair["mask"])
    info = image_info(pair["image"])
    shape = (info["height"], info["width"])
    problems = annotation_problems(annotations, pair["mask"], classes, shape)
    if problems:
        return [], problems
    labels = rasterise(annotations, classes, ignore, (0, 0, *shape), fill=fill)
    mask = written_mask(out_dir / f"{pair['stem']}_mask.png", labels)
    return [dict(pair, mask=mask, origin=dict(annotations=str(pair["mask"])))], []


def annotated_pairs(pair: dict, slide: bool, classes: dict, ignore: int, fill: int, pixel_size: float | None,
                    out_dir) -> tuple[list[dict], list[str]]:
    """A pair as ingest checks it (`slide`: whether its image is a whole-slide image to cut into regions): itself
    unless its mask is a GeoJSON file or its image such a slide, else the pairs of its annotated (labelled) regions or
    of the image with its rasterised annotations (`fill` where no annotation is); and the problems, each naming its
    file."""
    annotated = is_annotation(pair["mask"])
    if not annotated and not slide:
        return [pair], []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if not annotated:
            return label_slide_pairs(pair, ignore, pixel_size, out_dir)
        if slide:
            return slide_pairs(pair, classes, ignore, fill, pixel_size, out_dir)
        return image_pairs(pair, classes, ignore, fill, out_dir)
    except ImageReadError as error:
        return [], [str(error)]


def label_slide_pairs(pair: dict, ignore: int | None, pixel_size: float | None,
                      out_dir: Path) -> tuple[list[dict], list[str]]:
    """The pairs of the labelled regions of a slide whose mask is a label image (see the module docstring), written
    into `out_dir`, and problems."""
    path = pair["image"]
    if pixel_size is None:
        return [], [missing_pixel_size(path)]
    with Slide(path) as slide:
        level, factor, shape = training_grid(slide, pixel_size)
        labels, problem = labels_on_grid(pair["mask"], slide.levels[0].shape, shape, level.downsample * factor)
        if problem:
            return [], [problem]
        labelled = labels != ignore if ignore is not None else np.ones(shape, bool)
        found = ndimage.find_objects(ndimage.label(labelled)[0])
        boxes = merged_boxes([(rows.start, cols.start, rows.stop, cols.stop) for rows, cols in found], MARGIN, shape)
        pairs = []
        for top, left, bottom, right in [piece for box in boxes for piece in pieces(box)]:
            if labelled[top:bottom, left:right].any():
                pairs.append(region_pair(pair, slide, level, factor, (top, left, bottom, right),
                                         labels[top:bottom, left:right], len(pairs), out_dir))
    return pairs, []


def labels_on_grid(path, base: tuple[int, int], shape: tuple[int, int], scale: float) -> tuple[np.ndarray, str | None]:
    """A slide's label image (at `path`; a pyramid: its smallest level at least as large as the grid) resampled by
    nearest neighbour onto the training grid of `shape` (`scale` base pixels a pixel; `base`: the slide's base size),
    or a problem naming it when its aspect is not the slide's."""
    if is_slide(path):
        with Slide(path) as pyramid:
            large = [level for level in pyramid.levels if level.shape[0] >= shape[0] and level.shape[1] >= shape[1]]
            level = min(large or pyramid.levels[:1], key=lambda candidate: candidate.shape[0])
            values = pyramid.read_region(level.index, 0, 0, *level.shape)[0]
    else:
        values = read_mask(path)
    if abs(values.shape[0] * base[1] - values.shape[1] * base[0]) > 0.01 * values.shape[0] * base[1]:
        return values, (f"{path}: a label image of {values.shape[1]} x {values.shape[0]} pixels, but its slide is "
                        f"{base[1]} x {base[0]}: not of its aspect (a label image covers the whole slide at any "
                        f"resolution); export it again for the whole slide")
    rows, columns = (np.minimum(((np.arange(count) + 0.5) * scale * size / whole).astype(int), size - 1)
                     for count, size, whole in zip(shape, values.shape, base))
    return values[np.ix_(rows, columns)], None


def annotation_settings_problems(pairs: list[dict], classes: dict | None, instances: bool) -> list[str]:
    """Settings GeoJSON masks cannot be used with: no data.classes to map their class names, the instance mode."""
    files = [str(pair["mask"]) for pair in pairs if is_annotation(pair["mask"])]
    if not files:
        return []
    named = f"{files[0]}{f' and {len(files) - 1} more' if len(files) > 1 else ''}"
    if instances:
        return [f"GeoJSON masks ({named}) label classes, not objects; set data.instances: false"]
    if not classes:
        return [f"GeoJSON masks ({named}) name their classes: set data.classes to map each QuPath class name to a "
                f"mask value, e.g. {{Stroma: 0, Tumor: 1}}"]
    return []


def rasterised_pairs(pairs: list[dict], data, out_dir, threads: int) -> tuple[object, list[dict], list[str]]:
    """Pairs with GeoJSON masks, and whole-slide images, replaced by the image/mask pairs of their annotated
    (labelled) regions, written into `out_dir`; the data spec (ingest's `DataSpec`) with the ignore value of
    unannotated pixels, and the problems."""
    annotated = any(is_annotation(pair["mask"]) for pair in pairs)
    # a slide with a label image is cut only at a pixel size; without one it trains whole, as any image
    slides = [(is_annotation(pair["mask"]) or data.slide_pixel_size is not None) and is_slide(pair["image"])
              for pair in pairs]
    if not annotated and not any(slides):
        return data, pairs, []
    problems = annotation_settings_problems(pairs, data.classes, data.instances)
    if problems:
        return data, [pair for pair in pairs if not is_annotation(pair["mask"])], problems
    if out_dir is None:
        raise ValueError("GeoJSON masks and whole-slide images need a folder to write their regions into")
    fill = data.ignore_label
    if annotated:
        data = replace(data, ignore_label=ignore_value(data.classes, data.ignore_label))
        fill = data.ignore_label if data.unannotated == "ignore" else data.classes[data.unannotated]
        log.info("GeoJSON masks: unannotated pixels get %s", f"the ignore value {fill}" if data.unannotated ==
                 "ignore" else f"the class '{data.unannotated}' ({fill}; data.unannotated)")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda item: annotated_pairs(*item, data.classes, data.ignore_label, fill,
                                                             data.slide_pixel_size, out_dir), zip(pairs, slides)))
    return data, [p for found, _ in results for p in found], [p for _, found in results for p in found]
