"""Where a slide's tissue lies (`infer.slide_tissue`): RGB by its stain, grey and fluorescence slides by texture or,
where both sides are equally flat, by the background their edge shows; a warning where neither tells; the rule
named by the user otherwise."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from unetflow.infer.slide_tissue import tissue_mask

SHAPE = (60, 80)


def textured(rng, shape, level: float, contrast: float) -> np.ndarray:
    """A field (H, W) around `level`: structure of about 2 px with deviation `contrast`, and a camera noise of 2."""
    structure = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.0)
    return level + contrast * structure / structure.std() + rng.normal(0, 2, shape)


def grey_overview(tissue: np.ndarray, channels: int, tissue_level: float, background_level: float,
                  seed: int = 0) -> np.ndarray:
    """A uint8 overview (C, H, W): textured tissue where `tissue` (H, W) is set, a flat background elsewhere."""
    rng = np.random.default_rng(seed)
    background = background_level + rng.normal(0, 2, tissue.shape)
    pixels = np.where(tissue, textured(rng, tissue.shape, tissue_level, 25), background)
    return np.clip(np.repeat(pixels[None], channels, axis=0), 0, 255).astype(np.uint8)


def tissue_to_the_edge() -> np.ndarray:
    """Tissue over three sides of the slide and half of the fourth: glass only in a bay reaching the right edge."""
    tissue = np.ones(SHAPE, bool)
    tissue[15:45, 45:] = False
    return tissue


@pytest.mark.parametrize("channels,tissue,background", [(1, 90, 230), (1, 160, 10), (2, 120, 5)],
                         ids=["grey brightfield", "grey fluorescence", "two-channel fluorescence"])
def test_the_tissue_of_slides_without_colour_lies_away_from_the_background_their_edge_shows(channels, tissue,
                                                                                           background):
    rng = np.random.default_rng(0)
    overview = np.full((channels, 40, 60), background, np.float32)
    overview[:, 10:30, 10:40] = tissue  # flat tissue, as flat as its background: the edge decides
    overview = np.clip(overview + rng.normal(0, 8, overview.shape), 0, 255).astype(np.uint8)
    expected = np.zeros((40, 60), bool)
    expected[10:30, 10:40] = True
    mask, how = tissue_mask(overview)
    assert (mask == expected).mean() > 0.99  # Otsu's threshold may cut a few pixels off the edge
    assert "of the slide's edge is" in how


def test_sparse_bright_nuclei_do_not_take_the_tissue_threshold_of_a_fluorescence_slide():
    rng = np.random.default_rng(0)
    overview = rng.normal(6, 2, (1, 120, 180))  # a dark background
    overview[:, 10:110, 10:100] += 25  # faint tissue, with a few bright nuclei of 1-2 px
    for y, x in zip(rng.integers(12, 108, 60), rng.integers(12, 98, 60)):
        overview[:, y - 1:y + 1, x - 1:x + 1] = 180
    mask, _ = tissue_mask(np.clip(overview, 0, 255).astype(np.uint8))
    assert mask[12:108, 12:98].mean() > 0.99 and mask[:, 102:].mean() < 0.01  # the tissue, not only its nuclei


@pytest.mark.parametrize("channels,tissue,background", [(1, 110, 235), (1, 120, 8), (2, 90, 5)],
                         ids=["grey brightfield", "grey fluorescence", "two-channel fluorescence"])
def test_tissue_covering_most_of_the_edge_is_found_by_its_texture(channels, tissue, background, caplog):
    expected = tissue_to_the_edge()
    assert expected[0].all() and expected[-1].all() and expected[:, 0].all()  # most of the edge shows tissue
    with caplog.at_level(logging.WARNING):
        mask, how = tissue_mask(grey_overview(expected, channels, tissue, background))
    assert (mask == expected).mean() > 0.97 and "more texture" in how and not caplog.text


def test_a_slide_whose_tissue_cannot_be_told_takes_the_edges_majority_and_names_the_setting(caplog):
    rng = np.random.default_rng(0)
    tissue = tissue_to_the_edge()
    overview = np.where(tissue, 90, 230) + rng.normal(0, 8, SHAPE)  # flat tissue, as flat as the glass
    with caplog.at_level(logging.WARNING):
        mask, _ = tissue_mask(np.clip(overview, 0, 255).astype(np.uint8)[None], name="flat.tif")
    assert (mask == ~tissue).mean() > 0.97  # the edge, mostly the darker tissue, is taken for the background
    assert "flat.tif: cannot tell the tissue" in caplog.text and "infer.slide_tissue" in caplog.text


def test_the_rule_named_by_the_user_wins():
    tissue = np.zeros(SHAPE, bool)
    tissue[10:50, 10:60] = True
    fluorescence = grey_overview(tissue, 1, 120, 8)
    assert (tissue_mask(fluorescence, "bright")[0] == tissue).mean() > 0.97
    assert (tissue_mask(fluorescence, "dark")[0] == ~tissue).mean() > 0.97  # as told, though it is the background
    assert tissue_mask(fluorescence, "all")[0].all()
    rgb = np.where(tissue, np.array([160, 60, 130])[:, None, None], 240).astype(np.uint8)  # pink on white glass
    assert (tissue_mask(rgb)[0] == tissue).all() and (tissue_mask(rgb, "dark")[0] == tissue).mean() > 0.97


def test_an_rgb_slide_without_colour_is_read_as_a_grey_one():
    expected = np.zeros(SHAPE, bool)
    expected[10:50, 10:60] = True
    grey = grey_overview(expected, 3, 110, 235)  # R = G = B, as a grey brightfield scan saved as RGB
    noisy = np.clip(grey + np.random.default_rng(1).normal(0, 1.5, grey.shape), 0, 255).astype(np.uint8)  # chroma
    mask, how = tissue_mask(noisy)
    assert (mask == expected).mean() > 0.97 and how.startswith("an RGB slide without colour: the dark side")


def test_an_rgb_fluorescence_composite_is_read_by_its_brightness_not_its_noises_hue():
    expected = np.zeros(SHAPE, bool)
    expected[10:50, 10:55] = True
    rng = np.random.default_rng(0)
    nuclei = np.zeros(SHAPE, bool)  # nuclei of 1-2 px at an overview's scale, where all three stains overlap
    for y, x in zip(rng.integers(11, 49, 20), rng.integers(11, 54, 20)):
        nuclei[y - 1:y + 1, x - 1:x + 1] = True
    green = np.where(expected, textured(rng, SHAPE, 80, 20), 0)  # a cytoplasm stain
    composite = rng.normal(4, 2, (3, *SHAPE)) + np.stack([0 * green, green, 0 * green])
    composite[:, nuclei] = [[150], [170], [200]]  # bright, hardly saturated
    mask, how = tissue_mask(np.clip(composite, 0, 255).astype(np.uint8))
    assert mask[nuclei].mean() > 0.97 and (mask == expected).mean() > 0.95  # not its dark noise's saturated hue
    assert how.startswith("an RGB slide on a dark field: the bright side")


def test_the_tissue_sides_benchmark_counts_how_each_image_was_read(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    for index in range(3):
        objects = np.zeros(SHAPE, bool)
        objects[10 + index:40, 15:50 + index] = True
        tifffile.imwrite(tmp_path / "images" / f"f{index}.tif", grey_overview(objects, 1, 120, 8, seed=index)[0])
        tifffile.imwrite(tmp_path / "masks" / f"f{index}.tif", objects.astype(np.uint8) * 255)
    script = Path(__file__).resolve().parents[1] / "bench" / "tissue_sides.py"
    for options, found in [([], "the bright side"), (["--composite"], "an RGB slide on a dark field: the bright side")]:
        result = subprocess.run([sys.executable, str(script), str(tmp_path / "images"), "--masks",
                                 str(tmp_path / "masks"), *options], capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        counted = next(line.split() for line in result.stdout.splitlines() if line.startswith(found))
        assert counted[-4:-2] == ["texture", "3"] and float(counted[-2]) > 0.95 and float(counted[-1]) < 0.05
