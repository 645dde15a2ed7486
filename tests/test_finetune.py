"""Fine-tuning from a model package (train.init): the weights loaded, the head, the refusals, the plan's network and
the normalisation check (the workflow end to end: test_finetune_workflow.py)."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import applied
from unetflow.config import init_problems
from unetflow.infer.package import build_package, save_package
from unetflow.net.model import UNet
from unetflow.plan.plan import make_plan
from unetflow.train.finetune import (
    InitError,
    checked_init,
    init_record,
    init_weights,
    normalization_warning,
    package_network,
)
from unetflow.train.train import Trainer

BINARY = pd.DataFrame({"index": [0, 1], "name": ["background", "foreground"], "value": [0, 255], "color": None,
                       "ignore": False})
THREE = pd.DataFrame({"index": [0, 1, 2], "name": ["background", "cell", "edge"], "value": [0, 1, 2],
                      "color": None, "ignore": False})
NO_REGIONS = pd.DataFrame({"index": [], "name": []})
PREDICT = dict(overlap=0.5, batch_size=2, mirror=False, precision="fp32", largest_component=False,
               min_object_size=16, object_probability=0.5)
PACKAGE_PLAN = dict(device=dict(type="cpu", name="cpu", memory_bytes=None), traits={},
                    settings=dict(resolution=dict(value=0.5, source="planned", reason="budget")))
CFG = dict(device="cpu", seed=3, epochs=1, budget_steps=None, budget_minutes=None, val_share=1.0,
           iterations_per_epoch=2, batch_size=2, dims="auto", resolution=None, patch_size=None, depth=None,
           base_width=None, norm="batch", deep_supervision=False, loss="ce_dice", optimizer="adam", lr=1e-3,
           weight_decay=0.0, lr_schedule="poly", warmup_iterations=0, grad_clip=0, foreground_oversampling=None,
           dice_background="auto", early_stopping=0, resume_every=1, compile=False, augment={}, precision="fp32",
           init="pkg.pt")


def write_package(folder, classes=BINARY, channels=1, dims=2, preprocess=None, seed=7):
    """A package of one random U-Net (depth 2, width 6, patch 48x48 or 8x16x16) for `classes`."""
    torch.manual_seed(seed)
    model = UNet(channels, len(classes), depth=2, base_width=6, dims=dims)
    patch = [48, 48] if dims == 2 else [8, 16, 16]
    torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=patch, plan=PACKAGE_PLAN),
               folder / "fold0.pt")
    manifest = pd.DataFrame({"id": ["a"], "image_path": ["a.png"], "mask_path": ["a_mask.png"], "kind": ["image"],
                             "slices": [1], "height": [64], "width": [64], "channels": [channels],
                             "input_channels": [channels], "dtype": ["uint8"]})
    package = build_package([str(folder / "fold0.pt")], ["old/fold0"], PACKAGE_PLAN, manifest,
                            pd.DataFrame({"foreground_fraction": [0.3]}), classes, preprocess or applied("zscore"),
                            PREDICT, dict(channels=None, slice_axis=2))
    return save_package(package, folder / "old.pt"), model


def sources(count=4, channels=1, kind="image", slices=1, size=64) -> pd.DataFrame:
    """A preprocess table of `count` stored training sources."""
    return pd.DataFrame([dict(id=f"s{i}", kind=kind, slices=slices, height=size, width=size, channels=channels,
                              spacing=[1.0, 1.0, 1.0] if kind == "volume" else None, original_slices=slices,
                              original_height=size, original_width=size, class_voxels=[900, 100])
                         for i in range(count)])


FINGERPRINT = dict(object_diameter_p90=10.0, boundary_distance=8.0)


def planned(tmp_path, classes=BINARY, cfg=CFG, table=None, seed=7):
    """The plan of generated training sources fine-tuned from a fresh package (its classes BINARY)."""
    path, model = write_package(tmp_path, seed=seed)
    table = sources() if table is None else table
    package = checked_init(path, cfg, table, classes, NO_REGIONS)
    network = dict(network=package_network(package.models[0]), name=f"train.init package {path}")
    plan = make_plan(cfg, table, FINGERPRINT, len(classes), torch.device("cpu"), package=network)
    plan["init"] = init_record(package, classes, NO_REGIONS, applied("zscore"))
    return plan, path, model


def trainer_from(plan, path, tmp_path, classes=2) -> Trainer:
    """A Trainer of the plan's network on generated cases, started from the package at `path`."""
    rng = np.random.default_rng(0)
    cases = [(rng.normal(size=(1, 64, 64)).astype(np.float32), rng.integers(0, classes, (64, 64)).astype(np.uint8))
             for _ in range(3)]
    cfg = {**CFG, **{key: entry["value"] for key, entry in plan["settings"].items()}}
    return Trainer(cfg, plan, cases[:2], cases[2:], ["a", "b"], tmp_path / "state.pt", logging.getLogger(),
                   init_weights=init_weights(plan, path))


