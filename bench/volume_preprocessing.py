"""What the fingerprint, the per-volume normalisation and the resampling cost on CT-like volumes, and how well a
label map survives the resampling round trip that prediction makes (stored grid -> each input's own grid).

Times `unetflow.plan.fingerprint.fingerprint_data`, `unetflow.data.preprocess.preprocess_sources` (each volume
normalised as one, resampled to the target spacing, stored as one array) and the step of
`Predictor.image_probabilities` that brings probabilities back onto an input's grid
(`unetflow.io.resample.resample_probabilities`), applied to the one-hot stored labels of the test volume.

    python bench/volume_preprocessing.py                                   # 6 volumes of 256x256x40, 2 threads
    python bench/volume_preprocessing.py --volumes 3 --shape 32 32 4       # smoke (seconds)

The volumes are generated (int16, air at -1000 HU around a body, an ellipsoid lesion of 150 HU, noise), with
in-plane voxel sizes from 0.6 to 1.0 mm, 3 mm slices and every other one rotated; the last volume is the test case.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from unetflow.data.ingest import DataSpec, check_data_set  # noqa: E402
from unetflow.data.preprocess import preprocess_settings, preprocess_sources  # noqa: E402
from unetflow.io.resample import resample_probabilities  # noqa: E402
from unetflow.io.sources import source_labels  # noqa: E402
from unetflow.io.store import load_array  # noqa: E402
from unetflow.plan.fingerprint import fingerprint_data  # noqa: E402


def write_volume(folder: Path, name: str, shape, spacing, degrees: float, rng) -> None:
    """One CT-like image volume and its lesion label volume under folder/images and folder/labels."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    half = [n * s / 2 for n, s in zip(shape, spacing)]
    body = (grids[0] / (0.9 * half[0])) ** 2 + (grids[1] / (0.9 * half[1])) ** 2 <= 1
    lesion = sum((g / (0.3 * h)) ** 2 for g, h in zip(grids, half)) <= 1
    image = np.where(body, 40.0, -1000.0) + lesion * 110.0 + rng.normal(0, 15, shape)
    angle = np.deg2rad(degrees)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                               [0, 0, 1]]) @ np.diag(spacing)
    for sub, data in (("images", np.round(image).astype(np.int16)), ("labels", lesion.astype(np.uint8))):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), folder / sub / f"{name}.nii.gz")


def round_trip_dice(row: dict, stored_path: str, classes: pd.DataFrame) -> tuple[float, tuple, tuple, float]:
    """Dice of the lesion after its stored labels (one-hot) are brought back onto the source's grid and argmax'd;
    with the stored and original shapes (Z, Y, X) and the seconds of loading and bringing them back."""
    start = time.perf_counter()
    stored = load_array(stored_path, "labels")
    truth_shape = (int(row["slices"]), int(row["height"]), int(row["width"]))
    one_hot = np.stack([stored == 0, stored == 1]).astype(np.float32)
    back = resample_probabilities(one_hot, truth_shape).argmax(0) == 1
    seconds = time.perf_counter() - start
    truth = source_labels(row, classes)[0] > 0
    return 2 * (truth & back).sum() / (truth.sum() + back.sum()), stored.shape, truth.shape, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 40])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for index in range(args.volumes):
            spacing = (0.6 + 0.4 * index / max(1, args.volumes - 1),) * 2 + (3.0,)
            write_volume(folder, f"ct{index}", args.shape, spacing, 30.0 * (index % 2), rng)
        manifest, classes = check_data_set(DataSpec(images=str(folder / "images"), masks=str(folder / "labels")),
                                           args.threads)
        test = f"ct{args.volumes - 1}"
        splits = pd.DataFrame({"id": manifest["id"], "split": np.where(manifest["id"] == test, "test", "train")})
        voxels = args.volumes * int(np.prod(args.shape))
        start = time.perf_counter()
        _, fingerprint = fingerprint_data(manifest, classes, splits, threads=args.threads)
        fingerprinted = time.perf_counter()
        settings = preprocess_settings(dict(normalization="auto", clip_percentiles=None, window=None, spacing="auto",
                                            scale="auto"), fingerprint)
        stored = preprocess_sources(manifest, classes, str(folder / "arrays"), settings, args.threads)
        preprocessed = time.perf_counter()
        row = manifest[manifest["id"] == test].iloc[0].to_dict()
        dice, stored_shape, shape, seconds = round_trip_dice(row, stored.set_index("id").loc[test, "array_path"],
                                                             classes)
    print(f"{args.volumes} volumes of {args.shape} ({voxels / 1e6:.1f} M voxels), {args.threads} threads")
    print(f"normalisation {settings['normalization']}; target spacing {settings['spacing']}")
    print(f"fingerprint: {fingerprinted - start:.2f} s ({voxels / (fingerprinted - start) / 1e6:.1f} M voxels/s)")
    print(f"preprocess (normalise, resample, store): {preprocessed - fingerprinted:.2f} s "
          f"({voxels / (preprocessed - fingerprinted) / 1e6:.1f} M voxels/s)")
    print(f"test volume stored as {stored_shape} (Z, Y, X), original {shape}; probabilities back on its grid in "
          f"{seconds:.2f} s; round-trip Dice of the lesion {dice:.4f}")


if __name__ == "__main__":
    main()
