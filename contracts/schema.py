"""Generates `schemas/`: a JSON Schema per kind and the AsyncAPI 3.0 document.

`python -m contracts.schema` writes the files; `--check` lists those out of date.
"""

import argparse
import json
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from contracts import KINDS
from contracts.asyncapi import asyncapi
from contracts.messages import REPLY_KIND, Reply

__all__ = ["asyncapi", "check", "generate", "main", "write"]

PACKAGE_DIRECTORY: Final = Path(__file__).parent
SCHEMAS: Final = "schemas"

_JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$-]*")


def generate() -> dict[str, str]:
    """Every generated file, by its name relative to the package directory."""
    models: dict[str, type[BaseModel]] = {**KINDS, REPLY_KIND: Reply}
    files = {
        f"{SCHEMAS}/{kind}.json": _json(
            {"$schema": _JSON_SCHEMA_DIALECT, **model.model_json_schema()}
        )
        for kind, model in models.items()
    }
    files[f"{SCHEMAS}/asyncapi.yaml"] = _yaml(asyncapi())
    return dict(sorted(files.items()))


def write(directory: Path = PACKAGE_DIRECTORY) -> list[Path]:
    """Bring the files under `directory` up to date; the paths written or removed."""
    files = generate()
    changed = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for name in _stale(directory, files.keys()):
        (directory / name).unlink()
        changed.append(directory / name)
    return changed


def check(directory: Path = PACKAGE_DIRECTORY) -> list[str]:
    """Names of the files that are missing, differ from `generate()` or are stale."""
    files = generate()
    differ = [
        name
        for name, text in files.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(differ + _stale(directory, files.keys()))


def _stale(directory: Path, expected: Collection[str]) -> list[str]:
    """Generated-looking files that `generate()` no longer produces."""
    found = [
        f"{SCHEMAS}/{path.name}"
        for pattern in ("*.json", "*.yaml")
        for path in (directory / SCHEMAS).glob(pattern)
    ]
    return sorted(name for name in found if name not in expected)


def _json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _yaml(value: object) -> str:
    """Block-style YAML, keys sorted; strings are JSON strings, valid YAML scalars."""
    return "\n".join(_yaml_lines(value, 0)) + "\n"


def _yaml_lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for key in sorted(value):
            name = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)
            lines.extend(_yaml_entry(f"{pad}{name}:", value[key], indent + 2))
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            # "- " then the item as if indented by two: a compact block entry.
            first, *rest = _yaml_lines(item, indent + 2)
            lines.extend([f"{pad}- {first.lstrip()}", *rest])
        return lines
    return [pad + json.dumps(value)]


def _yaml_entry(head: str, value: object, indent: int) -> list[str]:
    if isinstance(value, dict | list) and value:
        return [head, *_yaml_lines(value, indent)]
    return [f"{head} {json.dumps(value)}"]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the schema files, or with --check list those out of date (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m contracts.schema")
    parser.add_argument("--check", action="store_true", help="change nothing")
    parser.add_argument("--directory", type=Path, default=PACKAGE_DIRECTORY)
    args = parser.parse_args(argv)
    if args.check:
        differ = check(args.directory)
        for name in differ:
            sys.stderr.write(f"out of date: {name}\n")
        return 1 if differ else 0
    for path in write(args.directory):
        sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
