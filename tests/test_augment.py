import pytest
import torch
import torch.nn.functional as F

from unetflow.train.augment import AUGMENT_DEFAULTS, augment_batch, merge_config

SPATIAL = ["mirror", "rot90", "affine", "elastic"]
INTENSITY = ["brightness", "contrast", "gamma", "noise", "blur"]


def only(*names: str, **overrides: dict) -> dict:
    """Config with p = 1 for `names`, p = 0 for every other transform, plus option overrides."""
    config = {name: {"p": 1.0 if name in names else 0.0} for name in AUGMENT_DEFAULTS}
    for name, options in overrides.items():
        config[name].update(options)
    return config


def random_batch(batch: int = 8, channels: int = 2, size: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    images = torch.randn(batch, channels, size, size)
    labels = torch.randint(0, 3, (batch, size, size))
    return images, labels


def block_labels(batch: int = 6, size: int = 64, blocks: int = 4, seed: int = 0) -> torch.Tensor:
    """Labels in {1, 2, 3} constant on square blocks, so most pixels lie far from a label boundary."""
    torch.manual_seed(seed)
    coarse = torch.randint(1, 4, (batch, 1, blocks, blocks)).float()
    return F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()


def away_from_boundaries(labels: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose (2 radius + 1)^2 neighbourhood holds a single label value and stays inside the patch."""
    values = F.pad(labels[:, None].float(), [radius] * 4, value=-1.0)
    window = 2 * radius + 1
    high = F.max_pool2d(values, window, stride=1)
    low = -F.max_pool2d(-values, window, stride=1)
    return (high == low)[:, 0]


def changed_samples(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    return (before != after).flatten(1).any(1)


def test_merge_config_keeps_defaults_and_rejects_unknown_keys():
    merged = merge_config({"affine": {"p": 0.7}})
    assert merged["affine"]["p"] == 0.7
    assert merged["affine"]["scale"] == AUGMENT_DEFAULTS["affine"]["scale"]
    assert merged["gamma"] == AUGMENT_DEFAULTS["gamma"]
    assert AUGMENT_DEFAULTS["affine"]["p"] != 0.7
    with pytest.raises(ValueError):
        merge_config({"shear": {"p": 1.0}})
    with pytest.raises(ValueError):
        merge_config({"affine": {"angle": 3}})


@pytest.mark.parametrize("config", [{}, only(*AUGMENT_DEFAULTS)])
def test_shapes_dtypes_and_label_values_preserved(config):
    images, labels = random_batch()
    out_images, out_labels = augment_batch(images, labels, config, torch.Generator().manual_seed(1), fill_label=7)
    assert out_images.shape == images.shape and out_images.dtype == images.dtype
    assert out_labels.shape == labels.shape and out_labels.dtype == torch.int64
    assert set(out_labels.unique().tolist()) <= set(labels.unique().tolist()) | {7}


def test_identity_when_every_probability_is_zero():
    images, labels = random_batch()
    out_images, out_labels = augment_batch(images, labels, only(), torch.Generator().manual_seed(1))
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)


def test_same_seed_same_batch_different_seed_different_batch():
    images, labels = random_batch()
    config = {name: {"p": 0.5} for name in AUGMENT_DEFAULTS}
    first = augment_batch(images, labels, config, torch.Generator().manual_seed(3))
    again = augment_batch(images, labels, config, torch.Generator().manual_seed(3))
    other = augment_batch(images, labels, config, torch.Generator().manual_seed(4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("name", SPATIAL + INTENSITY)
def test_each_transform_alone_changes_every_sample(name):
    images, labels = random_batch()
    out_images, out_labels = augment_batch(images, labels, only(name), torch.Generator().manual_seed(1))
    assert changed_samples(images, out_images).all()
    if name in SPATIAL:
        assert changed_samples(labels, out_labels).all()
    else:
        assert torch.equal(out_labels, labels)


@pytest.mark.parametrize("names", [("mirror",), ("rot90",), ("affine",), ("elastic",), ("affine", "elastic")])
def test_spatial_transforms_move_image_and_label_together(names):
    """Image = label stays so away from boundaries; a mild elastic field avoids folds that create thin slivers."""
    labels = block_labels()
    images = labels[:, None].float()
    config = only(*names, elastic={"sigma": 4.0})
    out_images, out_labels = augment_batch(images, labels, config, torch.Generator().manual_seed(2))
    interior = away_from_boundaries(out_labels)
    assert interior.float().mean() > 0.5
    assert torch.allclose(out_images[:, 0][interior], out_labels[interior].float(), atol=1e-4)
    assert changed_samples(labels, out_labels).all()


def test_outside_regions_get_zero_image_and_fill_label():
    images = torch.ones(4, 1, 32, 32)
    labels = torch.ones(4, 32, 32, dtype=torch.long)
    config = only("affine", affine={"rotation_deg": [45.0, 45.0], "scale": [0.7, 0.7]})
    out_images, out_labels = augment_batch(images, labels, config, torch.Generator().manual_seed(0), fill_label=9)
    corners = out_labels[:, 0, 0]
    assert (corners == 9).all() and (out_images[:, 0, 0, 0] == 0).all()
    assert (out_labels[:, 16, 16] == 1).all()


def test_zoom_above_one_enlarges_content():
    size = 64
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((ys - 31.5) ** 2 + (xs - 31.5) ** 2) < 8**2).long()[None]
    config = only("affine", affine={"rotation_deg": [0.0, 0.0], "scale": [2.0, 2.0]})
    _, out_labels = augment_batch(disc[:, None].float(), disc, config, torch.Generator().manual_seed(0))
    assert out_labels.sum() / disc.sum() == pytest.approx(4.0, rel=0.1)


def test_elastic_with_zero_displacement_resamples_in_place():
    images, labels = random_batch()
    config = only("elastic", elastic={"sigma": 0.0})
    out_images, out_labels = augment_batch(images, labels, config, torch.Generator().manual_seed(0))
    assert torch.allclose(out_images, images, atol=1e-5) and torch.equal(out_labels, labels)


def test_rot90_skips_non_square_patches():
    images, labels = torch.randn(4, 1, 16, 24), torch.randint(0, 2, (4, 16, 24))
    out_images, out_labels = augment_batch(images, labels, only("rot90"), torch.Generator().manual_seed(0))
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)


def test_intensity_transform_properties():
    images, labels = random_batch(channels=1)
    generator = torch.Generator().manual_seed(0)
    constant = torch.full_like(images, 3.0)
    assert torch.allclose(augment_batch(constant, labels, only("blur"), generator)[0], constant)
    doubled = augment_batch(images, labels, only("brightness", brightness={"range": [2.0, 2.0]}), generator)[0]
    assert torch.allclose(doubled, 2 * images)
    contrasted = augment_batch(images, labels, only("contrast"), generator)[0]
    assert torch.allclose(contrasted.mean((-2, -1)), images.mean((-2, -1)), atol=1e-5)
    gamma = augment_batch(images, labels, only("gamma"), generator)[0]
    assert torch.allclose(gamma.amin((-2, -1)), images.amin((-2, -1)), atol=1e-5)
    assert torch.allclose(gamma.amax((-2, -1)), images.amax((-2, -1)), atol=1e-5)
    noisy = augment_batch(images, labels, only("noise", noise={"std": [0.5, 0.5]}), generator)[0]
    assert (noisy - images).std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("name", SPATIAL + INTENSITY)
def test_share_of_affected_samples_matches_probability(name):
    images, labels = random_batch(batch=2000, channels=1, size=8)
    config = only(**{name: {"p": 0.5}})
    out_images, _ = augment_batch(images, labels, config, torch.Generator().manual_seed(5))
    expected = 0.75 if name == "mirror" else 0.5  # mirror: p = 0.5 on each of two axes
    assert changed_samples(images, out_images).float().mean().item() == pytest.approx(expected, abs=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_gpu_with_a_gpu_generator():
    images, labels = (t.cuda() for t in random_batch())
    config = only(*AUGMENT_DEFAULTS)
    first = augment_batch(images, labels, config, torch.Generator("cuda").manual_seed(1))
    again = augment_batch(images, labels, config, torch.Generator("cuda").manual_seed(1))
    assert first[0].is_cuda and first[1].is_cuda
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_schema_knows_exactly_the_augmentations_and_their_keys():
    import yaml

    from conftest import REPO

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    augment = schema["$defs"]["train"]["properties"]["augment"]["properties"]
    assert {name: sorted(spec["propertyNames"]["enum"]) for name, spec in augment.items()} == \
        {name: sorted(keys) for name, keys in AUGMENT_DEFAULTS.items()}
