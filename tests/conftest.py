"""Shared test helpers: small data sets on disk and running the workflow in a temporary folder."""

import importlib.util
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from unetflow.data.ingest import DataSpec, DataValidationError, check_data_set
from unetflow.data.preprocess import preprocess_settings
from unetflow.io.sources import source_labels

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def bench_module(name: str):
    """A script of bench/ imported as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_pairs(folder: Path, count: int = 4, size=(32, 40), values=(0, 255), seed: int = 0) -> tuple[Path, Path]:
    """`count` random grey PNG images with masks holding `values`, in folder/images and folder/masks."""
    rng = np.random.default_rng(seed)
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        cv2.imwrite(str(images / f"c{index}.png"), rng.integers(0, 256, size, dtype=np.uint8))
        cv2.imwrite(str(masks / f"c{index}.png"), rng.choice(np.asarray(values, np.uint8), size))
    return images, masks


NESTED_CLASSES = {"background": 0, "core": 1, "edema": 2, "enhancing": 3}  # the values of `write_nested_pairs`
NESTED_REGIONS = {"whole": [1, 2, 3], "core": [1, 3], "enhancing": [3]}  # written as 2, 1 and 3


def write_nested_pairs(folder: Path, count: int = 12, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """`count` grey PNG images of one or two nested blobs (an edema ring, value 2, around a core, 1, around an
    enhancing centre, 3), brighter inwards, blurred and noisy, with their masks, in folder/images and folder/masks."""
    rng = np.random.default_rng(seed)
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(1, 3)):
            centre, radius = tuple(int(c) for c in rng.integers(size // 4, 3 * size // 4, 2)), size / rng.uniform(4, 6)
            for value, share in ((2, 1.0), (1, 0.65), (3, 0.35)):
                cv2.circle(mask, centre, round(radius * share), value, -1)
        image = cv2.GaussianBlur(np.array([0.15, 0.6, 0.4, 0.85], np.float32)[mask], (0, 0), 1.0)
        image += rng.normal(0, 0.05, image.shape).astype(np.float32)
        cv2.imwrite(str(images / f"n{index}.png"), np.clip(image * 255, 0, 255).astype(np.uint8))
        cv2.imwrite(str(masks / f"n{index}.png"), mask)
    return images, masks


def rotated_affine(spacing, degrees: float = 0.0) -> np.ndarray:
    """A voxel-to-world affine with voxel sizes `spacing`, rotated by `degrees` about the third axis."""
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    return affine


def ct_volume(shape, spacing, seed: int = 0, radii_mm=(9.0, 7.0, 6.0), lesion_hu: float = 150.0):
    """A CT-like int16 volume of voxel sizes `spacing` mm: air (-1000 HU) around a body ellipse (about 40 HU) with
    an ellipsoid lesion (about `lesion_hu`, radii in mm, label 1) at the centre, in Gaussian noise; (image, labels)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * size for n, size in zip(shape, spacing)], indexing="ij")
    extent = [n * size / 2 for n, size in zip(shape, spacing)]
    body = (grids[0] / (0.9 * extent[0])) ** 2 + (grids[1] / (0.9 * extent[1])) ** 2 <= 1
    labels = (sum((grid / radius) ** 2 for grid, radius in zip(grids, radii_mm)) <= 1).astype(np.uint8)
    image = np.where(body, 40.0, -1000.0) + labels * (lesion_hu - 40.0) + rng.normal(0, 15, shape)
    return np.round(image).astype(np.int16), labels


def write_ct_pair(folder: Path, name: str, shape, spacing, seed: int = 0, degrees: float = 0.0, **lesion):
    """`ct_volume` written as images/<name>.nii.gz and labels/<name>.nii.gz (affine rotated by `degrees`); the
    labels and the affine."""
    import nibabel as nib

    image, labels = ct_volume(shape, spacing, seed, **lesion)
    affine = rotated_affine(spacing, degrees)
    for sub, data in (("images", image), ("labels", labels)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), folder / sub / f"{name}.nii.gz")
    return labels, affine


