"""Inference on new images: model packages, the Python API, the command line, and the workflow's sharded `infer`
rules (same masks as `predict`, reruns limited to changed shards); the checks of the images: test_infer_checks.py."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from conftest import REPO, applied, build_manifest, job_counts, snakemake, tiny_config, write_config, write_ct_pair
from unetflow.data.infer_images import listed_images, output_name, shard_of
from unetflow.data.pairing import input_root
from unetflow.data.preprocess import preprocess_source
from unetflow.infer.infer import InferInputError, check_images
from unetflow.infer.package import FORMAT_VERSION, PackageError, build_package, load_package, save_package
from unetflow.infer.predictor import Predictor, model_probabilities
from unetflow.infer.summary import unit_summary
from unetflow.io.prediction_files import read_probabilities
from unetflow.io.sources import read_source_image, source_spacing
from unetflow.io.store import load_array
from unetflow.net.model import UNet

CLASSES = pd.DataFrame({"index": [0, 1], "name": ["background", "cell"], "value": [0, 255], "color": None,
                        "ignore": False})
PREDICT = dict(overlap=0.5, batch_size=2, mirror=True, precision="fp32", largest_component=False,
               min_object_size=16, object_probability=0.5)
ZSCORE = applied("zscore")  # per-image z-score, no resampling or scaling
PLAN = dict(device=dict(type="cpu", name="cpu", memory_bytes=None), traits={},
            settings=dict(resolution=dict(value=1.0, source="planned", reason="enough passes")))


def make_package(folder: Path, channels: int = 1, convert: bool = False, members: int = 2,
                 preprocess: dict = ZSCORE, classes: pd.DataFrame = CLASSES) -> Path:
    """A package of `members` small random U-Nets (patch 32x32) for `channels`-channel images, preprocessed as
    `preprocess` (the settings as applied), of the class table `classes` (an instance one: an instance package)."""
    checkpoints = []
    for seed in range(members):
        torch.manual_seed(seed)
        model = UNet(channels, len(classes), depth=2, base_width=4)
        checkpoints.append(str(folder / f"fold{seed}.pt"))
        torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=[32, 32], plan=PLAN),
                   checkpoints[-1])
    manifest = pd.DataFrame({"id": ["a"], "image_path": ["a.png"], "mask_path": ["a_mask.png"], "kind": ["image"],
                             "slices": [1], "height": [40], "width": [48], "channels": [channels],
                             "input_channels": [channels], "dtype": ["uint8"]})
    package = build_package(checkpoints, [f"m/fold{i}" for i in range(members)], PLAN, manifest,
                            pd.DataFrame({"foreground_fraction": [0.3]}), classes, preprocess, PREDICT,
                            dict(channels=channels if convert else None, slice_axis=2))
    return save_package(package, folder / "model.pt")


def write_images(folder: Path, count: int, seed: int = 0, size=(40, 48)) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{seed}_{i}.png" for i in range(count)]
    for path in paths:
        cv2.imwrite(str(path), rng.integers(0, 256, size, dtype=np.uint8))
    return paths


# ------------------------------------------------------------------------------------------------- packages


def test_package_loads_safely_with_everything_inference_needs(tmp_path):
    path = make_package(tmp_path)
    raw = torch.load(path, weights_only=True)  # no pickled code: plain values and tensors only
    assert raw["format_version"] == FORMAT_VERSION and len(raw["models"]) == 2
    package = load_package(path)
    assert package.patches == [[32, 32], [32, 32]] and package.input_channels == 1 and package.num_classes == 2
    assert package.classes["value"].tolist() == [0, 255] and package.predict == PREDICT
    assert package.preprocess == ZSCORE and package.plan == PLAN
    assert {"torch", "unetflow", "numpy", "python"} <= set(package.versions)
    assert package.versions["unetflow"].startswith("checkout ")  # and its commit: the code that made the package


def test_an_older_package_is_refused_saying_how_to_make_a_new_one(tmp_path):
    raw = torch.load(make_package(tmp_path), weights_only=True)
    torch.save(dict(raw, format_version=4), tmp_path / "old.pt")
    with pytest.raises(PackageError, match=r"old.pt: package format 4, .* reads format 5; make a new one with this "
                                           r"unetflow: run `snakemake --cores all`"):
        load_package(tmp_path / "old.pt")


def test_predict_array_is_the_ensemble_of_the_package_models(tmp_path):
    predictor = Predictor.load(make_package(tmp_path), "cpu")
    image = np.random.default_rng(1).integers(0, 256, (40, 48), dtype=np.uint8)
    labels, probs = predictor.predict_array(image)
    network = predictor.network_array(image[None, None])
    assert network.dtype == np.float16 and network.shape == (1, 1, 40, 48)  # as preprocessing stores sources
    expected = sum(model_probabilities(model, torch.from_numpy(network), [32, 32], PREDICT, torch.device("cpu"))
                   for model in predictor.models) / 2
    np.testing.assert_allclose(probs, expected[:, 0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels, expected[:, 0].argmax(0).numpy())


def test_a_resampled_ct_normalised_volume_is_segmented_on_the_arrays_preprocessing_stores(tmp_path):
    """A CT volume of another spacing than the package's target, rotated: the predictor normalises it with the
    package's CT statistics and resamples it exactly as preprocessing stored it for training, and brings the
    probabilities back onto the file's grid (the mask written with the input's header)."""
    _, affine = write_ct_pair(tmp_path, "scan", (40, 36, 4), (0.8, 0.8, 3.0), degrees=30)
    settings = applied("ct", spacing=[1.1, 1.1, 2.0], ct=dict(low=-50.0, high=200.0, mean=100.0, std=60.0))
    predictor = Predictor.load(make_package(tmp_path, preprocess=settings), "cpu")
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "labels"))
    row = manifest.iloc[0].to_dict()
    stored = preprocess_source(row, classes, str(tmp_path / "arrays"), settings)
    assert [stored["slices"], stored["height"], stored["width"]] == [6, 29, 26]  # 4 x 3 / 2, 40 x 0.8 / 1.1, ...
    network = predictor.network_array(read_source_image(row), source_spacing(row), 2)
    np.testing.assert_array_equal(network, load_array(stored["array_path"], "image"))
    probabilities = predictor.source_probabilities(row)
    assert probabilities.shape == (2, 4, 40, 36)  # the file's grid, slices first
    sources = check_images([tmp_path / "images" / "scan.nii.gz"], predictor.package)
    predictor.predict_sources(sources, tmp_path / "out", save_probabilities=True)
    np.testing.assert_array_equal(read_probabilities(tmp_path / "out" / "scan.npz"),
                                  probabilities.astype(np.float16).astype(np.float32))
    written = nib.load(tmp_path / "out" / "scan.nii.gz")
    assert np.array_equal(np.asarray(written.dataobj), 255 * np.moveaxis(probabilities.argmax(0), 0, 2))
    assert np.allclose(written.affine, affine)


@pytest.mark.parametrize("kind", ["missing", "truncated", "checkpoint", "png", "newer"])
def test_unusable_packages_are_refused_naming_the_file(tmp_path, kind):
    good = make_package(tmp_path)
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:2000])
    elif kind == "checkpoint":
        shutil.copy(tmp_path / "fold0.pt", path)
    elif kind == "png":
        write_images(tmp_path / "x", 1)[0].rename(path)
    elif kind == "newer":
        raw = torch.load(good, weights_only=True)
        torch.save(dict(raw, format_version=FORMAT_VERSION + 1), path)
    expected = {"missing": "no such model package", "truncated": "not a readable model package",
                "checkpoint": "training checkpoint", "png": "not a readable model package",
                "newer": r"update unetflow to the version that made it \(checkout "}[kind]
    with pytest.raises(PackageError, match=expected) as error:
        load_package(path)
    assert str(path) in str(error.value)


# ------------------------------------------------------------------------------------------------ outputs


def test_summary_counts_pixels_components_and_confidence():
    labels = np.zeros((6, 8), np.uint8)
    labels[0:2, 0:2], labels[4:6, 5:8] = 1, 1
    probs = torch.full((2, 6, 8), 0.5)
    probs[1][labels == 1], probs[0][labels == 1] = 0.9, 0.1
    source = dict(kind="image", image_path="a.png", slices=1, slice_axis=0)
    rows = {row["class_name"]: row for row in unit_summary("a", source, slice(0, 1), "a_mask.png", labels,
                                                            probs.max(0).values.numpy(), CLASSES)}
    assert rows["cell"]["pixels"] == 10 and rows["cell"]["components"] == 2
    assert rows["cell"]["confidence"] == pytest.approx(0.9) and rows["background"]["confidence"] == pytest.approx(0.5)
    assert np.isnan(rows["cell"]["physical_size"]) and rows["cell"]["physical_unit"] is None


# ------------------------------------------------------------------------------------------------ workflow


def infer_config(images: str, **infer) -> dict:
    """The tiny demo config segmenting `images`, by the demo's model unless `infer` names other models."""
    config = tiny_config()
    config["infer"] = dict(images=images, **{"models": ["unet"], **infer})
    return config


