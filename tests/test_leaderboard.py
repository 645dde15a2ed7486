"""The leaderboard reads each experiment's U-Net (dims, patch size, parameters) from its training plan."""

import json

import pytest

from unetflow.evaluate.leaderboard import model_traits


def test_model_traits_come_from_the_plan(tmp_path):
    plan = tmp_path / "plan.json"
    settings = {"dims": {"value": 3}, "patch_size": {"value": [14, 24, 20]}}
    plan.write_text(json.dumps({"device": "cpu", "parameters": 1234, "settings": settings}))
    assert model_traits(str(plan)) == {"dims": 3, "patch_size": "14x24x20", "parameters": 1234}


def test_a_plan_without_a_parameter_count_is_refused_naming_the_file(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"device": "cpu", "settings": {"dims": {"value": 2}, "patch_size": {"value": [8, 8]}}}))
    with pytest.raises(ValueError, match=f"{plan}: the plan has no parameter count.*--forcerun train"):
        model_traits(str(plan))
