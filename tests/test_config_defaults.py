"""Defaults have one home, the schema: config/config.yaml sets nothing else, and config/README.md's default column
says what the schema says, key by key."""

import re
from pathlib import Path

import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
ROW = re.compile(r"^\| `([a-z_]+)` \| (.*?) \| .*\|$")
SECTION = re.compile(r"^## (?:`([a-z_]+)`|(Top level))")


def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def section_properties(root: dict, name: str | None) -> dict:
    """The properties of a top-level section of the schema (or of the top level for None), references followed."""
    if name is None:
        return root["properties"]
    node = root["properties"][name]
    if "$ref" in node:
        node = root["$defs"][node["$ref"].split("/")[-1]]
    return node["properties"]


def effective_default(node: dict):
    """A key's default as a config gets it: an object's default filled with its properties' defaults."""
    default = node.get("default")
    if isinstance(default, dict) and "properties" in node:
        return {**{key: effective_default(child) for key, child in node["properties"].items() if "default" in child},
                **default}
    return default


def documented_defaults() -> dict[tuple[str | None, str], object]:
    """{(section, key): default} of every table row of config/README.md under a '## `section`' heading."""
    defaults, section = {}, "-"
    for line in (REPO / "config" / "README.md").read_text().splitlines():
        heading = SECTION.match(line)
        if heading:
            section = heading.group(1)  # None for the top level
        elif line.startswith("`train.augment`"):
            section = "-"  # the augmentation table documents unetflow.train.augment's defaults (test_augment)
        elif section != "-" and (row := ROW.match(line)):
            defaults[(section, row.group(1))] = yaml.safe_load(row.group(2).replace("`", "") or "''")
    return defaults


def test_every_documented_default_is_the_schema_default():
    root, documented = schema(), documented_defaults()
    assert len(documented) > 60  # the tables were found
    actual = {key: effective_default(section_properties(root, key[0])[key[1]]) for key in documented}
    wrong = {key: (value, actual[key]) for key, value in documented.items() if actual[key] != value}
    assert not wrong, f"config/README.md default column differs from the schema (documented, schema): {wrong}"


def test_every_schema_key_is_documented():
    root, documented = schema(), documented_defaults()
    sections = [None, *(name for name, node in root["properties"].items()
                        if name != "experiments" and (node.get("type") == "object" or "$ref" in node))]
    missing = [(section, key) for section in sections for key, node in section_properties(root, section).items()
               if (section, key) not in documented and (section is not None or "properties" not in node
                                                        and "$ref" not in node)]
    assert not missing, f"keys of the schema without a row in config/README.md: {missing}"


def test_config_yaml_sets_only_the_data_and_the_schema_fills_the_rest():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert set(config) == {"data"} and set(config["data"]) <= {"images", "masks"}
    validate(config, str(SCHEMA))
    assert config["train"]["lr_schedule"] == schema()["$defs"]["train"]["properties"]["lr_schedule"]["default"]
    assert config["experiments"] == {"unet": {}} and config["split"]["test"] == 0.15
