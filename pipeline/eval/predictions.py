"""Predictions file: what `p3d predict` writes and `p3d eval` reads, one JSON object per line.

Contract (owned here, written by the trainer's `predict`):

    {"id": "<record id>", "scene_id": "scene0000_00", "task": "grounding", "text": "<OBJ004>",
     "object_ids": [12], "boxes": [{"center": [..], "size": [..]}], "instance_ids": [37]}

`id`, `scene_id`, `task` and `text` are required; `object_ids` are the segment ids that the
generated `<OBJxxx>` tokens name (identifiers number a scene's instance segments in BFS order, see
trainer/objects.py, so `<OBJ004>` is the fifth instance segment, here segment 12), `instance_ids`
the ground-truth instances matched to those segments (segments.json `instance_id`, comparable with
`Record.target_ids`; null for a segment matched to none, which equals no target), `boxes` their
axis-aligned boxes (comparable with `Record.target_boxes`).
An empty list means "predicted no object" (Multi3DRefer zero-target); a missing field means "not given".
A model trained with count_by_listing answers a count as "<OBJ002> <OBJ005>: 2": `text` is then the
count ("2") and the objects it named are in `object_ids` / `instance_ids` / `boxes`.
A caption (Scan2Cap) names its object in the question, not in the answer: its prediction carries the
segment the question's `<OBJ>` resolved to (`object_ids`, `instance_ids`, `boxes`), the box that
m@kIoU compares with the target's. A record that could not be asked (an object its question names
matches no segment of the scene) is still written, with empty `text`, no objects and the reason in
`not_asked`; `p3d eval` scores it as a miss and counts it. An answer that ran into the generation
limit before its end carries `cut: true`; it is scored as written and `p3d eval` counts it (`num_cut`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import SchemaError, describe
from schemas.io import write_jsonl_atomic
from schemas.manifest import Box3D, ObjectInfo
from schemas.record import iter_unique_models


class Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, description="the Record id this answers")
    scene_id: str = Field(min_length=1)
    task: str
    text: str = Field(description="the generated answer, special tokens kept")
    generated: str | None = Field(None, description="the whole generated text, where the answer was read "
                                  "out of it: listed objects or first-order steps before it")
    object_ids: list[int] | None = Field(None, description="segment ids predicted via <OBJxxx>")
    boxes: list[Box3D] | None = Field(None, description="boxes of the predicted objects")
    instance_ids: list[int | None] | None = Field(
        None, description="ground-truth instances matched to the predicted segments (segments.json "
                          "instance_id), aligned with object_ids; null for a segment matched to none")
    unmatched_targets: list[int] | None = Field(
        None, description="the record's target ids that match no segment of the scene (counted by eval)")
    not_asked: str | None = Field(None, description="why the record could not be asked; scored as a miss")
    decoding: str | None = Field(None, description="how the answer was decoded where it was not greedy: "
                                 "'mbr N', the minimum-Bayes-risk answer of N sampled ones (trainer/predict.py)")
    cut: bool | None = Field(None, description="true where the answer ran into the generation limit "
                             "(max_new_tokens) before its end; scored as written, and counted by eval")


def load_predictions(path: str | Path) -> dict[str, Prediction]:
    """Predictions keyed by record id; a repeated id is an error (which answer would count?)."""
    return {pred.id: pred for pred in iter_unique_models(path, Prediction, "prediction for record id")}


def write_predictions(preds: Iterable[Prediction], path: str | Path) -> int:
    """Atomic write (temp + rename); returns the number of lines."""
    return write_jsonl_atomic(preds, path, exclude_none=True)


def load_scene_objects(path: str | Path) -> dict[str, list[ObjectInfo]]:
    """Scene objects for `--boxes`: either one JSON file {scene_id: [ObjectInfo, ...]} (values may
    also be {"objects": [...]}, as in a manifest), or a scenes folder holding
    `<scene_id>/objects.json` (a list of ObjectInfo, the toy world's layout)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*/objects.json"))
        if not files:
            raise SchemaError(f"{path}: no <scene_id>/objects.json files in this folder")
        raw = {f.parent.name: _read_json(f) for f in files}
    else:
        raw = _read_json(path)
    if not isinstance(raw, dict):
        raise SchemaError(f"{path}: expected an object mapping scene_id -> list of objects")
    out: dict[str, list[ObjectInfo]] = {}
    for scene_id, objs in raw.items():
        if isinstance(objs, dict):
            objs = objs.get("objects", [])
        try:
            out[scene_id] = [ObjectInfo.model_validate(o) for o in objs]
        except ValidationError as e:
            raise describe(e, f"{path} [{scene_id}]") from e
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: invalid JSON: {e.msg}") from e
