"""The reference of the workflow configuration's keys (docs/config.md), from its schema.

Usage::

    python workflow/scripts/config_doc.py                      # print the Markdown
    python workflow/scripts/config_doc.py --out docs/config.md # write it (make config-doc)
    python workflow/scripts/config_doc.py --schema other.yaml  # another schema

One section per part of the configuration (``SECTIONS``), each a table ``| key | type |
default | meaning |``: keys written as their path from the top (``figures.error_image.delta``;
``<name>``, ``<label>``, ``<size>`` stand for the names an entry is given; a section used at
several places, such as the LineRWKV training settings, gives them relative to those places),
``$ref`` resolved, bounds and enumerations shown, defaults as the schema fills them in,
meanings from the ``description`` of every key. A key that is an object with keys of its own
is followed by them, unless a section of its own lists them (then its row links there). The
output depends only on the schema; every property of the schema must land in some section, or
this script fails naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "workflow/schemas/config.schema.yaml"
SCRIPT = "workflow/scripts/config_doc.py"


@dataclass(frozen=True)
class Section:
    """One table: the keys of the object at ``pointer`` (a JSON pointer into the schema)."""

    title: str
    pointer: str
    level: int = 2


SECTIONS = (
    Section("Top-level keys", "#"),
    Section("`datasets` entries", "#/properties/datasets/additionalProperties"),
    Section("Kind `synthetic`", "#/$defs/synthetic", 3),
    Section("Kind `hyspecnet`", "#/$defs/hyspecnet", 3),
    Section("Kind `geotiff_folder`", "#/$defs/geotiff_folder", 3),
    Section("`codecs` entries", "#/$defs/codec"),
    Section("`linerwkv`", "#/properties/linerwkv"),
    Section("LineRWKV training settings", "#/$defs/train_settings"),
    Section("gdn training settings", "#/$defs/gdn_settings"),
    Section("`evaluation`", "#/properties/evaluation"),
    Section("`figures`", "#/properties/figures"),
    Section("`references`", "#/properties/references/additionalProperties"),
)

#: What stands for the names of a mapping's entries in key paths (default ``<key>``).
PLACEHOLDERS = {"datasets": "<name>", "codecs": "<label>", "references": "<name>",
                "linerwkv.size_settings": "<size>"}

INTRO = (
    "The workflow checks its configuration against this schema before any job runs (a key "
    "it does not list is an error) and fills in the defaults below. `config/config.yaml` "
    "is the built-in default; `config/hyspecnet.yaml` and `config/enmap-potsdam.yaml` are "
    "complete examples."
)
LEGEND = (
    "Keys are written as their path from the top of the configuration; `<name>`, "
    "`<label>` and `<size>` stand for the name of a dataset, of a codec entry or of a "
    "reference, and for a LineRWKV size. *default* is the value filled in when the key is "
    "left out (*required*: it must be given); where it is empty, *meaning* says what "
    "applies."
)


class SchemaError(Exception):
    """The schema has a part this script cannot document."""


@dataclass(frozen=True)
class Row:
    pointer: str
    key: str
    type: str
    default: str
    meaning: str


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _code(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{text}`"


def _text(text: str) -> str:
    """Schema text as Markdown: on one line, ``*`` and ``<`` escaped outside code spans
    (``2**bit_depth``, ``l<lambda>``)."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(part if i % 2 else re.sub(r"([*<])", r"\\\1", part)
                   for i, part in enumerate(parts))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _number(value: float) -> str:
    return json.dumps(value)


def _either(parts: list[str]) -> str:
    """``a or b``; ``a, or b`` when a part has its own alternatives."""
    if len(parts) == 1:
        return parts[0]
    if any(" or " in p for p in parts):
        return ", or ".join(parts)
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


