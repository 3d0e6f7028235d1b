"""Generate the README's config tables and the stack files' JSON Schema from components/config_schema.py.

    .venv/bin/python tools/config_docs.py           rewrite README.md and schema/stack-config.schema.json
    .venv/bin/python tools/config_docs.py --check   only say which is out of date (exit 1 if any)
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import PROJECT  # noqa: E402
from components.config_schema import MIRROR_PRESETS, Mirrors, StackConfig, bounds  # noqa: E402

README = ROOT / "README.md"
SCHEMA = ROOT / "schema" / "stack-config.schema.json"
SCHEMA_COMMENT = f"# yaml-language-server: $schema={SCHEMA.relative_to(ROOT)}"
"""First line of every committed Pulumi.<stack>.yaml, so that editors validate it."""


def cell(value: Any) -> str:
    """A default as the table shows it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`" if str(value) else '`""`'


def _entry_model(annotation: Any) -> Any:
    """The model of a section, or of each entry of a map section (`registries.<host>`), or None."""
    if typing.get_origin(annotation) is dict:
        annotation = typing.get_args(annotation)[1]
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def rows() -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every key, section keys as `section.key` (map entries as
    `section.<host>.key`), in declaration order."""
    found = []
    for top in StackConfig.model_fields.values():
        model = _entry_model(top.annotation)
        keys = model.model_fields.values() if model else [top]
        prefix = f"{top.alias}.<host>" if typing.get_origin(top.annotation) is dict else top.alias
        if typing.get_origin(top.annotation) is dict:
            found.append((top.alias, cell(top.get_default(call_default_factory=True)), top.description))
        for key in keys:
            name = top.alias if key is top else f"{prefix}.{key.alias}"
            default = "required" if key.is_required() else cell(key.get_default(call_default_factory=True))
            phrase = bounds(key)
            found.append((name, default, key.description + (f"; {phrase}" if phrase else "")))
    return found


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def config_table() -> str:
    return _table(["key", "default", "meaning"], [[f"`{name}`", default, meaning] for name, default, meaning in rows()])


def presets_table() -> str:
    """What each mirror preset sets, next to upstream (preset `none`)."""
    presets = [name for name in MIRROR_PRESETS if name != "none"]
    body = [
        [f"`{key.alias}`", cell(key.default), *[cell(MIRROR_PRESETS[p][key.alias]) if key.alias in MIRROR_PRESETS[p] else "unchanged" for p in presets]]
        for name, key in Mirrors.model_fields.items()
        if name != "preset"
    ]
    return _table(["key", "`none` (upstream)", *[f"`{p}`" for p in presets]], body)


class _WithoutFieldTitles(GenerateJsonSchema):
    """pydantic titles each key with its own name again; editors show the description instead."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def stack_file_schema() -> dict[str, Any]:
    """A whole Pulumi.<stack>.yaml: our keys under `config`, with the namespace prefix; other namespaces pass."""
    ours = StackConfig.model_json_schema(by_alias=True, schema_generator=_WithoutFieldTitles)
    prefix = f"{PROJECT}:"
    keys = {prefix + name: schema for name, schema in ours["properties"].items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Pulumi.<stack>.yaml of {PROJECT}",
        "description": "Generated from components/config_schema.py by tools/config_docs.py; do not edit.",
        "type": "object",
        "properties": {
            "config": {
                "type": "object",
                "properties": keys,
                "required": [prefix + name for name in ours.get("required", [])],
                "propertyNames": {"anyOf": [{"not": {"pattern": f"^{prefix}"}}, {"enum": list(keys)}]},
            },
        },
        "$defs": ours["$defs"],
    }


def _between(text: str, marker: str, body: str) -> str:
    """text with what stands between <!-- marker:begin --> and <!-- marker:end --> replaced by body."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found and found_end):
        raise SystemExit(f"{README}: markers {begin} ... {end} not found")
    return f"{head}{begin}\n{body}\n{end}{tail}"


def generated() -> dict[Path, str]:
    """Each generated file's full text as it should be."""
    readme = _between(README.read_text(encoding="utf-8"), "config-table", config_table())
    readme = _between(readme, "mirror-presets", presets_table())
    return {README: readme, SCHEMA: json.dumps(stack_file_schema(), indent=2) + "\n"}


def drifted() -> list[Path]:
    """The generated files that differ from what the schema gives."""
    return [path for path, text in generated().items() if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        stale = drifted()
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run .venv/bin/python tools/config_docs.py", file=sys.stderr)
        return 1 if stale else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
