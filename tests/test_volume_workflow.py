"""2D and 3D U-Nets of one NIfTI data set trained side by side by the workflow, compared in one leaderboard, on
volumes stored resampled along the slice axis, their predictions back on the files' slices (the 3D one mirrored)."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd

from conftest import snakemake, tiny_config, write_config
from unetflow.data.demo_volumes import write_volume_pairs
from unetflow.infer.package import load_package


def test_2d_and_3d_experiments_share_the_leaderboard(tmp_path):
    images, masks = write_volume_pairs(tmp_path, 3, (24, 20, 12), (1.0, 1.0, 3.0))  # (X, Y, Z), slices along Z
    config = tiny_config()
    config["data"] = {"images": str(images), "masks": str(masks)}
    config["split"] = {"train": 0.34, "val": 0.33, "test": 0.33}
    config["preprocess"] = {"spacing": [1.0, 1.0, 2.4]}  # in-plane as stored; 3D sees 15 slices of 2.4 mm, not 12
    config["train"].update(batch_size=2)
    config["experiments"] = {"unet2d": {"train": {"dims": 2}}, "unet3d": {"train": {"dims": "auto"}}}
    snakemake(tmp_path, "results/leaderboard.parquet", configfile=write_config(tmp_path, config))

    board = pd.read_parquet(tmp_path / "results/leaderboard.parquet").set_index("experiment")
    assert board.loc["unet2d", "dims"].tolist() == [2, 2] and board.loc["unet3d", "dims"].tolist() == [3, 3]
    assert board.loc["unet2d", "patch_size"].iloc[0] == "24x20"
    assert board.loc["unet3d", "patch_size"].iloc[0] == "14x24x20"  # the median volume, slices first, fit to pooling
    plan = json.loads((tmp_path / "results/unet3d/plan.json").read_text())
    assert plan["traits"]["median_size"] == [15, 24, 20]  # 15 slices of 2.4 mm: the resampled grid,
    assert plan["traits"]["spacing"] == [2.4, 1.0, 1.0]  # not the files' 12 of 3 mm
    plan = plan["settings"]
    assert plan["dims"]["source"] == "planned" and "not extremely anisotropic" in plan["dims"]["reason"]
    assert plan["pool_kernels"]["value"] == [[1, 2, 2], [2, 2, 2]]  # Z (2.4 mm) waits for the 1 mm axes
    test_volume = pd.read_parquet(tmp_path / "results/split/splits.parquet").query("split == 'test'")["id"]
    name = test_volume.iloc[0]
    for experiment in ("unet2d", "unet3d"):
        predicted = nib.load(tmp_path / f"results/{experiment}/predict/masks/{name}.nii.gz")
        assert predicted.shape == (24, 20, 12) and set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1}
        mirrored = load_package(tmp_path / f"results/{experiment}/package/{experiment}.pt").predict["mirror"]
        assert mirrored == (experiment == "unet3d")  # predict.mirror auto: a 3D package mirrors, a 2D one does not


def test_volumes_of_two_modalities_train_predict_and_refuse_one_of_one(tmp_path):
    """4D NIfTI images (X, Y, Z, 2 modalities, as the Medical Segmentation Decathlon stores them), 3D labels: a 3D
    U-Net of two input channels, each channel z-scored, 3D predictions with the image's grid; a volume of one
    modality refused by infer, naming the channel counts."""
    images, masks = write_volume_pairs(tmp_path, 3, (24, 20, 12), (1.0, 1.0, 1.0))
    noise = np.random.default_rng(0)
    for path in sorted(images.iterdir()):
        first = nib.load(path)
        image = np.asarray(first.dataobj, np.float32)
        second = 500 - 3 * image + noise.normal(0, 1, image.shape)  # another contrast, on another scale
        nib.save(nib.Nifti1Image(np.stack([image, second], -1).astype(np.float32), first.affine), path)
    (tmp_path / "new").mkdir()
    shutil.copy(path, tmp_path / "new" / "two.nii.gz")
    nib.save(nib.Nifti1Image(image, first.affine), tmp_path / "new" / "one.nii.gz")  # the first modality alone
    config = tiny_config()
    config["data"] = {"images": str(images), "masks": str(masks)}
    config["split"] = {"train": 0.34, "val": 0.33, "test": 0.33}
    config["train"].update(batch_size=2)
    snakemake(tmp_path, "results/leaderboard.parquet", "results/unet/report/metrics.html",
              configfile=write_config(tmp_path, config))
    assert pd.read_parquet(tmp_path / "results/data/manifest.parquet")["channels"].tolist() == [2, 2, 2]
    fingerprint = json.loads((tmp_path / "results/data/fingerprint.json").read_text())
    assert fingerprint["normalization"] == "zscore" and "several channels" in fingerprint["normalization_reason"]
    package = load_package(tmp_path / "results/unet/package/unet.pt")
    assert package.input_channels == 2 and package.models[0]["hparams"]["dims"] == 3
    name = pd.read_parquet(tmp_path / "results/split/splits.parquet").query("split == 'test'")["id"].iloc[0]
    predicted = nib.load(tmp_path / f"results/unet/predict/masks/{name}.nii.gz")
    assert predicted.shape == (24, 20, 12) and np.allclose(predicted.affine, first.affine)
    config["infer"] = {"images": str(tmp_path / "new"), "models": ["unet"]}
    result = snakemake(tmp_path, "infer", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert "one.nii.gz: 1 channel(s), but the model was trained on 2-channel images" in (
        tmp_path / "results/logs/infer/unet/check.log").read_text()
