"""Small helpers shared by the subcommands."""

from __future__ import annotations

import json
from pathlib import Path


def add_json_argument(parser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the figures of this run to PATH as JSON")


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_to_builtin) + "\n")


def _to_builtin(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
