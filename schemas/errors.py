"""Validation errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class SchemaError(ValueError):
    """A p3d file failed validation; the message says where and why."""


def describe(err: ValidationError, path: str | Path, line: int | None = None) -> SchemaError:
    where = f"{path}:{line}" if line is not None else str(path)
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"field '{field}': {e['msg']}")
    return SchemaError(f"{where}: " + "; ".join(parts))