def run_infer(workdir: Path, config: dict, *args: str) -> str:
    return snakemake(workdir, "infer", *args, configfile=write_config(workdir, config, "infer.yaml")).stdout


def scheduled(workdir: Path, config: dict) -> dict[str, int]:
    """{rule: job count} a run of the `infer` target would execute."""
    return job_counts(workdir, config, "infer", name="infer.yaml")


@pytest.fixture(scope="module")
def inferred(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run that segmented its test images, copied without masks to new/, through `infer`."""
    workdir = tmp_path_factory.mktemp("inferred")
    shutil.copytree(tiny_run, workdir, symlinks=True, dirs_exist_ok=True)
    splits = pd.read_parquet(workdir / "results/split/splits.parquet")
    (workdir / "new").mkdir()
    for case_id in splits.loc[splits["split"] == "test", "id"]:
        shutil.copy(workdir / f"results/demo/images/{case_id}.png", workdir / "new" / f"{case_id}.png")
    config = infer_config("new", shards=3)
    assert set(scheduled(workdir, config)) == {"infer_check", "infer_list", "infer_shard", "infer_summary"}
    run_infer(workdir, config)
    return workdir


def masks_by_name(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.rglob("*.png")}


def test_infer_writes_the_masks_predict_writes_and_a_summary(inferred):
    predicted = masks_by_name(inferred / "results/unet/predict/masks")
    assert masks_by_name(inferred / "results/infer/unet/masks") == predicted and len(predicted) == 2
    summary = pd.read_parquet(inferred / "results/infer/unet/summary.parquet")
    assert sorted(summary["id"].unique()) == sorted(Path(name).stem for name in predicted)
    assert set(summary["class_name"]) == {"background", "foreground"}
    foreground = summary[summary["class"] == 1]
    assert (foreground["pixels"] > 0).all() and foreground["confidence"].between(0.5, 1).all()
    for row in foreground.itertuples():
        mask = cv2.imread(str(inferred / row.mask_path), cv2.IMREAD_UNCHANGED)
        assert (mask == 255).sum() == row.pixels
    assert scheduled(inferred, infer_config("new", shards=3)) == {}


def test_a_copied_package_segments_alike_in_the_workflow_the_api_and_the_command_line(inferred, tmp_path):
    package = tmp_path / "shared" / "cells.pt"
    package.parent.mkdir()
    shutil.copy(inferred / "results/unet/package/unet.pt", package)
    shutil.copytree(inferred / "new", tmp_path / "new")
    expected = masks_by_name(inferred / "results/infer/unet/masks")
    fresh = tmp_path / "fresh"  # no training results, no trained experiment
    fresh.mkdir()
    run_infer(fresh, infer_config(str(tmp_path / "new"), models=[str(package)]))
    assert masks_by_name(fresh / "results/infer/cells/masks") == expected
    assert not (fresh / "results/unet").exists()

    predictor = Predictor.load(package, "cpu")
    predictor.predict_sources(check_images(listed_images(str(tmp_path / "new")), predictor.package), tmp_path / "api")
    assert masks_by_name(tmp_path / "api") == expected

    command = [sys.executable, "-m", "unetflow.infer", "--model", str(package), "--input", str(tmp_path / "new"),
               "--output", str(tmp_path / "cli"), "--threads", "2"]
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO / "workflow/scripts")})
    assert result.returncode == 0, result.stderr
    assert masks_by_name(tmp_path / "cli") == expected
    assert len(pd.read_parquet(tmp_path / "cli" / "summary.parquet")) == 2 * len(expected)


def test_command_line_names_the_bad_package(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    result = subprocess.run([sys.executable, "-m", "unetflow.infer", "--model", str(bad), "--input", str(tmp_path),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO / "workflow/scripts")})
    assert result.returncode != 0 and f"error: {bad}: not a readable model package" in result.stderr


def shard_tables(workdir: Path) -> dict[str, int]:
    """{shard table name: its modification time} of the shard summaries (not their object tables)."""
    tables = (workdir / "results/infer/unet/shards").glob("shard*.parquet")
    return {path.name: path.stat().st_mtime_ns for path in tables if path.stem[5:].isdigit()}


def file_in_shard(shards: set[int], taken: bool, prefix: str) -> str:
    """A new file name whose shard (of 3) is in `shards` (taken) or not."""
    names = (f"new/{prefix}{i}.png" for i in range(1000))
    return next(name for name in names if (shard_of(name, 3) in shards) == taken)


def test_new_images_rerun_only_their_shards_and_removed_ones_leave_the_summary(inferred, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(inferred, workdir, symlinks=True)
    config = infer_config("new", shards=3)
    before = shard_tables(workdir)
    taken = {int(name[5:-8]) for name in before}
    added = file_in_shard(taken, True, "extra")
    time.sleep(1)  # a later modification time than every output
    shutil.copy(workdir / "results/demo/images/case_000.png", workdir / added)
    assert scheduled(workdir, config) == {"infer_list": 1, "infer_check": 1, "infer_shard": 1, "infer_summary": 1}
    run_infer(workdir, config)
    after = shard_tables(workdir)
    changed = f"shard{shard_of(added, 3)}.parquet"
    assert after[changed] > before[changed]
    assert {name: after[name] for name in before if name != changed} == \
        {name: before[name] for name in before if name != changed}  # the other shards were not predicted again

    alone = workdir / file_in_shard(taken, False, "alone")  # a shard of its own, then removed again
    shutil.copy(workdir / "results/demo/images/case_001.png", alone)
    run_infer(workdir, config)
    assert pd.read_parquet(workdir / "results/infer/unet/summary.parquet")["id"].nunique() == 4
    assert (workdir / "results/infer/unet/masks" / f"{alone.stem}.png").exists()
    alone.unlink()
    run_infer(workdir, config)
    assert not (workdir / "results/infer/unet/masks" / f"{alone.stem}.png").exists()  # removed with its image
    summary = pd.read_parquet(workdir / "results/infer/unet/summary.parquet")
    assert sorted(summary["id"].unique()) == sorted([*(Path(name).stem for name in masks_by_name(
        inferred / "results/infer/unet/masks")), Path(added).stem])
    assert scheduled(workdir, config) == {}


def test_numbered_files_spread_evenly_over_shards():
    counts = np.bincount([shard_of(f"scans/img{i:04d}.png", 8) for i in range(400)], minlength=8)
    assert counts.min() >= 30 and counts.max() <= 70  # 50 each on average


def test_a_manifest_naming_a_missing_image_is_refused(tmp_path):
    from unetflow.data.pairing import DataValidationError

    paths = write_images(tmp_path / "in", 1)
    (tmp_path / "list.csv").write_text(f"image\nin/{paths[0].name}\nin/gone.png\n")
    with pytest.raises(DataValidationError, match=r"1 listed image\(s\) do not exist: .*gone.png"):
        listed_images(str(tmp_path / "list.csv"))


def test_a_stack_page_and_a_file_of_the_same_name_are_refused(tmp_path):
    package = load_package(make_package(tmp_path))
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "x.tif", np.zeros((3, 20, 20), np.uint8), photometric="minisblack")
    cv2.imwrite(str(tmp_path / "in" / "x_s0.png"), np.zeros((20, 20), np.uint8))
    with pytest.raises(InferInputError, match="duplicate image name 'x_s0'"):
        check_images(listed_images(str(tmp_path / "in")), package)


def test_infer_without_images_is_refused_naming_the_key(tiny_run, tmp_path):
    result = snakemake(tiny_run, "infer", "--dry-run", check=False)
    assert result.returncode != 0 and "config key infer.images: set it" in result.stdout + result.stderr
    (tmp_path / "empty" / "site").mkdir(parents=True)  # an image one level down only: not named by the folder
    (tmp_path / "empty" / "site" / "a.png").write_bytes(b"")
    config = infer_config(str(tmp_path / "empty"))
    result = snakemake(tmp_path, "infer", "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0 and "no image files matched; 1 image file(s) in subfolders" in result.stdout
    del config["infer"]["models"]  # forgotten, with no data set configured: not the demo's model, silently
    result = snakemake(tmp_path, "infer", "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0 and "segmented by the demo's model" in result.stdout + result.stderr


def test_a_missing_package_in_infer_models_is_refused_before_any_job(tmp_path):
    config = infer_config(str(tmp_path), models=[str(tmp_path / "nowhere.pt")])
    result = snakemake(tmp_path, "infer", "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert f"infer.models: '{tmp_path / 'nowhere.pt'}' is neither an experiment" in result.stdout + result.stderr


def test_outputs_mirror_the_input_folders_so_one_name_in_two_folders_is_two_masks(tmp_path):
    assert input_root(str(tmp_path)) == tmp_path and input_root("scans/**/*.png") == Path("scans")
    assert input_root("data/list.csv") == Path("data") and input_root("*.tif") == Path(".")
    assert output_name(Path("scans/siteA/x.nii.gz"), Path("scans")) == "siteA/x"
    assert output_name(Path("elsewhere/y.png"), Path("scans")) == "y"  # listed outside the folder: by its stem
    predictor = Predictor.load(make_package(tmp_path), "cpu")
    for site in ("siteA", "siteB"):
        write_images(tmp_path / "in" / site, 1)  # img0_0.png in both
    files = listed_images(str(tmp_path / "in" / "**" / "*.png"))
    sources = check_images(files, predictor.package, root=input_root(str(tmp_path / "in" / "**" / "*.png")))
    assert sources["id"].tolist() == ["siteA/img0_0", "siteB/img0_0"]
    summary, _ = predictor.predict_sources(sources, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == \
        ["siteA/img0_0.png", "siteB/img0_0.png"]
    assert set(summary["mask_path"]) == {str(tmp_path / "out" / site / "img0_0.png") for site in ("siteA", "siteB")}
