"""What the values of masks mean when `data.classes` is not declared: the checks that keep a found value from being
trained as a class when it is not one. Each refuses before any training, naming files and values.

- Soft edges of masks resized with interpolation: `unetflow.data.soft_edges`.
- Instance-labelled masks (0 = background, 1..N = one id per object, the usual format of nuclei and cell data sets):
  a mask with at least INSTANCE_MIN_VALUES non-zero values of which at least INSTANCE_REGION_SHARE are objects:
  one connected region (8-neighbourhood) of at least OBJECT_MIN_PIXELS pixels each; touching objects of different
  ids count one each. They are not classes: `data.instances: true` trains them as objects (the instance mode),
  `data.foreground: nonzero` every non-zero value as one foreground class. Masks of few objects each (under
  INSTANCE_MIN_VALUES values) are instance-labelled when their counts of values differ (FEW_IDS_COUNTS counts at
  least) and at least INSTANCE_REGION_SHARE of the masks hold the ids 1..n and of the values are one object each
  (in 3D for stacks and volumes: one 26-connected region).
- The foreground encoded differently by file (every mask holds one foreground value, not all the same one, say 0/1
  in some files and 0/255 in others): one structure or several classes? `data.foreground: nonzero` or
  `data.classes` says which. (1-bit masks are read as 0/255, so 1-bit and 0/255 files are alike.) Likewise masks
  of several classes saved two ways (0/1/2 in some files, 0/128/255 in others: two annotators), each group of values
  that no mask mixes held by at least MIXED_FILES of the masks.
- An unannotated value: 255 beside small class values (at most SMALL_CLASS_VALUE, say 0/1/2/255; found in at
  least half of the mask files, so not strays), the usual mark of pixels nobody annotated. `data.ignore_label: 255`
  leaves those pixels out of training and scoring, `data.classes` listing it trains it as a class.
- Stray values: a found foreground value in at most STRAY_FILES of the mask files (at least one file) covering
  less than STRAY_PIXELS of their pixels, like a few pixels of a stray value in one mask or hundreds of scattered
  values (not lining the class borders, as the soft edges of a resized mask do). Not when it is the only foreground
  value.

Declared classes (`data.classes`), `data.foreground: nonzero` and `data.instances: true` skip these checks; values
that declared classes do not list are refused file by file (soft edges in one problem).

Declared or not, palette-indexed masks whose palettes give an index different colours (a tool that reordered the
palette of some files, so the colours shown agree and the indices do not) are refused: read by index, as they are,
their classes would be swapped (`palette_problems`); so are palette masks that show an index as the grey value other
masks store (`shown_value_problems`).
"""

from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from unetflow.data.data_warnings import short_name
from unetflow.data.soft_edges import soft_edge_problem
from unetflow.io.images import is_one_bit, mask_palette
from unetflow.io.labels import class_values
from unetflow.io.sources import read_source_mask

INSTANCE_MIN_VALUES = 10     # a mask with at least this many non-zero values ...
INSTANCE_REGION_SHARE = 0.8  # ... of which at least this share are objects is instance-labelled
OBJECT_MIN_PIXELS = 4        # an object: a value forming one connected region of at least this many pixels
FEW_IDS_COUNTS = 3           # 2D masks holding ids 1..n with at least this many different n are instance-labelled
STRAY_FILES = 0.05           # a found value in at most this share of the mask files (at least one) ...
STRAY_PIXELS = 0.01          # ... covering less than this share of their pixels is a stray value
SMALL_CLASS_VALUE = 50       # 255 beside foreground values no larger than this is called an unannotated mark
MIXED_FILES = 0.1            # groups of values no mask mixes, each in at least this share of the masks, are refused
EXAMPLES = 3                 # files named as examples in a message
NONZERO_FIX = "set data.foreground: nonzero to train every non-zero value as one foreground class"


def listed(values: list, limit: int = 5) -> str:
    """'7', '1, 2, 3' or '253 values (1, 2, 3, 4, 5, ...)': values for a message, a long list shortened."""
    if len(values) <= limit:
        return ", ".join(map(str, values))
    return f"{len(values)} values ({', '.join(map(str, values[:limit]))}, ...)"


# ------------------------------------------------------------------------------------------- instance masks


def is_object(pixels: np.ndarray) -> bool:
    """Whether a value's pixels (a boolean crop, 2D or 3D) form one connected region (8- or 26-neighbourhood) of at
    least OBJECT_MIN_PIXELS."""
    neighbours = np.ones((3,) * pixels.ndim, bool)
    return pixels.sum() >= OBJECT_MIN_PIXELS and ndimage.label(pixels, structure=neighbours)[1] == 1


