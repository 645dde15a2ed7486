"""Warnings about a data set that do not stop it: very unbalanced classes, tiny images, lossy mask pixels snapped to the
nearest class, stray specks of instance ids dropped, object files covered by later ones, instance masks read from
colours, EXIF orientations not applied, classes in few masks, label volumes reoriented, volumes stored in another
orientation than most, volumes whose pixdim and affine disagree, binary masks that look inverted, images of a single
value, images with a channel of a single value, colour images of equal channels read as grey, masks without
foreground, TIFFs that state another pixel size than the others.
Each is one row of a table (columns WARNING_COLUMNS; rule ingest writes it as `data/warnings.parquet`), and the log
gets one summary line per kind with counts and a few examples, however many rows there are.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.io.calibration import PIXEL_SIZE_TOLERANCE, stated_pixel_sizes, typical_pixel_size
from unetflow.io.labels import trained_classes
from unetflow.io.nifti import axis_codes, usual_axis_codes

MIN_FOREGROUND = 0.001  # below this share of foreground pixels the data set is called unbalanced
MIN_SIDE = 32           # images smaller than this on a side are called tiny
RARE_CLASS_SHARE = 0.1  # a class in at most this share of the masks is named ...
RARE_CLASS_FILES = 10   # ... in a data set of at least this many mask files
INVERTED_RATIO = 3      # a binary mask over half foreground and this many times the median share looks inverted
EXAMPLES = 3            # rows named in a summary line
WARNING_COLUMNS = ["kind", "file", "value", "detail"]

log = logging.getLogger("unetflow.data.data_warnings")


def value_shares(manifest: pd.DataFrame, value: int) -> list[float]:
    """The share of each source's pixels that hold the mask `value` (from its label values and fractions)."""
    return [dict(zip(values, fractions)).get(value, 0.0) for values, fractions in
            zip(manifest["label_values"], manifest["label_fractions"])]


def unbalanced_rows(manifest: pd.DataFrame, classes: pd.DataFrame) -> list[dict]:
    """One row when less than MIN_FOREGROUND of all pixels are foreground (its value: that share in percent)."""
    background = int(classes.loc[classes["index"] == 0, "value"].iloc[0])
    pixels = manifest["slices"] * manifest["height"] * manifest["width"]
    background_share = value_shares(manifest, background)
    foreground = 1 - float(np.average(background_share, weights=pixels))
    if foreground >= MIN_FOREGROUND:
        return []
    return [dict(kind="unbalanced", file=None, value=100 * foreground,
                 detail=f"{100 * foreground:.4f}% of all pixels are foreground (< {100 * MIN_FOREGROUND:.1f}%)")]


def rare_class_rows(manifest: pd.DataFrame, classes: pd.DataFrame) -> list[dict]:
    """One row per foreground class found in at most RARE_CLASS_SHARE of the mask files (at least one) of a data set
    of at least RARE_CLASS_FILES (its value: in how many): a split may leave it out of training, or it is no class."""
    found = manifest.groupby("mask_path")["label_values"].agg(lambda values: set().union(*map(set, values)))
    rows = []
    for _, entry in trained_classes(classes).iloc[1:].iterrows() if len(found) >= RARE_CLASS_FILES else []:
        holders = [path for path, values in found.items() if entry["value"] in values]
        if 0 < len(holders) <= max(1, RARE_CLASS_SHARE * len(found)):
            rows.append(dict(kind="rare_class", file=holders[0], value=float(len(holders)),
                             detail=f"'{entry['name']}' (value {entry['value']}) in {len(holders)} of {len(found)}"))
    return rows


def tiny_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per case smaller than MIN_SIDE on a side (its value: the shorter side)."""
    tiny = manifest[(manifest["height"] < MIN_SIDE) | (manifest["width"] < MIN_SIDE)]
    return [dict(kind="tiny_image", file=row["image_path"], value=float(min(row["height"], row["width"])),
                 detail=f"case {row['id']}: {row['height']}x{row['width']} px") for _, row in tiny.iterrows()]


def snapped_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per lossy mask file with pixels snapped to the nearest class (its value: how many)."""
    snapped = manifest.groupby("mask_path", sort=True)["snapped_pixels"].sum()
    return [dict(kind="snapped_pixels", file=path, value=float(count),
                 detail=f"{count} pixels of the lossy mask snapped to the nearest class")
            for path, count in snapped.items() if count]