def write_series(folder: Path, volume: np.ndarray, spacing=(0.8, 0.7, 2.5), origin=(-10.0, 5.0, 2.0),
                 orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), positions=None, rescale=(1.0, -1024.0),
                 description: str = "CT test", modality: str = "CT", syntax=None, prefix: str = "slice") -> Path:
    """A new DICOM series of `volume` (X, Y, Z; values after rescaling, e.g. HU) in `folder`, one file per slice
    (<prefix><number>.dcm): `spacing` [column, row, slice] mm, the first slice's position `origin` and the row and
    column directions `orientation` in DICOM's LPS, stored as 12-bit unsigned values with RescaleSlope/Intercept
    `rescale`. `positions`: the slices to write as offsets along the normal in slice steps (volume slice = offset;
    repeats, gaps, fractions and any file order allowed), default every slice in order. `syntax`: the transfer
    syntax the files declare (explicit VR little endian); a compressed one gets the raw pixels as its one fragment."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid, frame_of_reference = generate_uid(), generate_uid()
    slope, intercept = rescale
    normal = np.cross(orientation[:3], orientation[3:])
    for number, offset in enumerate(range(volume.shape[2]) if positions is None else positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = generate_uid(), syntax or ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.SOPClassUID = meta, meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesDescription = modality, series_uid, description
        ds.StudyInstanceUID, ds.PatientID, ds.InstanceNumber = "1.2.3", "test", number + 1
        ds.FrameOfReferenceUID = frame_of_reference
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + offset * spacing[2] * normal]
        ds.PixelSpacing, ds.SliceThickness = [float(spacing[1]), float(spacing[0])], float(spacing[2])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.round((volume[:, :, int(offset) % volume.shape[2]].T - intercept) / slope)
        pixels = stored.astype(np.uint16).tobytes()
        ds.PixelData = encapsulate([pixels]) if meta.TransferSyntaxUID.is_compressed else pixels
        ds.save_as(folder / f"{prefix}{number:03d}.dcm", enforce_file_format=True)
    return folder


def write_seg_mask(path: Path, series: Path, labels: np.ndarray, segmentation_type: str = "BINARY") -> Path:
    """A DICOM SEG at `path` drawn on the series in folder `series`, as annotation tools save one: `labels` (X, Y, Z
    on the series' voxels, as `write_series` takes its volume) of segment numbers (FRACTIONAL: the fractions of one
    segment), or (X, Y, Z, S) booleans, one channel per segment (which may overlap); empty frames left out."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from unetflow.io.dicom import series_files
    from unetflow.io.dicom_seg import source_dataset

    count = labels.shape[3] if labels.ndim == 4 else max(1, int(labels.max()))
    segments = [hd.seg.SegmentDescription(segment_number=number, segment_label=f"structure {number}",
                                          segmented_property_category=codes.SCT.Tissue,
                                          segmented_property_type=codes.SCT.Tissue,
                                          algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
                for number in range(1, count + 1)]
    seg = hd.seg.Segmentation(source_images=[source_dataset(file) for file in series_files(series)],
                              pixel_array=np.swapaxes(labels, 0, 2),  # (slice, row, column[, S])
                              segmentation_type=segmentation_type, segment_descriptions=segments,
                              series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
                              instance_number=1, manufacturer="test", manufacturer_model_name="test",
                              software_versions="0", device_serial_number="0")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def build_manifest(images=None, masks=None, mask_suffix: str = "auto", classes=None, threads: int = 1, **options):
    """Ingest's (manifest, class table) of a data set given as arguments (`options`: other keys of the data section)."""
    return check_data_set(DataSpec(images=images, masks=masks, mask_suffix=mask_suffix, classes=classes, **options),
                          threads)


def ingest_error(images, masks, **options) -> str:
    """The message of the DataValidationError ingest raises for a data set of `images` and `masks` folders."""
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(images), str(masks), **options)
    return str(error.value)


def trained_labels(manifest, classes) -> dict[str, np.ndarray]:
    """{case id: class indices} as preprocessing stores them."""
    return {row["id"]: source_labels(row, classes)[0][0] for row in manifest.to_dict("records")}


def applied(normalization: str = "zscore", spacing=None, ct: dict | None = None, **preprocess) -> dict:
    """Preprocessing settings as the preprocess rule resolves them from a config section (`preprocess`: other keys
    of it) and, for the ct scheme, the fingerprint's statistics `ct`."""
    cfg = dict(dict(clip_percentiles=None, window=None, scale=1.0), normalization=normalization, spacing=spacing,
               **preprocess)
    return preprocess_settings(cfg, dict(ct=ct))


def snakemake(workdir: Path, *args: str, configfile: Path = REPO / "tests" / "tiny.yaml",
              check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` with the given config file and extra arguments."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--cores", "2", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


# the output that stands for a job of the rules with several outputs per job (the others have one)
JOB_OUTPUT = {"ingest": "manifest.parquet", "fingerprint": "fingerprint.json", "preprocess": "settings.json",
              "train": "model.pt", "evaluate": "summary.parquet", "report": "metrics.html",
              "leaderboard": "leaderboard.parquet", "infer_shard": "*[0-9].parquet", "infer_summary": "summary.parquet",
              "infer_slide": "summary.parquet", "infer_slide_part": "part*[0-9].npy"}


def scheduled_jobs(workdir: Path, *args: str, configfile: Path) -> set[tuple[str, str]]:
    """The jobs a run would execute, as (rule, the output that stands for the job), from Snakemake's machine-readable
    summary (a tab-separated row per output file with its rule and plan)."""
    lines = snakemake(workdir, "--summary", *args, configfile=configfile).stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("output_file\t"))
    rows = [line.split("\t") for line in lines[start + 1:] if line.count("\t") == 5]
    return {(rule, output) for output, _, rule, _, _, plan in rows
            if plan == "update pending" and Path(output).match(JOB_OUTPUT.get(rule, "*"))}


def job_counts(workdir: Path, config: dict, *args: str, name: str = "config.yaml") -> dict[str, int]:
    """{rule: jobs} a run with `config` would execute (see `scheduled_jobs`)."""
    jobs = scheduled_jobs(workdir, *args, configfile=write_config(workdir, config, name))
    return dict(Counter(rule for rule, _ in jobs))


def tiny_config() -> dict:
    """The tiny demo configuration of the end-to-end tests, as a dict to change."""
    return yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())


def write_config(folder: Path, config: dict, name: str = "config.yaml") -> Path:
    """`config` as a YAML file in `folder` (keys in their dict order: the order of data.classes means something)."""
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole workflow run once on the tiny demo config; returns its working directory."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir)
    return workdir
