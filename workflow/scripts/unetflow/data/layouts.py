"""Data set layouts that pairing by stem alone does not pair (`unetflow.data.pairing.pair_files` asks here):

- nnU-Net's raw layout: imagesTr/<case>_0000.nii.gz (one file per channel) beside labelsTr/<case>.nii.gz, case
  <case> (`channel_case`); several channel files of one case are refused (`duplicate_problem`); images to segment
  named so (imagesTs/<case>_0000.nii.gz) are named <case>, as nnU-Net names its predictions
  (`without_channel_suffix`);
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


def channel_case(stem: str, has_mask) -> str:
    """The case an image stem names: the stem itself, or for a channel file of nnU-Net's raw layout the case, when
    a mask matches the case (`has_mask(case)`) and none the stem."""
    channel = NNUNET_CHANNEL.fullmatch(stem)
    if channel is None or has_mask(stem) or not has_mask(channel["case"]):
        return stem
    return channel["case"]


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
        return (f"case '{case}' has {len(files)} channel files ({names}: nnU-Net's layout of a case's channels); "
                f"unetflow reads a case's channels from one file: stack them into one 4D NIfTI per case")
    return (f"duplicate case id '{case}': {names} have the same stem and no folders that tell them and their masks "
            f"apart; rename one of them")


def distinct_folders(paths: list[Path]) -> list[str]:
    """The folders of each path's parent that differ among `paths`, joined by '_' (siteA/images/a.png and
    siteB/images/a.png -> siteA, siteB)."""
    parents = [path.parent.parts for path in paths]
    depth = max(map(len, parents))
    padded = [parts + ("",) * (depth - len(parts)) for parts in parents]
    varying = [level for level in range(depth) if len({parts[level] for parts in padded}) > 1]
    return ["_".join(parts[level] for level in varying if parts[level]) for parts in padded]


def folder_matches(images: list[Path], masks: list[Path]) -> dict[str, tuple[Path, Path]] | None:
    """{folder name: (image, mask)} when the images' and the masks' `distinct_folders` name each image once and
    each mask once, the same names for both; None otherwise."""
    image_keys, mask_keys = distinct_folders(images), distinct_folders(masks)
    if "" in image_keys or len(set(image_keys)) < len(images) or sorted(image_keys) != sorted(mask_keys):
        return None
    mask_of = dict(zip(mask_keys, masks))
    return {key: (image, mask_of[key]) for key, image in zip(image_keys, images)}


def site_pairs(stem: str, images: list[Path], masks: list[Path]) -> list[dict]:
    """The pairs of images of one stem in different sites' folders with the masks of that stem (`folder_matches`),
    each case named <folder>_<stem>; none when the folders do not tell them apart."""
    matches = folder_matches(images, masks) if masks else None
    return [dict(stem=f"{key}_{stem}", image=image, mask=mask) for key, (image, mask) in (matches or {}).items()]


def with_site_names(pairs: list[dict]) -> list[dict]:
    """Listed pairs (a manifest's) whose images share a stem, named <folder>_<stem> by the folders that tell them
    apart (`distinct_folders`); the others as they are."""
    by_stem = {}
    for pair in pairs:
        by_stem.setdefault(pair["stem"], []).append(pair)
    for stem, group in by_stem.items():
        keys = distinct_folders([pair["image"] for pair in group])
        if len(group) > 1 and "" not in keys and len(set(keys)) == len(keys):
            for pair, key in zip(group, keys):
                pair["stem"] = f"{key}_{stem}"
    return pairs


def case_folder_pairs(images: list[Path], masks: list[Path]) -> tuple[list[dict], list[str]] | None:
    """A folder per case, each with an image and a mask of the same names in every folder (KiTS:
    case_00000/imaging.nii.gz beside case_00000/segmentation.nii.gz, or images/p1/scan.png with labels/p1/scan.png):
    pairs by folder, each case named by it (`distinct_folders`), and the problems; None for any other layout."""
    if len(images) < 2 or len(set(map(case_stem, images))) > 1 or len(set(map(case_stem, masks))) != 1:
        return None
    cases = distinct_folders(images)
    masks_of = dict(zip(distinct_folders(masks), masks)) if len(masks) > 1 else {}
    if "" in cases or len(set(cases)) < len(cases):
        return None
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
