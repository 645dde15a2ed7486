"""Regions of interest (data.rois, infer.rois) paired with images: by the image's case name or stem (+ one of
ROI_SUFFIXES), in the image's own folders: the folders that tell the images of a repeated file name apart
(patient02 of patient02/frame_007.png) and, of images in folders of their own, those that tell the ROI files apart
(patient07 of rois/patient07/x.png, never the ROI of patient03/x.png; flat images take theirs from any folder)."""

from pathlib import Path

from unetflow.data.layouts import telling_folders, varying_folders
from unetflow.data.pairing import image_files, stems_of
from unetflow.data.unpaired import match_by_stem
from unetflow.io.formats import case_stem

ROI_SUFFIXES = ("", "_roi", "_mask")


def attach_rois(pairs: list[dict], spec: str, key: str = "data.rois") -> list[str]:
    """Add each pair's region-of-interest file (`rois_of`) of those `spec` (the setting `key`) names; return the
    problems."""
    files = image_files(spec)
    rois, sites = stems_of(files), image_sites(pairs)
    folders = dict(zip(files, varying_folders(files))) if len(files) > 1 else {}
    nested = {str(pair["image"]) for pair, parts in zip(pairs, varying_folders([p["image"] for p in pairs])) if parts}
    problems = []
    for pair in pairs:
        site = sites.get(str(pair["image"]), ())
        found = [roi for roi in rois_of(pair, rois, site) if str(pair["image"]) not in nested or
                 set(folders.get(roi, ())) <= set(Path(pair["image"]).parts)]
        if len(found) != 1:
            where = f" in a folder of {'/'.join(site)}" if site else ""
            problems.append(f"{pair['image']}: {len(found) or 'no'} region-of-interest file(s) in {key} "
                            f"'{spec}'{where} (looked for '{case_stem(pair['image'])}' + one of {list(ROI_SUFFIXES)}); "
                            f"{roi_fix(found, rois_of(pair, rois))}")
        else:
            pair["roi"] = found[0]
    return problems


def roi_fix(found: list[Path], elsewhere: list[Path]) -> str:
    """What to do about an image with several region-of-interest files (`found`), or none but some of its name in
    other cases' folders (`elsewhere`), or none at all."""
    if found:
        return "keep one"
    if elsewhere:
        return (f"found only outside the image's folders (e.g. {elsewhere[0]}): put each region of interest in a "
                f"folder named as its image's")
    return "add it"


def image_sites(pairs: list[dict]) -> dict[str, tuple[str, ...]]:
    """{image path: the folders that tell it apart from the other images of its stem} (patient02 of
    patient02/frame_007.png beside patient08/frame_007.png), for the images whose stem repeats."""
    by_stem = {}
    for pair in pairs:
        by_stem.setdefault(case_stem(pair["image"]), []).append(Path(pair["image"]))
    return {str(image): site for images in by_stem.values() if len(images) > 1
            for image, site in zip(images, telling_folders(images) or [()] * len(images))}


def rois_of(pair: dict, rois: dict[str, list[Path]], site: tuple[str, ...] = ()) -> list[Path]:
    """The region-of-interest files of a pair's case name or, else, its image's stem (+ a ROI suffix), in a folder of
    its `site` (`image_sites`); of several, those in the most folders of the image's path (sites that repeat file
    names: siteA/fov/c0.png for siteA/images/c0.png)."""
    found = match_by_stem(pair["stem"], rois, "", ROI_SUFFIXES) or \
        match_by_stem(case_stem(pair["image"]), rois, "", ROI_SUFFIXES)
    found = [roi for roi in found if set(site) <= set(roi.parent.parts)]
    shared = [len(set(roi.parent.parts) & set(Path(pair["image"]).parent.parts)) for roi in found]
    return [roi for roi, count in zip(found, shared) if count == max(shared)]
