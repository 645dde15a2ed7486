"""The leaderboard reads each experiment's U-Net (dims, patch size, parameters) from its plan (<experiment>/plan.json,
which the plan rule writes with the parameter count of the U-Net it planned)."""

import json

from unetflow.evaluate.leaderboard import model_traits


def test_model_traits_come_from_the_plan(tmp_path):
    plan = tmp_path / "plan.json"
    settings = {"dims": {"value": 3}, "resolution": {"value": 1.0}, "patch_size": {"value": [14, 24, 20]}}
    plan.write_text(json.dumps({"device": "cpu", "parameters": 1234, "settings": settings}))
    assert model_traits(str(plan)) == {"dims": 3, "resolution": 1.0, "patch_size": "14x24x20", "parameters": 1234}
