"""MMScan converter (QA and visual grounding).

Release followed: MMScan v1 / the MMScan devkit (github.com/OpenRobotLab/EmbodiedScan, branch
mmscan): `MMScan_samples/MMScan_QA.json` and `MMScan_samples/MMScan_VG.json`, each a dict
{"train": [...], "val": [...], "test": [...]} (a bare list is accepted too).
QA samples: {"ID", "sub_class" (e.g. QA_Single_EQ), "scan_id", "question", "answers",
"object_ids", "object_names", "input_bboxes_id", "input_bboxes", "output_bboxes_id", "output_bboxes"}.
VG samples: {"ID", "sub_class" (e.g. VG_Single_Attribute_Common), "scan_id", "text", "target_id"
(list), "target", "distractor_ids", "anchors", "anchor_ids", "tokens_positive"}.
Files are told apart by their samples' fields. VG samples become `multi_grounding` records (MMScan
targets are lists); MMScan's oriented EmbodiedScan boxes are not in these files, so target boxes
come only from `--boxes`.

Slices. `--slice object-object` keeps the QA samples whose `sub_class` (the samples' category
field, "sub_class": "Sample category" in the devkit's `mmscan/mmscan.py`) is one of MMScan's
object-object classes, `QA_Inter_Space_OO` and `QA_Inter_Attribute_OO` (the names MMScan's sample
generation writes: `generate_sample(..., sub_class='QA_Inter_Space_OO')` for "is the X higher than the
Y", `'QA_Inter_Attribute_OO'` for bigger-than and same-colour/shape/material pairs): the paper's
stage-3 data ("115K object-object relationship questions from MMScan", section 3.2). A comma-separated
list of sub_class names selects those instead. The samples left out are counted per sub_class in a note.

Objects given as input. MMScan asks many questions about objects it shows the model as boxes
(`input_bboxes_id`: "Carefully compare these two objects, ..."); p3d names them by identifier instead:
the question is prefixed "The objects: <OBJ>, <OBJ>." and the target ids start with those objects, in
order, so each `<OBJ>` becomes the identifier of its object when the record is asked
(trainer.examples.record_example).

A sample naming an object id that is not among its scene's objects in `--boxes` (or whose scene is
not there) is skipped and listed with its reason, as the devkit's loader drops samples whose
objects its scene annotations lack; without `--boxes` that check cannot be made (a note says so).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pipeline.eval.convert.common import ConversionResult, SceneObjects, boxes_for, no_boxes_note, read_json
from schemas.record import OBJ_PLACEHOLDER, Record

SLICES = {"object-object": frozenset({"QA_Inter_Space_OO", "QA_Inter_Attribute_OO"})}


def slice_sub_classes(name: str) -> frozenset[str]:
    """The sub_class names of a named slice, or of a comma-separated list of sub_class names."""
    if name in SLICES:
        return SLICES[name]
    names = frozenset(n.strip() for n in name.split(",") if n.strip())
    if not names or not all(re.fullmatch(r"(QA|VG)_\w+", n) for n in names):
        raise ValueError(f"--slice {name!r}: give a slice ({', '.join(SLICES)}) or MMScan sub_class names "
                         "such as QA_Inter_Space_OO, comma-separated")
    return names


def convert_mmscan(paths: list[Path], scene_objects: SceneObjects | None = None,
                   slice_name: str | None = None) -> ConversionResult:
    result = ConversionResult("mmscan", notes=no_boxes_note(scene_objects))
    if scene_objects is None:
        result.notes.append("no --boxes file: samples naming objects absent from their scene cannot be "
                            "found and skipped as the MMScan loader does")
    keep = slice_sub_classes(slice_name) if slice_name else None
    left_out: Counter = Counter()
    for path in paths:
        data = read_json(path)
        splits = data.items() if isinstance(data, dict) else [(None, data)]
        for split, samples in splits:
            if not isinstance(samples, list):
                raise ValueError(f"{path}: split {split!r} is not a list of samples")
            for i, s in enumerate(samples):
                sid = str(s.get("ID", f"{Path(path).name}[{split}][{i}]")) if isinstance(s, dict) else f"[{i}]"
                if keep is not None and isinstance(s, dict) and s.get("sub_class") not in keep:
                    left_out[str(s.get("sub_class"))] += 1
                    continue
                absent = _absent_objects(s, scene_objects)
                if absent:
                    result.skipped.append((sid, absent))
                    continue
                result.add(sid, lambda s=s, sid=sid, split=split: _build(s, sid, split, scene_objects))
    if keep is not None:
        result.notes.append(f"--slice {slice_name}: kept sub_class {', '.join(sorted(keep))}; left out "
                            f"{sum(left_out.values())} samples of other sub-classes ({dict(sorted(left_out.items()))})")
    return result


def _absent_objects(s, scene_objects: SceneObjects | None) -> str | None:
    """Why the devkit would drop this sample (its objects are not in the scene's annotations), or None."""
    if scene_objects is None or not isinstance(s, dict) or "scan_id" not in s:
        return None
    raw = s.get("object_ids") if "question" in s else s.get("target_id")
    try:
        ids = [int(x) for x in raw or []]
    except (TypeError, ValueError):
        return None  # a malformed sample is a problem, reported by the builder
    if s["scan_id"] not in scene_objects:
        return f"scene {s['scan_id']} has no annotated objects in the boxes file" if ids else None
    known = {o.id for o in scene_objects[s["scan_id"]]}
    missing = [i for i in ids if i not in known]
    return f"object ids {missing} are not annotated in scene {s['scan_id']}" if missing else None


def _build(s, sid: str, split: str | None, scene_objects: SceneObjects | None) -> Record:
    if not isinstance(s, dict):
        raise ValueError("sample is not a JSON object")
    if "question" in s:
        shown = [int(x) for x in s.get("input_bboxes_id") or []]
        ids = shown + [i for i in (int(x) for x in s.get("object_ids") or []) if i not in shown]
        question = s["question"].strip()
        if shown:
            named = ", ".join([OBJ_PLACEHOLDER] * len(shown))
            question = f"The object{'s' if len(shown) > 1 else ''}: {named}. {question}"
        return Record(
            id=f"mmscan-{sid}", scene_id=s["scan_id"], task="qa", source="mmscan",
            question=question, answers=list(s["answers"]), target_ids=ids,
            target_boxes=boxes_for(scene_objects, s["scan_id"], ids), question_type=s["sub_class"],
            split=split, meta={"object_names": s.get("object_names") or [], "input_ids": shown},
        )
    if "text" in s and "target_id" in s:
        ids = [int(x) for x in s["target_id"]]
        return Record(
            id=f"mmscan-{sid}", scene_id=s["scan_id"], task="multi_grounding", source="mmscan",
            question=s["text"].strip(), target_ids=ids, target_boxes=boxes_for(scene_objects, s["scan_id"], ids),
            answer_type="objects", question_type=s["sub_class"], split=split,
            meta={"target": s.get("target", []), "anchor_ids": s.get("anchor_ids", []),
                  "distractor_ids": s.get("distractor_ids", [])},
        )
    raise ValueError("neither a QA sample (question) nor a VG sample (text, target_id)")