def object_values(labels: np.ndarray, foreground: set[int]) -> tuple[int, int]:
    """(number of foreground values, how many of them are one object each) of a label image (2D or 3D): objects of
    one id that touch objects of another id still count one each."""
    boxes = ndimage.find_objects(labels)
    values = [value for value, box in enumerate(boxes, start=1) if box is not None and value in foreground]
    return len(values), sum(is_object(labels[boxes[value - 1]] == value) for value in values)


def instance_masks(rows: list[dict], foreground: set[int]) -> list[tuple[str, str, int, int]]:
    """(mask file, its slice in words, values, values that are one object each) of every mask (a slice of a stack or
    volume counts on its own) that looks instance-labelled; only masks with INSTANCE_MIN_VALUES foreground values are
    read (again)."""
    found = []
    for row in rows:
        if len(set(row["label_values"]) & foreground) < INSTANCE_MIN_VALUES:
            continue
        planes = read_source_mask(row)
        for index, plane in enumerate(planes):
            values, single = object_values(plane, foreground)
            if values and single >= INSTANCE_REGION_SHARE * values:
                found.append((row["mask_path"], f" slice {index}" if len(planes) > 1 else "", values, single))
    return found


def few_ids_masks(rows: list[dict], foreground: set[int]) -> list[tuple[str, str, int, int]]:
    """(mask file, '', values, values that are one object each) of every non-empty mask when their counts of values
    differ (FEW_IDS_COUNTS at least), INSTANCE_REGION_SHARE of them hold the ids 1..n and of all their values are one
    object each, in 3D for a stack or volume (masks of a few objects, which `instance_masks` does not read); else
    []."""
    held = {row["mask_path"]: set(row["label_values"]) & foreground for row in rows}
    counts = [len(values) for values in held.values() if values]
    numbered = sum(values == set(range(1, len(values) + 1)) for values in held.values() if values)
    if len(set(counts)) < FEW_IDS_COUNTS or numbered < INSTANCE_REGION_SHARE * len(counts):
        return []
    found = [(row["mask_path"], "", *object_values(squeezed(read_source_mask(row)), foreground))
             for row in rows if held[row["mask_path"]]]
    objects = sum(single for *_, single in found)
    return found if objects >= INSTANCE_REGION_SHARE * sum(values for _, _, values, _ in found) else []


def squeezed(planes: np.ndarray) -> np.ndarray:
    """A mask's planes (Z, Y, X) as one plane when it has one."""
    return planes[0] if len(planes) == 1 else planes


def instance_problem(rows: list[dict], foreground: set[int]) -> str | None:
    """The problem when masks look instance-labelled, with counts and a few examples; else None."""
    many = instance_masks(rows, foreground)
    found = many or few_ids_masks(rows, foreground)
    if not found:
        return None
    counts = [values for _, _, values, _ in found]
    few = "" if many else f" (the masks hold ids 1..n, n from {min(counts)} to {max(counts)})"
    examples = "; ".join(f"{path}{where}: {values} values, {single} of them one object each"
                         for path, where, values, single in sorted(found, key=lambda item: -item[2])[:EXAMPLES])
    files = len({path for path, *_ in found})
    return (f"{files} of {len(rows)} masks look instance-labelled (one id per object, not one value per "
            f"class), e.g. {examples}; trained as they are, the data set would have {len(foreground) + 1} classes"
            f"{few}. "
            f"Set data.instances: true to train and predict them as objects (the instance mode: the U-Net paper's "
            f"border weights, or background / interior / boundary with data.instance_target: three_class; "
            f"watershed, object metrics), or {NONZERO_FIX}; if the values are classes, declare them in data.classes")


# ------------------------------------------------------------------------------------- encodings and strays


def foreground_by_file(rows: list[dict], foreground: set[int]) -> dict[str, set[int]]:
    """{mask file: the foreground values found in it}."""
    found = defaultdict(set)
    for row in rows:
        found[row["mask_path"]] |= set(row["label_values"]) & foreground
    return dict(found)


