"""ScanQA and SQA3D converters.

ScanQA, release v1.0 (github.com/ATR-DBI-Lab/ScanQA, `ScanQA_v1.0_{train,val,test_w_obj,
test_wo_obj}.json`): a JSON list of {"question_id", "scene_id", "question", "answers",
"object_ids", "object_names"}; the test files have no "answers" (they become records with empty
answers, usable for prediction only).

SQA3D, balanced v1 release (github.com/SilongYong/SQA3D, `v1_balanced_questions_<split>_scannetv2.json`
with {"questions": [{"question_id", "scene_id", "situation", "alternative_situation", "question"}]}
and `v1_balanced_sqa_annotations_<split>_scannetv2.json` with {"annotations": [{"question_id",
"scene_id", "answers": [{"answer", "answer_confidence", "answer_id"}], "answer_type",
"question_type", "position", "rotation"}]}). Questions and annotations pair by question_id. The
question type reported is the one SQA3D's evaluation groups by: the first word of the question as
its own loader tokenizes it (lower case, "'s" and punctuation split off, so "What's" is "what"):
what, is, how, can, which, otherwise others.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.eval.convert.common import (
    ConversionResult,
    SceneObjects,
    boxes_for,
    expect_list,
    no_boxes_note,
    read_json,
    split_from_name,
)
from schemas.record import Record

SQA3D_TYPES = ("what", "is", "how", "can", "which")


def convert_scanqa(paths: list[Path], scene_objects: SceneObjects | None = None) -> ConversionResult:
    result = ConversionResult("scanqa", notes=no_boxes_note(scene_objects))
    for path in paths:
        split = split_from_name(Path(path).name)
        for i, entry in enumerate(expect_list(read_json(path), path, "ScanQA questions")):
            qid = str(entry.get("question_id", f"{Path(path).name}[{i}]")) if isinstance(entry, dict) else f"{Path(path).name}[{i}]"

            def build(entry=entry, qid=qid) -> Record:
                if not isinstance(entry, dict):
                    raise ValueError("entry is not a JSON object")
                ids = [int(x) for x in entry.get("object_ids", [])]
                return Record(
                    id=f"scanqa-{qid}", scene_id=entry["scene_id"], task="qa", source="scanqa",
                    question=entry["question"].strip(), answers=list(entry.get("answers", [])),
                    target_ids=ids, target_boxes=boxes_for(scene_objects, entry["scene_id"], ids),
                    split=split, meta={"object_names": entry.get("object_names", [])},
                )

            result.add(qid, build)
    return result


def sqa3d_question_type(question: str) -> str:
    text = re.sub(r"[^\w\s']", " ", question.lower().replace("\u2019", "'").replace("'s", " 's"))
    words = text.split()
    first = words[0] if words else ""
    return first if first in SQA3D_TYPES else "others"


def convert_sqa3d(paths: list[Path], scene_objects: SceneObjects | None = None) -> ConversionResult:
    """`paths` holds questions and annotations files in any order; they are told apart by content."""
    result = ConversionResult("sqa3d")
    questions, annotations = {}, {}
    split = None
    for path in paths:
        data = read_json(path)
        if isinstance(data, dict) and "questions" in data:
            questions.update({q["question_id"]: q for q in data["questions"] if "question_id" in q})
        elif isinstance(data, dict) and "annotations" in data:
            annotations.update({a["question_id"]: a for a in data["annotations"] if "question_id" in a})
        else:
            raise ValueError(f"{path}: neither an SQA3D questions file nor an annotations file")
        split = split or split_from_name(Path(path).name)
    for qid, q in questions.items():

        def build(q=q, qid=qid) -> Record:
            ann = annotations.get(qid)
            if ann is None:
                raise ValueError("no annotation with this question_id")
            answers = [a["answer"] for a in ann["answers"]]
            return Record(
                id=f"sqa3d-{qid}", scene_id=q["scene_id"], task="situated_qa", source="sqa3d",
                question=q["question"].strip(), situation=q["situation"].strip(), answers=answers,
                question_type=sqa3d_question_type(q["question"]), split=split,
                meta={"position": ann.get("position"), "rotation": ann.get("rotation"),
                      "alternative_situation": q.get("alternative_situation", [])},
            )

        result.add(str(qid), build)
    for qid in annotations.keys() - questions.keys():
        result.problems.append((str(qid), "annotation without a question"))
    return result