def speck_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per instance mask with stray specks of ids dropped (its value: their pixels)."""
    if "speck_pixels" not in manifest:
        return []
    return [dict(kind="instance_specks", file=row["mask_path"], value=float(row["speck_pixels"]),
                 detail=f"ids {sorted(set(row['speck_ids']))}: stray parts of {row['speck_pixels']} px dropped, each "
                        f"id keeps its largest part")
            for _, row in manifest.iterrows() if row["speck_pixels"]]


def covered_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per folder of object masks with objects wholly covered by later files (its value: how many)."""
    if "covered_objects" not in manifest:
        return []
    return [dict(kind="covered_objects", file=row["mask_path"], value=float(len(row["covered_objects"])),
                 detail=f"{', '.join(list(row['covered_objects'])[:3])}") for _, row in manifest.iterrows()
            if len(row["covered_objects"])]


def constant_channel_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per image of several channels with a channel of a single value, not all (its value: how many)."""
    if "constant_channels" not in manifest:
        return []
    return [dict(kind="constant_channel", file=row["image_path"], value=float(len(row["constant_channels"])),
                 detail=f"channel(s) {[int(c) for c in row['constant_channels']]}") for _, row in manifest.iterrows()
            if len(row["constant_channels"]) and not row["constant"]]


def empty_rows(manifest: pd.DataFrame, classes: pd.DataFrame) -> list[dict]:
    """One row per mask holding only the background (and ignored pixels) (its value: 1)."""
    background = {int(trained_classes(classes)["value"].iloc[0])} | set(classes.loc[classes["ignore"], "value"])
    return [dict(kind="empty_mask", file=row["mask_path"], value=1.0, detail="background only")
            for _, row in manifest.iterrows() if set(row["label_values"]) <= background]


def colour_id_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per instance mask saved in colours, read as objects (its value: their count)."""
    if "colour_ids" not in manifest:
        return []
    return [dict(kind="colour_ids", file=row["mask_path"], value=float(row["objects"]),
                 detail=f"{row['objects']} objects read from colours") for _, row in manifest.iterrows()
            if row["colour_ids"]]


def orientation_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per image with an EXIF orientation tag other than 1 (its value: the tag), whose pixels are read as
    stored, not as viewers show them."""
    if "exif_orientation" not in manifest:
        return []
    return [dict(kind="exif_orientation", file=row["image_path"], value=float(row["exif_orientation"]),
                 detail=f"EXIF orientation {row['exif_orientation']}") for _, row in manifest.iterrows()
            if row["exif_orientation"] != 1]


def volume_orientation_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per volume whose voxel axes point elsewhere than most volumes' (`axis_codes`: LAS beside RAS): its
    voxels reach the network mirrored or turned (its value: 1)."""
    volumes = manifest.loc[manifest["kind"] == "volume", "image_path"] if "kind" in manifest else []
    codes = {path: axis_codes(path) for path in volumes}
    usual = usual_axis_codes(codes.values())
    return [dict(kind="volume_orientation", file=path, value=1.0, detail=f"{code} where most are {usual}")
            for path, code in codes.items() if code and code != usual]


def flagged_rows(manifest: pd.DataFrame, column: str, kind: str, file: str, detail: str) -> list[dict]:
    """One row of `kind` per source whose boolean manifest `column` is set, naming its `file` column (its value: 1):
    label volumes read reoriented (`reoriented`), images of a single value (`constant`)."""
    if column not in manifest:
        return []
    return [dict(kind=kind, file=row[file], value=1.0, detail=detail) for _, row in manifest.iterrows() if row[column]]


def inverted_rows(manifest: pd.DataFrame, classes: pd.DataFrame) -> list[dict]:
    """One row per mask of a binary data set (of at least 4 sources) whose foreground covers over half of it and
    over INVERTED_RATIO times the median share: saved inverted? (its value: the share in percent)."""
    trained = trained_classes(classes)
    if len(trained) != 2 or len(manifest) < 4:
        return []
    shares = value_shares(manifest, int(trained["value"].iloc[1]))
    median = float(np.median(shares))
    return [dict(kind="inverted", file=path, value=100 * share,
                 detail=f"{share:.0%} foreground against a median of {median:.0%}")
            for path, share in zip(manifest["mask_path"], shares) if share > max(0.5, INVERTED_RATIO * median)]


