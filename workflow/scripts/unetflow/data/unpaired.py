"""Files without a partner. Images without a mask: a problem of the data set, or, with `data.unpaired: skip` (a folder
where only some images are annotated yet, a QuPath project's unannotated slides), left out with a log line naming
them. Masks without an image. Either, when its partner is there in a format unetflow does not read, says so. The
naming rule both ways: a mask's stem is the prefix, its image's stem and a suffix (`match_by_stem`, `match_mask`)."""

import logging
from pathlib import Path

from unetflow.io.formats import case_stem

log = logging.getLogger("unetflow.data.unpaired")


class UnpairedImage(str):
    """The problem of an image without a mask (its message, a str), with the `image` it names."""

    def __new__(cls, message: str, image):
        problem = super().__new__(cls, message)
        problem.image = Path(image)
        return problem


def kept_problems(problems: list[str], unpaired: str) -> list[str]:
    """The problems, but with `unpaired` 'skip' those of images without a mask, which are logged as left out."""
    if unpaired != "skip":
        return problems
    skipped = [problem.image for problem in problems if isinstance(problem, UnpairedImage)]
    if skipped:
        shown = ", ".join(str(image) for image in skipped[:5])
        log.warning("%d image(s) without a mask left out (data.unpaired: skip): %s%s", len(skipped), shown,
                    ", ..." if len(skipped) > 5 else "")
    return [problem for problem in problems if not isinstance(problem, UnpairedImage)]


def match_by_stem(stem: str, candidates: dict[str, list[Path]], prefix: str, suffixes) -> list[Path]:
    """The candidate files whose stem is prefix + stem + one of the suffixes (the masks an image's stem names)."""
    return [p for s in suffixes for p in candidates.get(prefix + stem + s, [])]


def match_mask(mask: Path, images: dict[str, list[Path]], prefix: str, suffixes) -> list[Path]:
    """The images (by stem) whose mask `mask` would be: its stem is prefix + their stem + one of the suffixes."""
    stem = case_stem(mask)
    return [image for suffix in suffixes if stem.startswith(prefix) and stem.endswith(suffix)
            for image in images.get(stem[len(prefix):len(stem) - len(suffix)], [])]


def unpaired_mask(mask: Path, unread_image: Path | None = None) -> str:
    """The problem of a mask no image pairs with: its image may be in a format not read (`unread_image`); a folder
    (read as one mask file per object) may be a stack saved one file per slice, whose image folder is not read
    either."""
    if unread_image is not None:
        return (f"{mask}: its image {unread_image} is in a format unetflow does not read "
                f"({unread_image.suffix}): convert it to PNG or TIFF (a volume to NIfTI)")
    problem = f"{mask}: mask without an image (no image with a matching stem); remove it or add its image"
    if mask.is_dir():
        problem += (f"; it is a folder, read as one mask file per object: if it holds the slices of a stack (as "
                    f"an image folder of that name would), save the image and the mask each as one multi-page TIFF "
                    f"(tifffile.imwrite('{mask.name}.tif', numpy.stack(slices)))")
    return problem


def by_stem(paths) -> dict[str, list[Path]]:
    """{file name without its last suffix: the files}."""
    found = {}
    for path in paths:
        found.setdefault(path.stem, []).append(path)
    return found


def unread_partner_problem(file: Path, stem: str, unread: dict[str, list[Path]], prefix: str, suffixes) -> str | None:
    """For an image without a mask (`stem`: its case): the problem when it is the mask of an image in a format not
    read (its stem is prefix + that image's stem + a mask suffix, in a folder of images and masks), or when its mask is
    in such a format (an `UnpairedImage`); else None. `unread`: those files by their stem (`by_stem`)."""
    image = next(iter(match_mask(file, unread, prefix, [suffix for suffix in suffixes if suffix])), None)
    if image is not None:
        return unpaired_mask(file, image)
    mask = next(iter(match_by_stem(stem, unread, prefix, suffixes)), None)
    if mask is None:
        return None
    return UnpairedImage(f"{file}: its mask {mask} is in a format unetflow does not read ({mask.suffix}): save it as "
                         f"PNG or TIFF (a volume as NIfTI)", file)