def encoding_problem(rows: list[dict], foreground: set[int]) -> str | None:
    """The problem when every mask holds one foreground value but not all the same one; else None."""
    per_file = foreground_by_file(rows, foreground)
    if len(foreground) < 2 or max(map(len, per_file.values())) > 1:
        return None
    holders = {value: sorted(f for f, found in per_file.items() if value in found) for value in sorted(foreground)}
    counts = "; ".join(f"{value} in {len(files)} file(s) (e.g. {short_name(Path(files[0]))})"
                       f"{one_bit_note(value, files)}" for value, files in holders.items() if files)
    return (f"every mask holds one foreground value, but not the same one: {counts}. If they mean one structure, "
            f"{NONZERO_FIX}; if they are different classes, declare them in data.classes")


def value_groups(per_file: dict[str, set[int]]) -> list[tuple[list[int], list[str]]]:
    """The foreground values that share a mask, grouped (values that some mask holds together are one group), with
    the files holding each group's values: (values, files), most files first."""
    groups = []  # [(values, files)]
    for file, found in sorted(per_file.items()):
        joined = [group for group in groups if group[0] & found]
        groups = [group for group in groups if not group[0] & found] + [
            (set(found).union(*(values for values, _ in joined)), [file, *(f for _, files in joined for f in files)])]
    return sorted(((sorted(values), sorted(files)) for values, files in groups if values), key=lambda g: -len(g[1]))


def mixed_encoding_problem(rows: list[dict], foreground: set[int]) -> str | None:
    """The problem when the masks fall into groups of foreground values that no mask mixes (0/1/2 in some files,
    0/128/255 in others: two annotators or tools), the two largest each in at least MIXED_FILES of the masks; else
    None."""
    groups = value_groups(foreground_by_file(rows, foreground))
    files = sum(len(holders) for _, holders in groups)
    if len(groups) < 2 or len(groups[1][1]) < MIXED_FILES * files:
        return None
    named = "; ".join(f"values {listed(values)} in {len(holders)} file(s) (e.g. {short_name(Path(holders[0]))})"
                      for values, holders in groups[:EXAMPLES])
    (first, _), (second, _) = groups[:2]
    mapping = ", ".join(f"{b} -> {a}" for a, b in zip(first, second)) if len(first) == len(second) else ""
    same = f" (in the order of their values: {mapping}; check one mask of each, the order may differ)" * bool(mapping)
    return (f"the masks store their foreground in {len(groups)} ways that no mask mixes: {named}; trained as they "
            f"are, the data set would have {len(foreground) + 1} classes, each in part of the masks only. If they "
            f"are the same classes saved differently (two annotators or tools), save one group's masks with the "
            f"other's values{same}; if they are different classes, declare them in data.classes")


def one_bit_note(value: int, files: list[str]) -> str:
    """For the files holding 255: how many of them are 1-bit masks, whose set pixels are read as 255."""
    one_bit = sum(map(is_one_bit, files)) if value == 255 else 0
    return f", {one_bit} of them 1-bit masks, read as 0/255" if one_bit else ""


def unannotated_problem(rows: list[dict], foreground: set[int]) -> str | None:
    """The problem when 255 occurs beside small class values only (0/1/2/255), these in at least half of the mask
    files; else None."""
    small, per_file = foreground - {255}, foreground_by_file(rows, foreground)
    if 255 not in foreground or not small or max(small) > SMALL_CLASS_VALUE or \
            sum(bool(found & small) for found in per_file.values()) < len(per_file) / 2:
        return None
    files = sorted(file for file, found in per_file.items() if 255 in found)
    names = ", ".join(short_name(Path(file)) for file in files[:EXAMPLES]) + (", ..." if len(files) > EXAMPLES else "")
    return (f"the masks hold the class values {listed(sorted(small))} and 255 ({len(files)} file(s), e.g. {names}), "
            f"which usually marks pixels nobody annotated; set data.ignore_label: 255 to leave them out of training "
            f"and scoring, or declare data.classes listing 255 to train it as a class")


def pixels_by_value(rows: list[dict]) -> dict[str, dict[int, int]]:
    """{mask file: {value: pixel count}} from the manifest rows' label fractions."""
    pixels = defaultdict(lambda: defaultdict(int))
    for row in rows:
        area = row["slices"] * row["height"] * row["width"]
        for value, fraction in zip(row["label_values"], row["label_fractions"]):
            pixels[row["mask_path"]][value] += round(fraction * area)
    return pixels