def test_the_plan_takes_the_packages_network_unless_set(tmp_path):
    plan, path, _ = planned(tmp_path)
    settings = plan["settings"]
    assert {key: settings[key]["value"] for key in ("dims", "depth", "base_width", "patch_size", "resolution")} == \
        dict(dims=2, depth=2, base_width=6, patch_size=[48, 48], resolution=0.5)
    assert settings["depth"]["source"] == "package" and str(path) in settings["depth"]["reason"]
    assert settings["foreground_oversampling"]["source"] == "planned"
    explicit, _, _ = planned(tmp_path, cfg={**CFG, "patch_size": [32, 32], "resolution": 1.0})
    assert explicit["settings"]["patch_size"] == dict(value=[32, 32], source="config", reason="set in the config")
    assert explicit["settings"]["resolution"]["value"] == 1.0 and explicit["settings"]["depth"]["value"] == 2


def test_training_starts_from_the_packages_weights(tmp_path):
    plan, path, model = planned(tmp_path)
    assert not plan["init"]["new_head"]
    trainer = trainer_from(plan, path, tmp_path)
    state = trainer.model.state_dict()
    for key, value in model.state_dict().items():  # every layer, the head included, before the first step
        assert torch.equal(state[key], value), key
    assert not torch.equal(UNet(1, 2, depth=2, base_width=6).encoders[0][0].weight, model.encoders[0][0].weight)


def test_other_classes_get_a_new_head_and_keep_every_other_layer(tmp_path):
    plan, path, model = planned(tmp_path, classes=THREE)
    assert plan["init"]["new_head"] and plan["num_classes"] == 3
    trainer = trainer_from(plan, path, tmp_path, classes=3)
    assert torch.equal(trainer.model.encoders[0][0].weight, model.encoders[0][0].weight)
    assert torch.equal(trainer.model.decoders[0][0].weight, model.decoders[0][0].weight)
    head = trainer.model.head.weight
    assert head.shape[0] == 3 and head.abs().sum() > 0 and not torch.any(trainer.model.head.bias)  # He init
    trainer.run(tmp_path / "best.pt", tmp_path / "last.pt")  # and it trains


def test_the_resume_identity_holds_the_package(tmp_path):
    plan, path, _ = planned(tmp_path)
    first = trainer_from(plan, path, tmp_path).identity
    assert trainer_from(plan, path, tmp_path).identity == first
    replanned, _, _ = planned(tmp_path, seed=8)  # the same path, other weights
    with pytest.raises(InitError, match="changed since the plan"):
        init_weights(plan, path)
    assert trainer_from(replanned, path, tmp_path).identity != first


@pytest.mark.parametrize("cfg, table, match", [
    ({**CFG, "dims": 3}, None, r"is a 2D U-Net but train.dims is 3"),
    ({**CFG, "depth": 3}, None, r"has depth 2 but train.depth is 3"),
    ({**CFG, "base_width": 8}, None, r"has base_width 6 but train.base_width is 8"),
    ({**CFG, "norm": "instance"}, None, r"has norm batch but train.norm is instance"),
    (CFG, sources(channels=3), r"takes 1-channel images but the training data have 3 channel\(s\); set data.channels"),
])
def test_what_cannot_be_reused_is_refused_naming_package_and_setting(tmp_path, cfg, table, match):
    path, _ = write_package(tmp_path)
    with pytest.raises(InitError, match=match) as error:
        checked_init(path, cfg, sources() if table is None else table, BINARY, NO_REGIONS)
    assert str(path) in str(error.value)