class Schema:
    """A JSON schema (as loaded from YAML) with its ``$ref``s resolved."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def at(self, pointer: str) -> dict:
        if pointer != "#" and not pointer.startswith("#/"):
            raise SchemaError(f"{pointer}: only local references are supported")
        node = self.data
        for part in pointer[2:].split("/") if pointer != "#" else []:
            node = node[int(part)] if isinstance(node, list) else node[_unescape(part)]
        return node

    def sub(self, pointer: str, key: str) -> str:
        """The pointer of ``key`` of the node at ``pointer``: its own, else its ``$ref``'s."""
        node = self.at(pointer)
        if key in node or "$ref" not in node:
            return f"{pointer}/{key}"
        return self.sub(node["$ref"], key)

    def resolve(self, pointer: str) -> tuple[str, dict]:
        """The node at ``pointer`` with ``$ref``s followed (its own keys over the
        target's) and the pointer of the node its properties belong to."""
        node = self.at(pointer)
        if "$ref" not in node:
            return pointer, node
        if "properties" in node:
            raise SchemaError(f"{pointer}: properties next to $ref")
        target, resolved = self.resolve(node["$ref"])
        return target, {**resolved, **{k: v for k, v in node.items() if k != "$ref"}}

    def properties(self) -> list[str]:
        """The pointer of every property reachable from the top (through ``$ref``s,
        ``additionalProperties``, ``items``, ``oneOf``/``anyOf``/``allOf`` and ``then``;
        not ``if``, whose properties are conditions, not keys)."""
        found: list[str] = []
        seen: set[str] = set()

        def visit(pointer: str) -> None:
            pointer, node = self.resolve(pointer)
            if pointer in seen:
                return
            seen.add(pointer)
            for key in node.get("properties", {}):
                child = f"{pointer}/properties/{_escape(key)}"
                found.append(child)
                visit(child)
            for sub in self.children(pointer):
                visit(sub)

        visit("#")
        return found

    def children(self, pointer: str) -> Iterator[str]:
        """Pointers of the subschemas of the node at ``pointer`` that are not its
        properties (nor ``if`` conditions)."""
        _, node = self.resolve(pointer)
        for key in ("additionalProperties", "items", "then"):
            if isinstance(node.get(key), dict):
                yield self.sub(pointer, key)
        for key in ("oneOf", "anyOf", "allOf"):
            for i in range(len(node.get(key, []))):
                yield f"{self.sub(pointer, key)}/{i}"

    # What a key is.

    def type_of(self, pointer: str) -> str:
        _, node = self.resolve(pointer)
        if "const" in node:
            return _code(node["const"])
        if "enum" in node:
            return _either([_code(v) for v in node["enum"]])
        for key in ("oneOf", "anyOf"):
            if key in node:
                return _either([self.type_of(f"{self.sub(pointer, key)}/{i}")
                                for i in range(len(node[key]))])
        types = node.get("type")
        if types is None:
            return "any"
        parts = []
        for name in [types] if isinstance(types, str) else types:
            if name == "array":
                parts.append(self._array(pointer, node))
            elif name in ("integer", "number"):
                parts.append(name + self._bounds(node))
            elif name == "string" and "pattern" in node:
                parts.append(f"string matching {_code(node['pattern'])}")
            elif name == "object" and node.get("minProperties"):
                n = node["minProperties"]
                parts.append(f"object (at least {n} {'entry' if n == 1 else 'entries'})")
            else:
                parts.append(name)
        return _either(parts)

    @staticmethod
    def _bounds(node: dict) -> str:
        low, high = node.get("minimum"), node.get("maximum")
        if low is not None and high is not None:
            return f" in [{_number(low)}, {_number(high)}]"
        out = []
        if low is not None:
            out.append(f">= {_number(low)}")
        if node.get("exclusiveMinimum") is not None:
            out.append(f"> {_number(node['exclusiveMinimum'])}")
        if high is not None:
            out.append(f"<= {_number(high)}")
        if node.get("exclusiveMaximum") is not None:
            out.append(f"< {_number(node['exclusiveMaximum'])}")
        return " " + ", ".join(out) if out else ""

    def _array(self, pointer: str, node: dict) -> str:
        text = "array"
        if isinstance(node.get("items"), dict):
            text += " of " + self.type_of(self.sub(pointer, "items"))
        low, high = node.get("minItems"), node.get("maxItems")
        notes = []
        if low is not None and low == high:
            notes.append(f"{low} items")
        else:
            if low:
                notes.append(f"at least {low}")
            if high is not None:
                notes.append(f"at most {high}")
        if node.get("uniqueItems"):
            notes.append("distinct")
        return text + (f" ({', '.join(notes)})" if notes else "")

    def meaning(self, pointer: str) -> str:
        description = self.resolve(pointer)[1].get("description")
        if not description:
            raise SchemaError(f"{pointer}: no description")
        return " ".join(description.split())

    # The tables.

    def sections_under(self, pointer: str, path: str,
                       sections: dict[str, Section]) -> list[tuple[Section, str]]:
        """The sections that list the keys of the value at ``pointer`` (written ``path``),
        with the path of the object each documents, found through ``$ref``s, entries of a
        mapping and alternatives (not through properties)."""
        placeholder = PLACEHOLDERS.get(path, "<key>")
        found: list[tuple[Section, str]] = []
        todo, seen = [(pointer, path)], set()
        while todo:
            here, where = todo.pop(0)
            target, node = self.resolve(here)
            if target in seen:
                continue
            seen.add(target)
            if target in sections:
                found.append((sections[target], where))
                continue
            for child in self.children(here):
                step = f".{placeholder}" if child.endswith("/additionalProperties") else ""
                todo.append((child, where + step))
        return found

    def rows(self, pointer: str, prefix: str, sections: dict[str, Section],
             links: dict[str, list[str]]) -> Iterator[Row]:
        """Rows of the keys of the object at ``pointer``, its nested keys dotted; records
        in ``links`` (section pointer -> paths) the sections other keys are listed in."""
        target, node = self.resolve(pointer)
        required = node.get("required", [])
        for key in node.get("properties", {}):
            child = f"{target}/properties/{_escape(key)}"
            path = prefix + key
            under = self.sections_under(child, path, sections)
            meaning = self.meaning(child)
            if under:
                refs = ", ".join(f"[{s.title}](#{slug(s.title)})"
                                 for s in dict.fromkeys(s for s, _ in under))
                meaning = f"{meaning.rstrip('.')}; see {refs}"
                for section, where in under:
                    links.setdefault(section.pointer, []).append(where)
            resolved = self.resolve(child)[1]
            if "default" in resolved:
                default = _code(resolved["default"])
            else:
                default = "*required*" if key in required else ""
            yield Row(child, path, self.type_of(child), default, meaning)
            if not under and "properties" in resolved:
                yield from self.rows(child, path + ".", sections, links)

    def further(self, pointer: str, path: str, sections: dict[str, Section],
                links: dict[str, list[str]]) -> list[Section]:
        """The sections listing more keys of the object at ``pointer`` (written ``path``)
        than its properties: those of its alternatives and conditional parts."""
        found = []
        for child in self.children(pointer):
            if child.endswith("/additionalProperties"):
                continue
            for section, where in self.sections_under(child, path, sections):
                links.setdefault(section.pointer, []).append(where)
                found.append(section)
        return list(dict.fromkeys(found))


