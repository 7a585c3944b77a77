"""Shared pieces of the dataset converters: problem bookkeeping, file reading, box filling.

A converter never drops an entry silently: each entry either becomes a valid `Record`, is
listed in `ConversionResult.problems` with its id and the reason, or is skipped by a rule of the
dataset's own loader and listed in `ConversionResult.skipped` with its reason.

`p3d convert` writes `--out` only from a complete result (atomically, schemas/io.py): when no entry
converted (most often a file of another dataset) or, with `--strict`, when any entry failed, it
exits non-zero naming the first problem and leaves an existing `--out` as it was (`refusal`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from schemas.manifest import Box3D, ObjectInfo
from schemas.record import Record

SceneObjects = dict[str, list[ObjectInfo]]


@dataclass
class ConversionResult:
    source: str
    records: list[Record] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (entry id, reason)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry id, the loader's rule)

    def add(self, entry_id: str, build: Callable[[], Record | None]) -> None:
        """Run one entry's builder; a KeyError / ValueError / validation error becomes a problem."""
        try:
            rec = build()
        except ValidationError as e:
            fields = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            self.problems.append((entry_id, f"invalid record: {fields}"))
            return
        except KeyError as e:
            self.problems.append((entry_id, f"missing field {e.args[0]!r}"))
            return
        except (ValueError, TypeError) as e:
            self.problems.append((entry_id, str(e)))
            return
        if rec is not None:
            self.records.append(rec)

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.records)} records, {len(self.problems)} problems"]
        lines += [f"  {i}: {why}" for i, why in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} entries as the dataset's loader does:")
            lines += [f"  {i}: {why}" for i, why in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more skipped")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def refusal(self, strict: bool = False) -> tuple[int, str] | None:
        """(exit code, reason) when this result must not be written, else None: 2 when no entry
        converted (the first problem names why, e.g. a file of another dataset), 1 under `strict`
        when any entry failed."""
        if not self.records:
            if self.problems:
                entry, why = self.problems[0]
                return 2, (f"no {self.source} record converted; first problem: {entry}: {why} "
                           f"(is this a {self.source} file?)")
            if self.skipped:
                entry, why = self.skipped[0]
                return 2, f"every {self.source} entry was skipped; first: {entry}: {why}"
            return 2, f"no {self.source} entries in the given files"
        if strict and self.problems:
            entry, why = self.problems[0]
            return 1, f"--strict: {len(self.problems)} entries failed; first: {entry}: {why}"
        return None


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e.msg} (line {e.lineno})") from e


def read_json_or_jsonl(path: Path, result: ConversionResult) -> list:
    """A JSON list, or JSON Lines (a bad line becomes a problem named by its line number)."""
    path = Path(path)
    text = path.read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return read_json(path)
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            result.problems.append((f"{path.name}:{line_no}", f"invalid JSON: {e.msg}"))
    return rows


def expect_list(data, path: Path, what: str) -> list:
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


def split_from_name(name: str) -> str | None:
    """The split a release file's name says ("train", "val" or "test"), None where it says none."""
    return next((split for split in ("train", "val", "test") if split in name), None)


def entries_with_split(paths: list[Path], what: str) -> list[tuple[str | None, int, object]]:
    """Every entry of the JSON-list files as (split from its file's name, index in its file, entry)."""
    out = []
    for path in paths:
        split = split_from_name(Path(path).name)
        out += [(split, i, entry) for i, entry in enumerate(expect_list(read_json(path), path, what))]
    return out


def boxes_for(scene_objects: SceneObjects | None, scene_id: str, ids: Iterable[int]) -> list[Box3D]:
    """GT boxes of these instance ids; [] without a boxes file; ValueError if an id is unknown."""
    if scene_objects is None:
        return []
    if scene_id not in scene_objects:
        raise ValueError(f"scene {scene_id} is not in the boxes file")
    by_id = {o.id: o for o in scene_objects[scene_id]}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"object ids {missing} are not in the boxes file for scene {scene_id}")
    return [by_id[i].box for i in ids]


def no_boxes_note(scene_objects: SceneObjects | None) -> list[str]:
    if scene_objects is None:
        return ["no --boxes file: target_boxes left empty (target_ids only)"]
    return []
