"""Video spatial-reasoning converters: SR-91K and VSI-Bench.

SR-91K (SpaceR / Spatial-R1, `annotation/SR-91k.jsonl` of github.com/OuyangKun10/Spatial-R1, also in
the SpaceR-151k release): JSON Lines (or a JSON list) in the Video-R1 layout {"problem_id",
"problem", "data_type", "problem_type" ("multiple choice" | "numerical" | "regression" | ...),
"options" (["A. ...", ...]), "solution" ("<answer>B</answer>"), "path" (the video,
".../<scene>.mp4"), "data_source"}. The earlier SpaceR training layout {"problem_id", "problem",
"data_type", "question_type", "solution", "video"} is read too: no options field (a letter answer
is scored as text, exactly), a numeric answer as a number. The scene id is the video's file stem.
Each file's layout is read from its first entry; a file in neither layout is refused, naming both.

VSI-Bench (huggingface.co/datasets/nyu-visionx/VSI-Bench, `test.jsonl` or the parquet split):
{"id", "dataset" (arkitscenes | scannet | scannetpp), "scene_name", "question_type", "question",
"options" (["A. ...", ...] or null), "ground_truth" (a letter, or a number as text)}. The
question types map onto p3d tasks; the original type is kept in `question_type`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.eval.convert.common import ConversionResult, read_json_or_jsonl
from pipeline.eval.text import parse_number
from schemas.record import Record

VSI_TASKS = {
    "object_counting": "counting",
    "object_abs_distance": "distance",
    "object_size_estimation": "object_size",
    "room_size_estimation": "room_size",
    "object_rel_direction_easy": "relative_direction",
    "object_rel_direction_medium": "relative_direction",
    "object_rel_direction_hard": "relative_direction",
    "object_rel_distance": "relative_distance",
    "route_planning": "route_plan",
    "obj_appearance_order": "appearance_order",
}
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


SR91K_LAYOUTS = {
    "released": ("problem_id", "problem", "data_type", "problem_type", "options", "solution", "path"),
    "spacer": ("problem_id", "problem", "data_type", "question_type", "solution", "video"),
}


def sr91k_layout(entry, path: Path) -> str:
    """Which SR-91K layout a file's first entry has; ValueError naming both when neither."""
    keys = set(entry) if isinstance(entry, dict) else set()
    for name, fields in SR91K_LAYOUTS.items():
        if set(fields) <= keys:
            return name
    expected = "; ".join(f"{name}: {', '.join(fields)}" for name, fields in SR91K_LAYOUTS.items())
    raise ValueError(f"{path}: not an SR-91K file: its first entry has fields {', '.join(sorted(keys)) or 'none'}; "
                     f"expected the layout {expected}")


def convert_sr91k(paths: list[Path], scene_objects=None) -> ConversionResult:
    result = ConversionResult("sr91k")
    for path in paths:
        entries = read_json_or_jsonl(path, result)
        if not entries:
            continue
        layout = sr91k_layout(entries[0], path)
        for i, e in enumerate(entries):
            eid = str(e.get("problem_id", f"{Path(path).name}[{i}]")) if isinstance(e, dict) else f"[{i}]"
            result.add(eid, lambda e=e, eid=eid: _build_sr91k(e, eid, layout))
    return result


def _build_sr91k(e, eid: str, layout: str = "released") -> Record:
    if not isinstance(e, dict):
        raise ValueError("entry is not a JSON object")
    m = _ANSWER_TAG.search(e["solution"])
    answer = (m.group(1) if m else e["solution"]).strip()
    if layout == "spacer":
        number = parse_number(answer) is not None and _PLAIN_NUMBER.fullmatch(answer) is not None
        return Record(
            id=f"sr91k-{eid}", scene_id=Path(e["video"]).stem, task="spatial_qa", source="sr91k",
            question=e["problem"].strip(), answers=[answer], answer_type="number" if number else "text",
            question_type=e["question_type"], meta={"video": e["video"], "data_type": e.get("data_type")},
        )
    kind = e["problem_type"]
    if kind == "multiple choice":
        answer_type, choices = "choice", list(e["options"])
    elif kind in ("numerical", "regression"):
        if parse_number(answer) is None:
            raise ValueError(f"{kind} answer {answer!r} is not a number")
        answer_type, choices = "number", None
    else:
        answer_type, choices = "text", None
    return Record(
        id=f"sr91k-{eid}", scene_id=Path(e["path"]).stem, task="spatial_qa", source="sr91k",
        question=e["problem"].strip(), answers=[answer], answer_type=answer_type, choices=choices,
        question_type=kind, meta={"video": e["path"], "data_source": e.get("data_source")},
    )


def _read_vsibench(path: Path, result: ConversionResult) -> list:
    if Path(path).suffix == ".parquet":
        try:
            import pandas as pd

            return pd.read_parquet(path).to_dict(orient="records")
        except ImportError as e:
            raise ValueError(f"{path}: reading parquet needs pyarrow (`pip install pyarrow`); "
                             "or convert the jsonl release") from e
    return read_json_or_jsonl(path, result)


def convert_vsibench(paths: list[Path], scene_objects=None) -> ConversionResult:
    result = ConversionResult("vsibench")
    for path in paths:
        for i, e in enumerate(_read_vsibench(path, result)):
            eid = str(e.get("id", f"{Path(path).name}[{i}]")) if isinstance(e, dict) else f"[{i}]"
            result.add(eid, lambda e=e, eid=eid: _build_vsibench(e, eid))
    return result


def _build_vsibench(e, eid: str) -> Record:
    if not isinstance(e, dict):
        raise ValueError("entry is not a JSON object")
    qtype = e["question_type"]
    if qtype not in VSI_TASKS:
        raise ValueError(f"unknown question_type {qtype!r}")
    options = e.get("options")
    options = None if options is None else [str(o) for o in options]
    gt = str(e["ground_truth"]).strip()
    if options:
        answer_type = "choice"
    else:
        if parse_number(gt) is None:
            raise ValueError(f"numerical ground_truth {gt!r} is not a number")
        answer_type = "number"
    return Record(
        id=f"vsibench-{eid}", scene_id=e["scene_name"], task=VSI_TASKS[qtype], source="vsibench",
        question=e["question"].strip(), answers=[gt], answer_type=answer_type, choices=options or None,
        question_type=qtype, split="test", meta={"dataset": e.get("dataset")},
    )
