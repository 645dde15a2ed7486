"""A data set of DICOM series with masks in each form a series takes (a DICOM SEG, a series of label values, NIfTI)
trained, predicted and evaluated by the workflow, and a folder of series segmented by `infer` (and one series by the
command line): masks written as NIfTI on each series' grid, and as DICOM SEGs referencing the series (by predict
too)."""

import shutil
import time

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from conftest import job_counts, snakemake, tiny_config, write_config, write_seg_mask, write_series
from unetflow.data.demo_volumes import ellipsoid_volume
from unetflow.infer.infer import main
from unetflow.io.nifti import read_volume

SHAPE, SPACING = (24, 20, 12), (1.0, 1.0, 3.0)  # (columns, rows, slices), [column, row, slice] mm


def write_mask(folder, series, labels: np.ndarray) -> None:
    """The mask of series case0 as a DICOM SEG, of case1 as a series of label values, of case2 as NIfTI."""
    if series.name == "case0":
        write_seg_mask(folder / "case0.seg.dcm", series, labels)
    elif series.name == "case1":
        write_series(folder / "case1", labels.astype(float), SPACING, rescale=(1.0, 0.0), description="labels")
    else:
        nib.save(nib.Nifti1Image(labels, read_volume(series)[1].affine), folder / f"{series.name}.nii.gz")


def assert_seg_of(path, series) -> None:
    """The file is a SEG of one segment, 'foreground', referencing the series in folder `series`."""
    seg = hd.seg.segread(path)
    uids = {str(pydicom.dcmread(file).SeriesInstanceUID) for file in series.iterdir()}
    assert {str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)} == uids
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["foreground"]


def test_series_train_predict_evaluate_and_infer(tmp_path):
    rng, affines = np.random.default_rng(0), {}
    for index in range(3):
        image, labels = ellipsoid_volume(SHAPE, SPACING, rng)
        folder = write_series(tmp_path / "images" / f"case{index}", np.round(image * 300), SPACING)
        affines[folder.name] = read_volume(folder)[1].affine
        write_mask(tmp_path / "masks", folder, labels)
    config = tiny_config()
    config["data"] = {"images": str(tmp_path / "images"), "masks": str(tmp_path / "masks")}
    config["split"] = {"train": 0.34, "val": 0.33, "test": 0.33}
    config["train"].update(batch_size=2)
    shutil.copytree(tmp_path / "images", tmp_path / "new")
    config["infer"] = {"images": str(tmp_path / "new"), "dicom_seg": True}
    config["predict"] = {"dicom_seg": True}
    snakemake(tmp_path, "results/leaderboard.parquet", "infer", configfile=write_config(tmp_path, config))

    manifest = pd.read_parquet(tmp_path / "results/data/manifest.parquet")
    assert set(manifest["kind"]) == {"volume"} and manifest["slices"].tolist() == [12, 12, 12]
    assert [path.split("/")[-1] for path in manifest["mask_path"]] == ["case0.seg.dcm", "case1", "case2.nii.gz"]
    assert manifest["label_values"].map(list).tolist() == [[0, 1]] * 3
    test_case = pd.read_parquet(tmp_path / "results/split/splits.parquet").query("split == 'test'")["id"].iloc[0]
    scores = pd.read_parquet(tmp_path / "results/unet/evaluate/per_case.parquet")
    assert scores["id"].unique().tolist() == [test_case]
    predicted = nib.load(tmp_path / f"results/unet/predict/masks/{test_case}.nii.gz")
    assert predicted.shape == SHAPE and np.allclose(predicted.affine, affines[test_case])
    assert_seg_of(tmp_path / f"results/unet/predict/masks/{test_case}.seg.dcm", tmp_path / "images" / test_case)
    for name, affine in affines.items():
        inferred = nib.load(tmp_path / f"results/infer/unet/masks/{name}.nii.gz")
        assert inferred.shape == SHAPE and np.allclose(inferred.affine, affine)
    summary = pd.read_parquet(tmp_path / "results/infer/unet/summary.parquet")
    assert sorted(summary["id"].unique()) == sorted(affines) and set(summary["physical_unit"]) == {"mm^3"}
    assert summary.query("`class` == 1")["physical_size"].to_numpy() == pytest.approx(
        3.0 * summary.query("`class` == 1")["pixels"].to_numpy())  # voxels of 1 x 1 x 3 mm
    for name in affines:
        assert_seg_of(tmp_path / f"results/infer/unet/masks/{name}.seg.dcm", tmp_path / "new" / name)

    time.sleep(1)  # a later modification time than every output
    changed = pydicom.dcmread(tmp_path / "new" / "case1" / "slice005.dcm")
    changed.PixelData = bytes(len(changed.PixelData))  # a changed slice: its series' shard is redone
    changed.save_as(tmp_path / "new" / "case1" / "slice005.dcm")
    assert job_counts(tmp_path, config, "infer") == {"infer_list": 1, "infer_check": 1, "infer_shard": 1,
                                                     "infer_summary": 1}

    main(["--model", str(tmp_path / "results/unet/package/unet.pt"), "--input", str(tmp_path / "new" / "case0"),
          "--output", str(tmp_path / "cli"), "--device", "cpu", "--dicom-seg"])
    assert sorted(path.name for path in (tmp_path / "cli").iterdir()) == ["case0.nii.gz", "case0.seg.dcm",
                                                                          "summary.parquet"]
    main(["--model", str(tmp_path / "results/unet/package/unet.pt"), "--input", str(tmp_path / "new" / "case0"),
          "--output", str(tmp_path / "cli"), "--device", "cpu"])  # without SEGs: the earlier one would be stale
    assert sorted(path.name for path in (tmp_path / "cli").iterdir()) == ["case0.nii.gz", "summary.parquet"]
