"""The config read against its schema (`workflow/schemas/config.schema.yaml`) before Snakemake validates it: values
given with --config typed as the schema asks (Snakemake hands nested ones over as strings) and merged key by key
into the config files' sections, numbers in exponent notation that YAML 1.1 leaves strings, unknown keys named
with the closest known one, and keys a config file gives twice (YAML keeps the last without a word). Needs only
PyYAML, as Snakemake does: the Snakefile imports it.
"""

import copy
import difflib
import re

import yaml

from unetflow.config import ORDERED_MAPPINGS

NULL_WORDS = ("", "~", "null", "Null", "NULL", "None", "none")
BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
REPLACED_MAPPINGS = ORDERED_MAPPINGS  # a command-line value replaces them whole (class tables are not merged)
_INTEGER = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class CommandLineConfigError(ValueError):
    """A value given with --config cannot have the type the schema asks for; the message names the key."""


def resolved(schema: dict, root: dict) -> dict:
    """A schema with its '#/$defs/...' reference followed (one level)."""
    reference = schema.get("$ref", "")
    if reference.startswith("#/"):
        target = root
        for part in reference[2:].split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def child_schema(schema: dict, key: str) -> dict:
    """The schema of one key of an object (its property, else its additionalProperties, else no schema)."""
    if key in schema.get("properties", {}):
        return schema["properties"][key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else {}


def read_as(text: str, kind: str) -> tuple[object, bool]:
    """(value, True) when the command-line word reads as the JSON-schema type `kind`, else (None, False)."""
    if kind == "null":
        return None, text in NULL_WORDS
    if kind == "boolean":
        return BOOLEAN_WORDS.get(text.lower()), text.lower() in BOOLEAN_WORDS
    if kind == "integer" or (kind == "number" and _INTEGER.fullmatch(text)):
        return (int(text), True) if _INTEGER.fullmatch(text) else (None, False)
    if kind == "number":
        return (float(text), True) if _NUMBER.fullmatch(text) else (None, False)
    return (text, True) if kind == "string" else (None, False)  # a plain word is no list or mapping


def scalar(text: str, types: list[str]) -> tuple[object, bool]:
    """The word read as the first of `types` it fits, trying null, boolean, integer, number, then string."""
    for kind in ("null", "boolean", "integer", "number", "string"):
        if kind in types:
            value, fits = read_as(text, kind)
            if fits:
                return value, True
    return None, False


def typed_word(text: str, schema: dict, key: str):
    """A command-line word as its schema's type or enum member; without a schema, as YAML would read it."""
    if "enum" in schema:
        for member in schema["enum"]:
            if (member is None and text in NULL_WORDS) or (member is not None and str(member).lower() == text.lower()):
                return member
        raise CommandLineConfigError(f"config key {key} (from --config): {text!r} is not one of {schema['enum']}")
    types = schema.get("type", ["null", "boolean", "integer", "number", "string"])
    types = [types] if isinstance(types, str) else types
    value, fits = scalar(text, types)
    if not fits:
        expected = " or ".join({"integer": "an integer", "number": "a number", "boolean": "true/false",
                                "null": "null", "array": "a list [a, b]", "object": "a mapping {key: value}"}
                               .get(kind, kind) for kind in types)
        raise CommandLineConfigError(f"config key {key} (from --config): {text!r} is not {expected}")
    return value


def typed_value(value, schema: dict, root: dict, key: str):
    """A value given on the command line (Snakemake hands nested values over as strings) converted to the types
    the schema asks for, recursively; CommandLineConfigError naming the key when it cannot be."""
    schema = resolved(schema, root)
    if isinstance(value, dict):
        return {k: typed_value(v, child_schema(schema, k), root, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [typed_value(v, schema.get("items", {}), root, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return typed_word(value, schema, key)
    types = schema.get("type", [])
    return str(value) if types in ("string", ["string"]) else value  # Snakemake reads top-level words itself


def typed_command_line(values: dict, schema: dict) -> dict:
    """The --config values with the types the schema asks for; an experiment's sections are typed like the
    top-level sections they override."""
    typed = {}
    for key, value in values.items():
        if key == "experiments" and isinstance(value, dict):
            typed[key] = {name: typed_value(v, schema, schema, f"experiments.{name}") for name, v in value.items()}
        else:
            typed[key] = typed_value(value, child_schema(schema, key), schema, key)
    return typed


def unknown_keys(config: dict, schema: dict) -> list[str]:
    """Keys the schema does not know (a typo), each with the closest known key: what Snakemake's validation says in
    a dump of the whole schema. An experiment's sections are checked like the top-level sections."""
    def unknown(value, part: dict, prefix: str) -> list[str]:
        part = resolved(part, schema)
        if not isinstance(value, dict) or "properties" not in part:
            return []
        known, problems = list(part["properties"]), []
        for key, item in value.items():
            if key in known:
                problems += unknown(item, part["properties"][key], f"{prefix}{key}.")
            elif part.get("additionalProperties") is False:
                close = difflib.get_close_matches(str(key), known, 1)
                problems.append(f"config key {prefix}{key} is not a setting"
                                f"{f' (did you mean {prefix}{close[0]}?)' if close else ''}; config/README.md "
                                f"lists them")
        return problems

    experiments = config.get("experiments")
    problems = unknown({k: v for k, v in config.items() if k != "experiments"}, schema, "")
    for name, settings in (experiments.items() if isinstance(experiments, dict) else []):
        problems += unknown(settings, schema, f"experiments.{name}.")
    return problems


def exponent_numbers(config: dict, schema: dict) -> dict:
    """`config` with numbers written in exponent notation without a dot (`lr: 3e-4`), which YAML 1.1 (PyYAML, so
    Snakemake's config files) reads as strings, read as numbers where the schema asks for a number."""
    def numbers(value, part: dict):
        part = resolved(part, schema)
        if isinstance(value, dict):
            return {k: numbers(v, child_schema(part, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers(v, part.get("items", {})) for v in value]
        types = part.get("type", [])
        types = [types] if isinstance(types, str) else types
        if isinstance(value, str) and "number" in types and "string" not in types and _NUMBER.fullmatch(value):
            return float(value)
        return value

    experiments = config.get("experiments")
    result = {key: numbers(value, child_schema(schema, key)) for key, value in config.items()}
    if isinstance(experiments, dict):  # an experiment's sections are typed like the top-level sections
        result["experiments"] = {name: numbers(value, schema) for name, value in experiments.items()}
    return result


def with_command_line(config: dict, typed: dict) -> dict:
    """`config` (Snakemake's merge of the config files and --config) with the typed --config values merged in key
    by key: a nested value changes only the keys it gives; class tables (data.classes, data.colors) are replaced."""
    result = copy.deepcopy(config)
    for key, value in typed.items():
        nested = isinstance(value, dict) and isinstance(result.get(key), dict) and key not in REPLACED_MAPPINGS
        result[key] = with_command_line(result[key], value) if nested else copy.deepcopy(value)
    return result


def duplicate_keys(path) -> list[str]:
    """'<file> line N: key K is given twice (first at line M) ...' for every key a YAML (or JSON) config file repeats
    in one mapping, where YAML keeps only the last; [] for a file YAML cannot read (Snakemake reports that)."""
    try:
        with open(path, encoding="utf-8") as file:
            nodes = [yaml.compose(file)]
    except yaml.YAMLError:
        return []
    repeated = []
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in first:
                    repeated.append((key.start_mark.line + 1, name, first[name]))
                first.setdefault(name, key.start_mark.line + 1)
                nodes.append(value)
        elif isinstance(node, yaml.SequenceNode):
            nodes.extend(node.value)
    return [f"{path} line {line}: key {name} is given twice (first at line {earlier}), and YAML keeps only the "
            f"last without a word; merge them" for line, name, earlier in sorted(repeated)]
