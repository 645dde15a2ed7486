"""Images to segment: listed from a folder, a glob or a manifest (`listed_images`), spread over shards by a hash of
their paths (`shard_of`), their outputs named by their path below the folder of the specification
(`unetflow.data.pairing.input_root`, `output_name`). Dependency-light: the Snakefile lists them."""

import hashlib
import os
from pathlib import Path

from unetflow.data.pairing import DataValidationError, image_files, read_manifest_file
from unetflow.io.formats import case_stem, is_series


def listed_images(spec: str) -> list[Path]:
    """Images to segment (no masks, whole-slide scanner files among them): a folder (its direct children), a glob,
    or a CSV/Parquet manifest whose `image` column lists them relative to its folder."""
    if spec.lower().endswith((".csv", ".parquet")) and Path(spec).is_file():
        rows, folder = read_manifest_file(spec, ("image",), "infer.images"), Path(spec).parent
        listed = [folder / str(row["image"]) for row in rows]
        missing = [str(path) for path in listed if not (path.is_file() or is_series(path))]
        if missing:
            raise DataValidationError(f"infer.images '{spec}': {len(missing)} listed image(s) do not exist: "
                                      f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        return listed
    return image_files(spec)


def shard_of(path, shards: int) -> int:
    """The shard (0..shards-1) of a file: a hash of its path as listed, so adding files never moves the others
    (MD5, which spreads numbered file names evenly; CRC32 does not)."""
    return int.from_bytes(hashlib.md5(str(path).encode()).digest()[:8], "little") % shards


def output_name(path: Path, root: Path) -> str:
    """The name an image's outputs get: its path below `root` without the image suffix ('siteA/scan1'), or its stem
    for a file outside `root`."""
    try:
        relative = Path(os.path.relpath(path, root))
    except ValueError:  # another drive
        relative = Path(path.name)
    if not relative.parts or relative.parts[0] == "..":  # the root itself (a series named by a glob), or outside
        relative = Path(path.name)
    return (relative.parent / case_stem(path)).as_posix()
