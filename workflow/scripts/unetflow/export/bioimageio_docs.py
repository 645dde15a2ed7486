"""What a bioimage.io export says about itself: the steps of unetflow's prediction it cannot carry (for one package),
its documentation (README.md) and its cover image (input and prediction side by side)."""

from pathlib import Path

import numpy as np
from PIL import Image

from unetflow.evaluate.report import class_colour
from unetflow.infer.package import Package
from unetflow.infer.predictor import labels_of

COVER_SIDE = 256  # each half of the 2:1 cover


def output_names(package: Package) -> list[str]:
    """The names of the output channels: the trained classes, or the regions of a region model."""
    if package.regions is not None:
        return list(package.regions.names)
    return package.classes.loc[~package.classes["ignore"].astype(bool), "name"].astype(str).tolist()


def input_grid(package: Package) -> str:
    """The grid images must be given on, in words."""
    settings, dims = package.preprocess, len(package.patches[0])
    if dims == 3 or settings["spacing"] is not None:
        spacing = settings["spacing"]
        return "as they are" if spacing is None else f"resampled to the voxel spacing {spacing} (x, y, z)"
    factor = settings["scale"] * package.resolutions[0]
    return "as they are" if factor == 1 else f"resized by {factor:g} (each side)"


def not_carried(package: Package) -> list[str]:
    """The steps of unetflow's prediction of this package that the bioimage.io model does not carry, each with what a
    user does instead."""
    notes = ["Labels: the model outputs one probability map per channel; unetflow's masks are "
             + ("their argmax" if package.regions is None else "the regions above 0.5 written as labels in order")
             + ", which bioimage.io postprocessing cannot express: take it yourself (e.g. a deepImageJ "
               "postprocessing macro, a threshold in Fiji)."]
    if input_grid(package) != "as they are":
        notes.append(f"Resampling: give images {input_grid(package)} (bioimage.io preprocessing cannot resample); "
                     "the outputs are on that grid.")
    settings = package.preprocess
    if settings["normalization"] == "zscore" and settings["clip_percentiles"] is not None:
        notes.append(f"Normalisation: unetflow clips each image to its {settings['clip_percentiles']} percentiles, "
                     "then takes the z-score of the clipped image; bioimage.io takes the mean and standard deviation "
                     "of the unclipped one (every step's statistics come from the unprocessed image), so images with "
                     "many outliers are normalised a little differently.")
    if settings["normalization"] == "zscore_nonzero":
        notes.append("Normalisation: unetflow takes the mean and standard deviation of the non-zero voxels only and "
                     "keeps the zero voxels 0 (a skull-stripped scan); bioimage.io's z-score takes every voxel, so "
                     "crop images to their non-zero box first, or expect a shift where the background is large.")
    if package.convert_channels:
        notes.append(f"Channel conversion: give {package.input_channels}-channel images (unetflow converted RGB and "
                     "grey images automatically).")
    if len(package.patches[0]) == 2:
        notes.append("Volumes and stacks: the model is 2D; predict them slice by slice.")
    if package.instance_target:
        notes.append(f"Objects: the outputs are the '{package.instance_target}' instance target; unetflow separates "
                     "touching objects by a watershed from it (object probability "
                     f"{package.object_probability:g}, min_object_size {package.predict['min_object_size']}), "
                     "which bioimage.io cannot express.")
    if package.predict["largest_component"]:
        notes.append("Largest component: unetflow keeps only the largest component of each class; do it yourself.")
    notes.append(f"Tiling: unetflow predicts tiles of the training patch {list(package.patches[0])}; a runtime that "
                 "gives the network a whole larger image at once (bioimageio.core's default) sees more context than "
                 "in training, and its masks differ from unetflow's by far more than at tiles: tile at the patch "
                 "size (bioimageio.core: `blocksize_parameter` 0 or 1). Runtimes also pad the image by the halo "
                 "(unetflow does not) and crop the halo off each tile instead of unetflow's Gaussian-weighted "
                 "overlap, so probabilities still differ a little at the image's border and at tile seams.")
    return notes


def documentation(package: Package, preprocessing: list, notes: list[str], multiples: list[int]) -> str:
    """The README.md of the export."""
    patch, data = package.patches[0], package.training_data
    steps = ", ".join(f"{step.id} ({step.kwargs.model_dump(exclude_none=True, exclude_defaults=True)})"
                      for step in preprocessing)
    return "\n".join([
        f"# {len(patch)}D U-Net from unetflow", "",
        f"An ensemble of {len(package.models)} U-Net(s) (Ronneberger et al. 2015) trained by unetflow, exported from "
        f"the model package `{Path(package.path).name}`.", "",
        "## Input", "",
        f"- {package.input_channels} channel(s), {len(patch)}D, given {input_grid(package)}.",
        f"- Preprocessing (each image and channel): {steps}.",
        f"- Tiles: at least the training patch {patch}, in steps of {multiples} (the network's divisibility); a "
        f"quarter of the patch is cropped from each side of a tile's output (the halo).", "",
        "## Output", "",
        f"- Probabilities (mean over the ensemble{', mirrored' if package.predict['mirror'] else ''}) of: "
        f"{', '.join(output_names(package))}.", "",
        "## What this model does not carry", "", *[f"- {note}" for note in notes], "",
        "## Validation", "",
        "The export kept this model only after bioimageio.core's model test passed on it: the test output was "
        "computed by the exported TorchScript weights from the test input (cut from a real image), and both weight "
        "formats reproduce it; unetflow's tests check that the exported model's output equals unetflow's own "
        "prediction of the same image.", "",
        "## Training data", "",
        f"{data['sources']} source(s) ({', '.join(data['kinds'])}), median size {data['height_median']:g} x "
        f"{data['width_median']:g} pixels, foreground share {data['foreground_fraction_mean']:.2f}.", "",
        f"Made with {', '.join(f'{name} {version}' for name, version in package.versions.items())}.", ""])


def cover_image(test_input: np.ndarray, probabilities: np.ndarray, package: Package, path) -> None:
    """A 2:1 PNG: the test input (its first channel, or RGB, contrast stretched; a volume's middle slice) beside
    the prediction's labels in the class colours."""
    image, probs = test_input[0], probabilities[0]
    if image.ndim == 4:  # (C, Z, Y, X): the middle slice
        image, probs = image[:, image.shape[1] // 2], probs[:, probs.shape[1] // 2]
    low, high = np.percentile(image, [1, 99])
    grey = np.clip((image - low) / max(high - low, 1e-8), 0, 1)
    picture = np.moveaxis(grey[:3] if grey.shape[0] == 3 else grey[[0, 0, 0]], 0, -1)
    labels = labels_of(probs, package.regions)
    colours = np.array([(0.0, 0.0, 0.0)] + [class_colour(c)[:3] for c in range(1, int(labels.max()) + 2)])
    halves = [Image.fromarray((array * 255).astype(np.uint8)).resize((COVER_SIDE, COVER_SIDE), Image.NEAREST)
              for array in (picture, colours[labels])]
    cover = Image.new("RGB", (2 * COVER_SIDE, COVER_SIDE))
    for number, half in enumerate(halves):
        cover.paste(half, (number * COVER_SIDE, 0))
    cover.save(path)
