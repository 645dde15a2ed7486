"""How `infer.slide_tissue: auto` reads images without colour taken as slides' smallest levels: for each image of a
folder, which side of Otsu's threshold it calls tissue and why (texture or edge), and with masks (paired by file name)
the share of the masked pixels (objects) and of the rest inside the tissue found. `--composite`: each image is first
put into the blue channel of an RGB image (the others 0), as the DAPI channel of a fluorescence composite.

    python bench/tissue_sides.py ../shared/data/dsb2018_fluo/images --masks ../shared/data/dsb2018_fluo/masks
    python bench/tissue_sides.py ../shared/data/dsb2018_fluo/images --masks ../shared/data/dsb2018_fluo/masks \
        --composite

Prints one line per (side, reason) with its image count and the mean shares; the figures: docs/slides.md.
"""

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.infer.slide_tissue import tissue_mask  # noqa: E402
from unetflow.io.images import read_image  # noqa: E402


def image_row(path: Path, masks: Path | None, composite: bool) -> dict:
    """How one image's tissue is found (`composite`: in an RGB image's blue channel), and with a mask the shares of
    its objects and of the rest inside it."""
    overview = np.moveaxis(read_image(path), -1, 0)
    if composite:
        overview = np.concatenate([np.zeros((2, *overview.shape[1:]), overview.dtype), overview[:1]])
    mask, how = tissue_mask(overview, name=path.name)
    reason = "texture" if "texture" in how else "edge" if "edge" in how else "saturation or none"
    row = dict(image=path.name, found=f"{how.split(' (')[0]}: {reason}")
    if masks is not None:
        objects = read_image(next(masks.glob(f"{path.stem}.*")))[..., 0] > 0
        row.update(objects_inside=mask[objects].mean(), rest_inside=mask[~objects].mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="a folder of images without colour")
    parser.add_argument("--masks", type=Path, default=None, help="their masks (object pixels nonzero), by file stem")
    parser.add_argument("--composite", action="store_true", help="each image as the blue channel of an RGB image")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    paths = [path for path in sorted(args.images.iterdir()) if path.is_file()]
    rows = pd.DataFrame([image_row(path, args.masks, args.composite) for path in paths])
    summary = rows.groupby("found").agg(images=("image", "size"), **(
        dict(objects_inside=("objects_inside", "mean"), rest_inside=("rest_inside", "mean")) if args.masks else {}))
    print(summary.to_string(float_format="%.3f"))


if __name__ == "__main__":
    main()