def test_a_3d_package_is_refused_for_2d_images(tmp_path):
    path, _ = write_package(tmp_path, dims=3)
    with pytest.raises(InitError, match=rf"{path} .* is a 3D U-Net, but the training data are not all NIfTI"):
        checked_init(path, CFG, sources(), BINARY, NO_REGIONS)
    checked_init(path, CFG, sources(kind="volume", slices=12, size=16), BINARY, NO_REGIONS)  # volumes: accepted


def test_instance_and_semantic_models_meet_only_where_their_outputs_agree(tmp_path):
    three_class = pd.DataFrame({"index": [0, 1, 2], "name": ["background", "interior", "boundary"],
                                "value": [0, 1, 2], "color": None, "ignore": False, "instance_target": "three_class"})
    path, _ = write_package(tmp_path, classes=three_class)
    with pytest.raises(InitError, match=r"model of the instance mode \(three_class\).* semantic classes"):
        checked_init(path, CFG, sources(), BINARY, NO_REGIONS)
    weight_map = three_class.iloc[:2].assign(name=["background", "foreground"], instance_target="weight_map")
    path, _ = write_package(tmp_path, classes=weight_map)
    checked_init(path, CFG, sources(), BINARY, NO_REGIONS)  # background/foreground both: the head is kept


def test_normalisation_far_apart_is_warned_naming_both():
    ct = applied("ct", ct=dict(low=-100.0, high=300.0, mean=50.0, std=40.0))
    assert normalization_warning(applied("zscore"), applied("zscore")) is None
    assert normalization_warning(ct, applied("ct", ct=dict(low=-90.0, high=290.0, mean=60.0, std=45.0))) is None
    far = normalization_warning(ct, applied("ct", ct=dict(low=0.0, high=900.0, mean=400.0, std=150.0)))
    assert "mean 50.0, std 40.0" in far and "mean 400.0, std 150.0" in far
    assert "normalised with zscore, the new data's with ct; set preprocess.normalization: zscore" in \
        normalization_warning(applied("zscore"), ct)


def test_config_refuses_an_init_that_names_no_package(tmp_path):
    config = dict(results=str(tmp_path), train=dict(init=None),
                  experiments=dict(a=dict(train=dict(init="b")), b=dict(train=dict(init="a")), c={}))
    assert "start from each other's packages (a -> b -> a)" in init_problems("a", config)[0]
    assert init_problems("c", config) == []
    config["experiments"]["c"] = dict(train=dict(init="c"))
    assert "(c -> c)" in init_problems("c", config)[0]
    config["experiments"]["c"] = dict(train=dict(init=str(tmp_path / "missing.pt")))
    assert "neither an experiment of this config" in init_problems("c", config)[0]
    (tmp_path / "old" / "package").mkdir(parents=True)
    (tmp_path / "old" / "package" / "old.pt").touch()  # an experiment of another config, its package under results
    config["experiments"]["c"] = dict(train=dict(init="old"))
    assert init_problems("c", config) == []


def test_a_3d_plan_takes_the_packages_pooling(tmp_path):
    path, model = write_package(tmp_path, dims=3)
    volumes = sources(kind="volume", slices=12, size=16)
    package = checked_init(path, CFG, volumes, BINARY, NO_REGIONS)
    network = dict(network=package_network(package.models[0]), name="the package")
    plan = make_plan(CFG, volumes, FINGERPRINT, 2, torch.device("cpu"), package=network)
    assert plan["settings"]["pool_kernels"] == dict(value=model.hparams["pool_kernels"], source="package",
                                                    reason="the network of the package")
    assert plan["settings"]["patch_size"]["value"] == [8, 16, 16] and plan["settings"]["resolution"]["value"] == 1
