"""docs/config.md, the reference of the configuration's keys, is the schema's: every key
has a description, and the file is what workflow/scripts/config_doc.py makes of it."""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import yaml
from helpers import REPO

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
DOC = REPO / "docs" / "config.md"


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "config_doc", REPO / "workflow" / "scripts" / "config_doc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


config_doc = load_generator()


def schema_properties(schema: dict) -> dict[str, dict]:
    """Path -> node of every property reachable from the top, ``$ref``s followed (a
    property's own keys over its target's); not the conditions of ``if``."""
    def target(ref: str) -> dict:
        node = schema
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def merged(node: dict) -> dict:
        while "$ref" in node:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target(node["$ref"]), **rest}
        return node

    found: dict[str, dict] = {}

    def visit(node: dict, path: str) -> None:
        node = merged(node)
        for key, prop in node.get("properties", {}).items():
            found[f"{path}.{key}".lstrip(".")] = merged(prop)
            visit(prop, f"{path}.{key}")
        for key in ("additionalProperties", "items", "then"):
            if isinstance(node.get(key), dict):
                visit(node[key], f"{path}.<{key}>")
        for key in ("oneOf", "anyOf", "allOf"):
            for i, sub in enumerate(node.get(key, [])):
                visit(sub, f"{path}.<{key}{i}>")

    visit(schema, "")
    return found


def test_every_schema_property_has_a_description():
    props = schema_properties(SCHEMA)
    assert len(props) > 100  # the walk reaches the $defs (datasets, codecs, settings)
    missing = [path for path, node in props.items()
               if not str(node.get("description", "")).strip()]
    assert not missing, f"schema properties without a description: {', '.join(missing)}"


def test_config_doc_is_generated_from_the_schema():
    expected = config_doc.render(SCHEMA)
    actual = DOC.read_text() if DOC.is_file() else ""
    assert actual == expected, (
        "docs/config.md is not what workflow/scripts/config_doc.py makes of "
        "workflow/schemas/config.schema.yaml: run `make config-doc` and commit the result")


def test_config_doc_lists_every_key_with_its_facts():
    text = config_doc.render(SCHEMA)
    assert text.startswith("# Configuration keys\n\nGenerated from "
                           "`workflow/schemas/config.schema.yaml` by "
                           "`workflow/scripts/config_doc.py`")
    assert "`make config-doc`" in text.split("\n\n")[1]
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines()
            if line.startswith("| `")}
    assert "`null`" in rows["figures.error_image.delta"]
    assert "integer >= 0 or null" in rows["figures.error_image.delta"]
    assert "`lzf`, `gzip` or `null` | `lzf` |" in rows["datasets.<name>.h5_compression"]
    assert "| *required* |" in rows["datasets.<name>.patches"]
    assert "[gdn training settings](#gdn-training-settings)" in rows["codecs.<label>.settings"]
    assert "2\\*\\*bit_depth" in rows["datasets.<name>.psnr_peak"]  # no emphasis
    assert "`^(https?\\|file)://`" in rows["datasets.<name>.base_url"]  # no column break
    assert "recompute_blocks" in rows and "codecs.<label>.settings.ohm_symbols" in rows
    assert "Keys of `linerwkv.settings` and of `linerwkv.size_settings.<size>`" in text
    assert config_doc.render(copy.deepcopy(SCHEMA)) == text  # deterministic


def test_config_doc_refuses_a_key_it_cannot_document():
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["evaluation"]["properties"]["new_key"] = {"type": "integer"}
    with pytest.raises(config_doc.SchemaError, match="new_key: no description"):
        config_doc.render(schema)
    # keys of objects inside lists are in no table
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["extra"] = {
        "description": "a list", "type": "array",
        "items": {"type": "object", "properties": {"x": {"description": "x"}}}}
    with pytest.raises(config_doc.SchemaError, match="in no section.*extra/items/properties/x"):
        config_doc.render(schema)


def test_config_doc_command_writes_the_file(tmp_path, capsys):
    out = tmp_path / "config.md"
    assert config_doc.main(["--out", str(out)]) == 0
    assert out.read_text() == config_doc.render(SCHEMA)
    assert config_doc.main(["--schema", str(tmp_path / "missing.yaml")]) == 2
    assert "config_doc: error:" in capsys.readouterr().err
