"""Data set layouts that pairing by stem alone does not pair (`unetflow.data.pairing.pair_files` asks here):

- nnU-Net's raw layout: imagesTr/<case>_0000.nii.gz (one file per channel) beside labelsTr/<case>.nii.gz, case
  <case> (`image_case`); several channel files of one case are refused (`duplicate_problem`); images to segment
  named so (imagesTs/<case>_0000.nii.gz) are named <case>, as nnU-Net names its predictions
  (`without_channel_suffix`);
- images named with a suffix of their own beside their masks (ct01_image.nii.gz, ct01_label.nii.gz): case ct01
  (`image_case`); BraTS 2020's files per modality (<case>_t1.nii.gz ... beside <case>_seg.nii.gz) are refused as
  nnU-Net's channel files are;
- a folder per case with files of the same names (KiTS: case_00000/imaging.nii.gz beside
  case_00000/segmentation.nii.gz), paired by folder, each case named by it (`case_folder_pairs`);
- sites that repeat file names (siteA/images/img0.png and siteB/images/img0.png, their masks in siteA/masks/ and
  siteB/masks/), paired by the folders that tell them apart, each case named siteA_img0 (`site_pairs`), and so
  named when a manifest lists them (`with_site_names`).
"""

import re
from pathlib import Path

from unetflow.data.unpaired import UnpairedImage
from unetflow.io.formats import case_stem

NNUNET_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")  # nnU-Net's image names: <case>_<channel>
IMAGE_SUFFIXES = ("_image", "-image", "_img", "-img", "_images")  # an image named <case>_image beside <case>_label
MODALITY_SUFFIXES = ("_t1", "_t1ce", "_t1gd", "_t2", "_flair", "_adc", "_dwi", "_pd", "_ct", "_pet")  # BraTS 2020's


def image_case(stem: str, has_mask) -> str:
    """The case an image stem names: the stem itself, or, when a mask matches the case (`has_mask(case)`) and none
    the stem, the case of a channel file of nnU-Net's raw layout (<case>_0000) or of an image named with one of
    IMAGE_SUFFIXES (<case>_image) or MODALITY_SUFFIXES (<case>_flair)."""
    if has_mask(stem):
        return stem
    channel = NNUNET_CHANNEL.fullmatch(stem)
    cases = ([channel["case"]] if channel else []) + [stem[:-len(end)] for end in IMAGE_SUFFIXES + MODALITY_SUFFIXES
                                                       if stem.lower().endswith(end)]
    return next((case for case in cases if case and has_mask(case)), stem)


def without_channel_suffix(names: list[str]) -> list[str]:
    """Names of images to segment as nnU-Net names its test images, every one <case>_0000 (one channel each): their
    cases, as nnU-Net names its predictions; otherwise (a name without it) the names as they are."""
    channels = [NNUNET_CHANNEL.fullmatch(name) for name in names]
    if any(channel is None or channel["channel"] != "0000" for channel in channels):
        return names
    return [channel["case"] for channel in channels]


def duplicate_problem(case: str, files: list[Path]) -> str:
    """The problem of several images of one case id that `site_pairs` cannot tell apart: nnU-Net channel files
    (<case>_0000, <case>_0001, ...) or images of one stem."""
    names = ", ".join(map(str, files))
    if all(case_stem(file) != case for file in files):
        return (f"case '{case}' has {len(files)} channel files ({names}: one file per channel or modality, as "
                f"nnU-Net's layout and BraTS store them); unetflow reads a case's channels from one file: stack them "
                f"into one 4D NIfTI per case (channels last, in one order for every case)")
    return (f"duplicate case id '{case}': {names} have the same stem and no folders that tell them and their masks "
            f"apart; rename one of them")


def varying_folders(paths: list[Path]) -> list[tuple[str, ...]]:
    """The folders of each path's parent that differ among `paths` (siteA/images/a.png and siteB/images/a.png ->
    (siteA,), (siteB,))."""
    parents = [path.parent.parts for path in paths]
    depth = max(map(len, parents))
    padded = [parts + ("",) * (depth - len(parts)) for parts in parents]
    varying = [level for level in range(depth) if len({parts[level] for parts in padded}) > 1]
    return [tuple(parts[level] for level in varying if parts[level]) for parts in padded]


def telling_folders(paths: list[Path]) -> list[tuple[str, ...]] | None:
    """`varying_folders` when they tell every path apart (none empty, no two alike), else None."""
    folders = varying_folders(paths)
    return folders if () not in folders and len(set(folders)) == len(folders) else None


def folder_names(paths: list[Path]) -> list[str] | None:
    """`telling_folders` of each path joined by '_' (siteA, siteB), or None."""
    folders = telling_folders(paths)
    return None if folders is None else ["_".join(parts) for parts in folders]


def site_pairs(stem: str, images: list[Path], masks: list[Path]) -> tuple[list[dict], list[str]] | None:
    """The pairs of images of one stem in different sites' folders, each with the mask of that stem in folders of
    its site (`telling_folders`), each case named <folder>_<stem>, and the images without one (`UnpairedImage`);
    None when the folders do not tell the images, or their masks, apart."""
    sites = telling_folders(images)
    if sites is None:
        return None
    pairs, problems = [], []
    for image, site in zip(images, sites):
        mine = [mask for mask in masks if set(site) <= set(mask.parent.parts)]
        if len(mine) > 1:
            return None
        name = f"{'_'.join(site)}_{stem}"
        if mine:
            pairs.append(dict(stem=name, image=image, mask=mine[0]))
        else:
            problems.append(UnpairedImage(f"{image}: no mask {stem} + a mask suffix in a folder of {'/'.join(site)} "
                                          f"(case {name}); add it, or set data.unpaired: skip to leave it out", image))
    return pairs, problems


def with_site_names(pairs: list[dict]) -> list[dict]:
    """Listed pairs (a manifest's) whose images share a stem, named <folder>_<stem> by the folders that tell them
    apart (`folder_names`); the others as they are."""
    by_stem = {}
    for pair in pairs:
        by_stem.setdefault(pair["stem"], []).append(pair)
    for stem, group in by_stem.items():
        keys = folder_names([pair["image"] for pair in group]) if len(group) > 1 else None
        for pair, key in zip(group, keys or []):
            pair["stem"] = f"{key}_{stem}"
    return pairs


def case_folder_pairs(images: list[Path], masks: list[Path]) -> tuple[list[dict], list[str]] | None:
    """A folder per case, each with an image and a mask of the same names in every folder (KiTS:
    case_00000/imaging.nii.gz beside case_00000/segmentation.nii.gz, or images/p1/scan.png with labels/p1/scan.png):
    pairs by folder, each case named by it (`folder_names`), and the problems; None for any other layout."""
    if len(images) < 2 or len(set(map(case_stem, images))) > 1 or len(set(map(case_stem, masks))) != 1:
        return None
    cases = folder_names(images)
    if cases is None:
        return None
    masks_of = {"_".join(parts): mask for parts, mask in zip(varying_folders(masks), masks)} if len(masks) > 1 else {}
    pairs, problems = [], []
    for image, case in zip(images, cases):
        if case in masks_of:
            pairs.append(dict(stem=case, image=image, mask=masks_of.pop(case)))
        else:
            problems.append(UnpairedImage(f"{image}: no mask named {masks[0].name} in a folder of its case ({case}); "
                                          f"add it, remove the image or set data.unpaired: skip", image))
    problems += [f"{mask}: mask without an image {images[0].name} in a folder of its case; remove it or add the "
                 f"image" for mask in masks_of.values()]
    return pairs, problems
