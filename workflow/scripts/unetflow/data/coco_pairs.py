"""Images whose masks are one COCO annotation file (`data.masks: annotations.json`), turned into ordinary image/mask
pairs at ingest: each image is paired with the COCO image entry of its file name, and that entry's annotations are
drawn (`unetflow.io.coco`) into a mask in the ingest's `annotated` folder, so every later stage reads it as any
other mask. With `data.instances` each annotation is an object; otherwise its category is its class, and the classes
are the COCO categories (`coco_classes`) unless `data.classes` says otherwise."""

import logging
from collections import Counter
from pathlib import Path, PureWindowsPath

from unetflow.data.unpaired import UnpairedImage
from unetflow.io.coco import drawn_mask, is_empty, is_outline, read_coco
from unetflow.io.formats import ImageReadError, case_stem
from unetflow.io.images import image_info, write_mask
from unetflow.io.labels import ID_LIMIT

log = logging.getLogger("unetflow.data.coco_pairs")


def coco_classes(path) -> dict[str, int] | None:
    """The classes of a COCO file's categories: {background: 0, category name: category id, ...}; None for a file
    that cannot be read (`coco_pairs` says why)."""
    try:
        categories = read_coco(path)["categories"]
    except ImageReadError:
        return None
    return {"background": 0, **{str(c["name"]): int(c["id"]) for c in categories}}


REQUIRED = {"images": ("id", "file_name", "height", "width"),
            "annotations": ("image_id", "category_id", "segmentation"), "categories": ("id", "name")}


def file_name(entry: dict) -> str:
    """An image entry's file name without its folders, also when they are written the Windows way (C:\\data\\a.png)."""
    return PureWindowsPath(entry["file_name"]).name


def lacking_keys(coco: dict, path) -> list[str]:
    """Sections of a COCO file with entries that lack a key the pairing reads (REQUIRED)."""
    return [f"{path}: {count} of its {section} lack one of {keys}; export the file again"
            for section, keys in REQUIRED.items()
            if (count := sum(not all(key in entry for key in keys) for entry in coco[section]))]


def outline_problems(coco: dict, path) -> list[str]:
    """Annotations without an area to draw: refused when their segmentation is empty or not one (a box-only
    annotation is an object the mask would call background); left out, said in the log, when it has only polygons
    of fewer than three points (zero area: a slip of the annotation tool)."""
    empty = [a.get("id") for a in coco["annotations"] if is_empty(a["segmentation"])]
    slips = [a.get("id") for a in coco["annotations"]
             if not is_empty(a["segmentation"]) and not is_outline(a["segmentation"])]
    if slips:
        log.warning("%s: %d annotation(s) with only polygons of fewer than 3 points (e.g. ids %s) enclose no area and "
                    "are left out", path, len(slips), slips[:3])
    return [f"{path}: {len(empty)} annotation(s) have no outline (e.g. ids {empty[:3]}; an empty segmentation: boxes "
            f"only?), so their objects would be drawn as background; give them polygons or masks, or remove them"
            ] if empty else []


def entry_problems(coco: dict, path, instances: bool) -> list[str]:
    """Entries of a COCO file the pairing cannot use: image file names given twice, annotations without an outline
    (`outline_problems`) or of an image or a category the file does not list, and (without `instances`) a category
    id 0, the background's value."""
    problems = [f"{path}: {count} images are named {name}; give each image entry its own file_name"
                for name, count in Counter(map(file_name, coco["images"])).items() if count > 1]
    problems += outline_problems(coco, path)
    images, categories = {image["id"] for image in coco["images"]}, {c["id"] for c in coco["categories"]}
    for key, known, what in [("image_id", images, "image"), ("category_id", categories, "category")]:
        unknown = sorted({a[key] for a in coco["annotations"] if a.get(key) not in known}, key=str)
        problems += [f"{path}: {len(unknown)} annotation {what} id(s) are not in its {what} list (e.g. "
                     f"{unknown[:3]}); export the file again"] if unknown else []
    if not instances and 0 in categories:
        problems.append(f"{path}: category id 0 is the background's value; number the categories from 1")
    return problems


def coco_pairs(images: list[Path], path, instances: bool, out_dir) -> tuple[list[dict], list[str]]:
    """The pairs of the images with their masks drawn from the COCO file `path` into `out_dir`/coco, and the
    problems (an image without an entry, or of another size than its entry)."""
    try:
        coco = read_coco(path)
    except ImageReadError as error:
        return [], [str(error)]
    if lacking := lacking_keys(coco, path):
        return [], lacking
    problems = entry_problems(coco, path, instances)
    entries = {file_name(image): image for image in coco["images"]}
    annotations = {}
    for annotation in coco["annotations"]:
        annotations.setdefault(annotation["image_id"], []).append(annotation)
    pairs, folder = [], Path(out_dir) / "coco"
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        entry = entries.get(image.name)
        info = image_info(image)
        if entry is None:
            problems.append(UnpairedImage(f"{image}: no image entry of this file name in the COCO file {path}; remove "
                                          f"the image, annotate it or set data.unpaired: skip", image))
        elif (info["height"], info["width"]) != (entry["height"], entry["width"]):
            problems.append(f"{image}: {info['height']}x{info['width']} px but its entry in {path} says "
                            f"{entry['height']}x{entry['width']}")
        elif not problems:
            mask = drawn_mask(entry, annotations.get(entry["id"], []), instances)
            written = folder / f"{case_stem(image)}{'.tif' if mask.max(initial=0) > 65535 else '.png'}"
            write_mask(written, mask, limit=ID_LIMIT)
            pairs.append(dict(stem=case_stem(image), image=image, mask=written, origin=dict(annotations=str(path))))
    return pairs, problems
