"""Annotation records: the unified "SpaceSpan" format, one JSON object per line.

Every converter (`p3d convert`) and the toy world write these; the trainer and `p3d eval` read them.
Object references use the scene's instance ids (the `label` values of the triplet store); in text,
an object is written `<OBJ012>` by its segment id in the proxy shard (see trainer.objects).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import SchemaError, describe
from schemas.io import write_jsonl_atomic
from schemas.manifest import Box3D

# Task names. Benchmarks map onto these; `p3d eval --task` picks the metric by task.
TASKS = (
    "qa",  # free-form QA (ScanQA, MMScan QA)
    "situated_qa",  # SQA3D
    "grounding",  # one target (ScanRefer, MMScan grounding)
    "multi_grounding",  # zero or more targets (Multi3DRefer)
    "caption",  # dense captioning of one object (Scan2Cap)
    "object_name",  # <OBJxxx> -> category
    "object_id",  # category / description -> <OBJxxx>
    "counting",
    "object_size",
    "object_position",
    "distance",
    "room_size",
    "relative_direction",
    "relative_distance",
    "relative_size",
    "appearance_order",
    "route_plan",
    "spatial_qa",  # SR-91K and other free spatial reasoning
)
AnswerType = Literal["text", "choice", "number", "objects"]
# In a question, the k-th occurrence of this placeholder names the object `target_ids[k]`; the
# trainer replaces it with that object's `<OBJxxx>` token (records cannot know segment ids).
OBJ_PLACEHOLDER = "<OBJ>"
M = TypeVar("M", bound=BaseModel)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    scene_id: str = Field(min_length=1)
    task: str
    source: str = Field(description="dataset of origin: toy, scanqa, sqa3d, scanrefer, ...")
    question: str = Field(description="the question or prompt, without the scene")
    situation: str | None = None
    answers: list[str] = Field(default_factory=list, description="reference answers; first is canonical")
    answer_type: AnswerType = "text"
    choices: list[str] | None = None
    target_ids: list[int] = Field(default_factory=list)
    target_boxes: list[Box3D] = Field(default_factory=list)
    target_names: list[str] = Field(default_factory=list, description=(
        "the words the question names each target by, in target order, where it names them in words "
        "('the trash can' -> 'trash can'); answers in steps restate them (trainer.examples.answer_in_steps)"))
    question_type: str | None = None
    split: str | None = None
    unique: bool | None = Field(None, description="grounding: the target is the only one of its class")
    meta: dict = Field(default_factory=dict)

    def model_post_init(self, __context) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.answer_type == "choice" and not self.choices:
            raise ValueError("answer_type 'choice' needs choices")
        if self.target_names and len(self.target_names) != len(self.target_ids):
            raise ValueError(f"target_names names {len(self.target_names)} objects but target_ids "
                             f"has {len(self.target_ids)}: one name per target, in order")


def load_records(path: str | Path) -> list[Record]:
    return list(iter_records(path))


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSONL file; a line that is not JSON is a
    `SchemaError` naming it."""
    path = Path(path)
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise SchemaError(f"{path}:{line_no}: invalid JSON: {e.msg}") from e


def iter_unique_models(path: str | Path, model: type[M], what: str) -> Iterator[M]:
    """The `model`s of a JSONL file, one a line, each with its own `id`; a bad line, or an id given
    twice (`duplicate <what> 'x'`), is a `SchemaError` naming the lines. Records and predictions are
    joined by id: a repeated id would score one answer twice."""
    first_line: dict[str, int] = {}  # id -> line it first appeared on
    for line_no, data in iter_json_lines(path):
        try:
            item = model.model_validate(data)
        except ValidationError as e:
            raise describe(e, path, line_no) from e
        if item.id in first_line:
            raise SchemaError(f"{path}:{line_no}: duplicate {what} {item.id!r} "
                              f"(first on line {first_line[item.id]})")
        first_line[item.id] = line_no
        yield item


def iter_records(path: str | Path) -> Iterator[Record]:
    """Records of a JSONL file; a bad line or a repeated id is a `SchemaError` naming the lines."""
    return iter_unique_models(path, Record, "record id")


def write_records(records: Iterable[Record], path: str | Path) -> int:
    """Write atomically (temp + rename); returns the number of records."""
    return write_jsonl_atomic(records, path, exclude_defaults=True)