def render(data: dict, source: str = SCHEMA) -> str:
    """The Markdown reference of the configuration schema ``data`` (read from ``source``)."""
    schema = Schema(data)
    sections = {s.pointer: s for s in SECTIONS}
    if len({slug(s.title) for s in SECTIONS}) != len(SECTIONS):
        raise SchemaError("two sections have the same title")
    # Walk from the top: a section's keys are written from where it is used (the one path
    # it is used at, or relative when several); again until those paths are all known.
    used: dict[str, list[str]] = {}
    for _ in range(len(SECTIONS) + 1):
        links: dict[str, list[str]] = {"#": [""]}
        tables: dict[str, list[Row]] = {}
        further: dict[str, list[Section]] = {}
        todo = ["#"]
        while todo:
            pointer = todo.pop(0)
            paths = list(dict.fromkeys(used.get(pointer, links[pointer])))
            prefix = paths[0] + "." if len(paths) == 1 and paths[0] else ""
            tables[pointer] = list(schema.rows(pointer, prefix, sections, links))
            further[pointer] = [] if not prefix else schema.further(
                pointer, prefix[:-1], sections, links)
            todo += [p for p in links if p not in tables and p not in todo]
        if links == used:
            break
        used = links
    else:
        raise SchemaError("the paths of the sections do not settle")
    unreached = [s.title for s in SECTIONS if s.pointer not in tables]
    if unreached:
        raise SchemaError(f"sections not reached from the top: {', '.join(unreached)}")
    listed = {row.pointer for rows in tables.values() for row in rows}
    missing = [p for p in schema.properties() if p not in listed]
    if missing:
        raise SchemaError(f"properties in no section (add one to SECTIONS): "
                          f"{', '.join(missing)}")

    out = [
        "# Configuration keys",
        "",
        f"Generated from `{source}` by `{SCRIPT}`; do not edit by hand: after changing the "
        f"schema, run `make config-doc`.",
        "",
        INTRO,
        "",
        LEGEND,
        "",
        "Contents: " + ", ".join(f"[{s.title}](#{slug(s.title)})" for s in SECTIONS) + ".",
    ]
    for section in SECTIONS:
        out += ["", "#" * section.level + " " + section.title, ""]
        paths = list(dict.fromkeys(links[section.pointer]))
        if section.pointer != "#":
            where = " and of ".join(_code(p) for p in paths)
            intro = f"Keys of {where}"
            description = schema.at(section.pointer).get("description")
            intro += f": {_text(description)}." if description else "."
            if further[section.pointer]:
                intro += " More keys: " + ", ".join(
                    f"[{s.title}](#{slug(s.title)})" for s in further[section.pointer]) + "."
            out += [intro, ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| {_cell(_code(r.key))} | {_cell(_text(r.type))} | {_cell(r.default)} | "
                f"{_cell(_text(r.meaning))} |" for r in tables[section.pointer]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the Markdown reference of the workflow configuration's keys "
                    "(docs/config.md), generated from its JSON schema.")
    parser.add_argument("--schema", type=Path, default=ROOT / SCHEMA,
                        help=f"the schema (default: {SCHEMA})")
    parser.add_argument("--out", type=Path, help="write the Markdown to this file instead")
    args = parser.parse_args(argv)
    try:
        data = yaml.safe_load(args.schema.read_text())
        source = SCHEMA if args.schema.resolve() == (ROOT / SCHEMA).resolve() \
            else str(args.schema)
        text = render(data, source)
    except (OSError, yaml.YAMLError, SchemaError, KeyError) as exc:
        print(f"config_doc: error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