def stray_values(rows: list[dict], foreground: set[int]) -> dict[str, list[int]]:
    """{mask file: the stray values it holds} (see the module docstring)."""
    pixels = pixels_by_value(rows)
    area = {file: sum(counts.values()) for file, counts in pixels.items()}
    strays = defaultdict(list)
    for value in sorted(foreground) if len(foreground) > 1 else []:
        holders = [file for file, counts in pixels.items() if counts.get(value)]
        share = sum(pixels[file][value] for file in holders) / sum(area[file] for file in holders)
        if len(holders) <= max(1, STRAY_FILES * len(pixels)) and share < STRAY_PIXELS:
            for file in holders:
                strays[file].append(value)
    return dict(sorted(strays.items()))


def stray_problem(file: str, values: list[int], pixels: dict[int, int]) -> str:
    """The problem of a mask file holding stray values: the values and their pixel count (`pixels`: the file's
    {value: pixel count})."""
    count = sum(pixels[value] for value in values)
    return (f"{file}: mask value(s) {listed(values)} on {count} pixel(s), found in no more than {STRAY_FILES:.0%} "
            f"of the masks: stray values, each would be trained as a class of its own; clean the mask, or declare "
            f"data.classes (listing them if they are classes)")


def undeclared_value_problems(rows: list[dict], classes) -> list[str]:
    """Problems with found values that are not classes: soft edges of resized masks, else instance-labelled masks
    (each reported alone), else stray values and, of the values left, the foreground encoded differently by file
    (one value each, or groups of values), else 255 as the unannotated mark."""
    foreground = set(class_values(classes)[1:])
    if problem := soft_edge_problem(rows) or instance_problem(rows, foreground):
        return [problem]
    strays = stray_values(rows, foreground)
    left = foreground - {value for values in strays.values() for value in values}
    cleaned = [dict(row, label_values=[v for v in row["label_values"] if v in left or v not in foreground])
               for row in rows]
    problem = encoding_problem(cleaned, left) or mixed_encoding_problem(cleaned, left) or \
        unannotated_problem(cleaned, left)
    pixels = pixels_by_value(rows)
    return [problem] * bool(problem) + [stray_problem(file, values, pixels[file]) for file, values in strays.items()]


# ------------------------------------------------------------------------------------------------- palettes


def palette_colours(mask, values: list[int]) -> list[list[int]] | None:
    """[value, r, g, b] of each of the `values` found in a palette-indexed mask file; None for other masks and for
    palettes that show each of the values as its own grey (a tool's default palette, no colour meaning anything)."""
    palette = mask_palette(mask)
    found = [] if palette is None else [[v, *palette[3 * v:3 * v + 3]] for v in values if 3 * v + 3 <= len(palette)]
    return found if any(colour != [v, v, v] for v, *colour in found) else None


def shown_value_problems(rows: list[dict]) -> dict[str, str]:
    """{mask file: its problem} of every palette mask that shows a non-zero index as the grey value other masks
    store, and no other mask stores the index (index 1 shown white, 255, beside 0/255 masks): read by index, as
    palette masks are, its objects would be another class."""
    stored = {value for row in rows if not row.get("palette_colours") for value in row["label_values"]}
    problems = {}
    for row in rows:
        shown = [(v, r) for v, r, g, b in row.get("palette_colours") or []
                 if v and r == g == b != v and r in stored and v not in stored]
        if shown:
            named = ", ".join(f"index {v} as {r}" for v, r in shown)
            problems[row["mask_path"]] = (
                f"{row['mask_path']}: a palette (indexed) mask that shows {named}, the value(s) the other masks "
                f"store; read by index, as palette masks are, its objects would be another class (or, snapped, "
                f"background): save it as a PNG of the grey values it shows (e.g. with Pillow: "
                f"Image.open(path).convert('L').save('mask.png'))")
    return problems


def palette_problems(rows: list[dict]) -> list[str]:
    """The problem when palette masks give one index different colours (rows' `palette_colours`), naming a few."""
    colours = defaultdict(dict)  # index -> {colour: the first file giving it}
    for row in rows:
        for value, *colour in row.get("palette_colours") or []:
            colours[value].setdefault(tuple(colour), short_name(Path(row["mask_path"])))
    differ = [(value, found) for value, found in sorted(colours.items()) if len(found) > 1][:EXAMPLES]
    if not differ:
        return []
    named = "; ".join(f"index {value} is " + ", ".join(f"{list(colour)} in {file}" for colour, file in
                                                       list(found.items())[:EXAMPLES]) for value, found in differ)
    return [f"the palette masks disagree on what their indices look like ({named}); classes are read by palette "
            f"index, so these masks would swap classes: if the colours are the classes, declare them in data.colors "
            f"({{name: [r, g, b]}}); if the indices are, save the masks with one palette"]