def pixel_size_rows(manifest: pd.DataFrame) -> list[dict]:
    """One row per TIFF image whose stated pixel width, else height, is PIXEL_SIZE_TOLERANCE or more off the (lower)
    median of the TIFFs that state one (its value: the ratio): objects are that much larger or smaller in its
    pixels."""
    rows = {}
    for axis, side in ((1, " in height"), (0, "")):
        sizes = stated_pixel_sizes(manifest["image_path"], axis)
        median = typical_pixel_size(sizes.values()) if len(sizes) > 1 else None
        rows |= {path: dict(kind="pixel_size", file=path, value=size / median,
                            detail=f"{size:.4g} µm per pixel{side}, {size / median:.2f} times the median "
                                   f"{median:.4g} µm") for path, size in sizes.items()
                 if median and abs(size / median - 1) >= PIXEL_SIZE_TOLERANCE}
    return list(rows.values())


def data_warnings(manifest: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    """Every warning about a checked data set (its manifest and class table) as a table: kind, file (None for the
    whole data set), value (a number whose meaning the kind gives), detail."""
    rows = (unbalanced_rows(manifest, classes) + rare_class_rows(manifest, classes) + tiny_rows(manifest)
            + snapped_rows(manifest) + speck_rows(manifest) + covered_rows(manifest) + colour_id_rows(manifest)
            + constant_channel_rows(manifest) + empty_rows(manifest, classes) + pixel_size_rows(manifest)
            + orientation_rows(manifest) + volume_orientation_rows(manifest)
            + flagged_rows(manifest, "reoriented", "reoriented", "mask_path", "reoriented")
            + flagged_rows(manifest, "spacing_mismatch", "spacing_mismatch", "image_path", "pixdim and affine differ")
            + flagged_rows(manifest, "read_as_grey", "read_as_grey", "image_path", "three equal channels")
            + inverted_rows(manifest, classes) + flagged_rows(manifest, "constant", "constant_image", "image_path",
                                                              "a single value"))
    return pd.DataFrame(rows, columns=WARNING_COLUMNS).astype({"kind": str, "file": object, "value": float,
                                                               "detail": str})


def short_name(path: Path) -> str:
    """A file's name with its folder's (`patient01/frame_000.png`, `<case>/masks` of an object folder): its name alone
    would not tell which case in nested folders."""
    return f"{path.parent.name}/{path.name}"


SUMMARIES = {  # kind -> its summary line, from its rows and a few examples of its files
    "unbalanced": lambda rows, examples: (
        f"very unbalanced classes: {rows['detail'].iloc[0]}; consider foreground oversampling or a Dice loss"),
    "rare_class": lambda rows, examples: (
        f"{len(rows)} class(es) in few masks: {'; '.join(rows['detail'])} (e.g. {examples}); a split may leave them "
        f"out of training (the plan refuses then); if they are no classes, clean those masks or declare data.classes"),
    "tiny_image": lambda rows, examples: (
        f"{len(rows)} tiny image(s) smaller than {MIN_SIDE} px on a side (e.g. {examples}); a deep U-Net may not fit "
        f"them"),
    "snapped_pixels": lambda rows, examples: (
        f"{int(rows['value'].sum())} pixels of {len(rows)} lossy mask(s) snapped to the nearest class (e.g. "
        f"{examples})"),
    "instance_specks": lambda rows, examples: (
        f"{len(rows)} instance mask(s) with stray specks of an id, {int(rows['value'].sum())} px dropped as annotation "
        f"slips, the largest part kept as the object (e.g. {examples}: {rows['detail'].iloc[0]})"),
    "covered_objects": lambda rows, examples: (
        f"{int(rows['value'].sum())} object mask file(s) in {len(rows)} folder(s) wholly covered by later files (a "
        f"later file wins where objects overlap), so left out (e.g. {examples}: {rows['detail'].iloc[0]}): duplicate "
        f"annotations? If they are objects of their own, keep them apart"),
    "constant_channel": lambda rows, examples: (
        f"{len(rows)} image(s) with a channel of a single value (e.g. {examples}: {rows['detail'].iloc[0]}): a "
        f"modality missing (all zeros), or a stray channel? The network learns to use every channel; complete those "
        f"images or leave them out"),
    "empty_mask": lambda rows, examples: (
        f"{len(rows)} mask(s) with no foreground, background only (e.g. {examples}): negative examples, or annotations "
        f"missing? They train as all background, and any foreground predicted there scores Dice 0"),
    "colour_ids": lambda rows, examples: (
        f"{len(rows)} instance mask(s) saved in colours (e.g. {examples}): each colour read as one object, black as "
        f"the background, a colour on separate parts (a reused one) as one object per part"),
    "exif_orientation": lambda rows, examples: (
        f"{len(rows)} image(s) with an EXIF orientation tag (e.g. {each(rows, rows['value'].map('{:.0f}'.format))}), "
        f"which viewers apply and unetflow does not: their pixels, and their predictions, are as stored; if their "
        f"masks were drawn on the turned view, export the images with the turn applied (e.g. "
        f"PIL.ImageOps.exif_transpose)"),
    "reoriented": lambda rows, examples: (
        f"{len(rows)} label volume(s) stored in another orientation than their images (e.g. {examples}): read with "
        f"their voxel axes swapped or reversed into the image's, without loss"),
    "volume_orientation": lambda rows, examples: (
        f"{len(rows)} volume(s) stored in another orientation than most (e.g. {each(rows, rows['detail'], '; ')}): "
        f"voxels are used as stored, so the network sees these mirrored or turned, and classes told apart by side "
        f"(left and right kidney) may be swapped, which mirroring augmentation hides; reorient them to the others' "
        f"orientation first (nibabel.as_closest_canonical gives RAS)"),
    "spacing_mismatch": lambda rows, examples: (
        f"{len(rows)} volume(s) whose header's pixdim, the spacing unetflow measures and resamples with, differs from "
        f"the voxel sizes of its affine (e.g. {examples}): a header written inconsistently; make them agree (e.g. "
        f"nibabel's header.set_zooms, or set_sform with the right spacing)"),
    "inverted": lambda rows, examples: (
        f"{len(rows)} mask(s) with far more foreground than the others (e.g. {examples}: {rows['detail'].iloc[0]}): "
        f"saved inverted, the objects as background? If so, invert them"),
    "pixel_size": lambda rows, examples: (
        f"{len(rows)} TIFF image(s) stating another pixel size than the others (e.g. "
        f"{each(rows, rows['detail'], '; ')}): the network learns objects by their size in pixels, so theirs look "
        f"larger or smaller; resample them to one pixel size (or check their metadata)"),
    "read_as_grey": lambda rows, examples: (
        f"{len(rows)} colour image(s) whose three channels are equal (grey pictures saved as RGB; e.g. {examples}) "
        f"read as grey, as most images of the data set are"),
    "constant_image": lambda rows, examples: (
        f"{len(rows)} image(s) of a single value (e.g. {examples}): blank, or a failed export? Their masks are "
        f"learned from no signal; replace or remove them"),
}


def each(rows: pd.DataFrame, texts, separator: str = ", ") -> str:
    """'a.jpg: 6, b.jpg: 3, ...': the first EXAMPLES files of warning rows, each with its own of `texts`."""
    shown = separator.join(f"{short_name(Path(file))}: {text}" for file, text in zip(rows["file"][:EXAMPLES],
                                                                                    list(texts)[:EXAMPLES]))
    return shown + (separator + "..." if len(rows) > EXAMPLES else "")


def summary_line(kind: str, rows: pd.DataFrame) -> str:
    """One log line for all warnings of a kind (SUMMARIES): how many, and a few examples."""
    files = rows["file"].dropna().drop_duplicates()
    names = ", ".join(short_name(Path(f)) for f in files.head(EXAMPLES))
    examples = names + (", ..." if len(files) > EXAMPLES else "")
    if kind not in SUMMARIES:
        return f"{len(rows)} warning(s) of kind {kind} (e.g. {examples})"
    return SUMMARIES[kind](rows, examples)


def log_warnings(table: pd.DataFrame, where: str = "data/warnings.parquet") -> None:
    """Log one summary line per kind of warning, pointing at the table with every row."""
    for kind, rows in table.groupby("kind", sort=False):
        log.warning("%s%s", summary_line(kind, rows), f" (all {len(rows)} in {where})" if len(rows) > 1 else "")
