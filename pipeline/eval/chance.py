"""Chance levels: what a model that ignores the scene would score, in the metric's own units (%).

- choice: mean of 1 / number of choices.
- number: the score of always answering the most frequent reference (counting, where answers are
  integers; "majority class") or the mean reference (continuous answers), under MRA and EM; one such
  constant per question type where records carry one (room area vs ceiling height, object height
  vs longest side): a model that ignores the scene still reads which question it is asked.
- text / qa / situated_qa: exact match of always answering the most frequent canonical answer;
  object answers (object_id): picking one uniformly random object of the scene.
- grounding: expected Acc@k of a uniformly random object of the scene (needs the scene objects).
- multi_grounding: expected F1@k of predicting one uniformly random object (zero-target queries
  score 0 for it).
- caption: none defined (None).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.eval.boxes import boxes_to_array, matched_f1, pairwise_iou
from pipeline.eval.metrics import IOU_THRESHOLDS, SceneObjects, gt_boxes, mean_relative_accuracy, metric_kind
from pipeline.eval.text import clean_answer, normalize_text, parse_number
from schemas.record import Record


def chance_level(task: str, records: list[Record], scene_objects: SceneObjects | None = None) -> dict[str, float | None]:
    """Chance score per metric name (the names `pipeline.eval.metrics` reports) for one task."""
    records = [r for r in records if r.task == task]
    if not records:
        return {}
    kind = metric_kind(task, records[0].answer_type)
    if kind == "choice":
        return {"Acc": 100.0 * float(np.mean([1.0 / len(r.choices or [1]) for r in records]))}
    if kind == "number":
        return _number_chance(records)
    if kind in ("scanqa", "sqa3d", "exact_match"):
        clean = clean_answer if kind != "exact_match" else normalize_text
        with_answers = [r for r in records if r.answers]
        if not with_answers:
            # Object answers (e.g. object_id): a uniformly random object of the scene.
            if not scene_objects or any(not scene_objects.get(r.scene_id) for r in records):
                return {"EM": None}
            return {"EM": 100.0 * float(np.mean([1.0 / len(scene_objects[r.scene_id]) if len(r.target_ids) == 1
                                                 else 0.0 for r in records]))}
        top, _ = Counter(clean(r.answers[0]) for r in with_answers).most_common(1)[0]
        em = 100.0 * float(np.mean([top in {clean(a) for a in r.answers} for r in with_answers]))
        return {"EM@1" if kind == "scanqa" else "EM": em}
    if kind == "scanrefer":
        return _random_object_chance(records, scene_objects, "Acc")
    if kind == "multi3drefer":
        return _random_object_chance(records, scene_objects, "F1")
    return {}


def _number_chance(records: list[Record]) -> dict[str, float | None]:
    with_answers = [r for r in records if r.answers]
    gts = np.array([parse_number(r.answers[0]) for r in with_answers], dtype=float)
    if gts.size == 0:
        return {}
    # Integral as the metric decides it: over the whole group, so that EM is reported alike.
    integral = bool(np.all(np.mod(gts, 1) == 0))
    qtypes = np.array([r.question_type or "" for r in with_answers])
    constant_of_type = {}
    for qtype in np.unique(qtypes):
        constant_of_type[qtype] = _constant_answer(gts[qtypes == qtype], integral)
    constants = np.array([constant_of_type[q] for q in qtypes])
    out: dict[str, float | None] = {
        "MRA": 100.0 * float(np.mean([mean_relative_accuracy(c, g) for c, g in zip(constants, gts)]))}
    if integral:
        out["EM"] = 100.0 * float(np.mean(gts == constants))
    return out


def _constant_answer(gts: np.ndarray, integral: bool) -> float:
    """The most frequent reference (integers) or the mean one."""
    if integral:
        values, counts = np.unique(gts, return_counts=True)
        return float(values[np.argmax(counts)])
    return float(gts.mean())


def _random_object_chance(records: list[Record], scene_objects: SceneObjects | None, prefix: str) -> dict[str, float | None]:
    names = [f"{prefix}@{k}" for k in IOU_THRESHOLDS]
    if not scene_objects:
        return dict.fromkeys(names)
    scores = {k: [] for k in IOU_THRESHOLDS}
    for rec in records:
        objs = scene_objects.get(rec.scene_id)
        gt = gt_boxes(rec, scene_objects)
        if not objs or gt is None:
            return dict.fromkeys(names)
        cand_O6 = boxes_to_array([o.box for o in objs])
        iou_OG = pairwise_iou(cand_O6, gt)
        for k in IOU_THRESHOLDS:
            if prefix == "Acc":
                scores[k].append(float(np.mean(iou_OG[:, 0] >= k)) if gt.shape[0] else 0.0)
            else:
                scores[k].append(float(np.mean([matched_f1(iou_OG[o:o + 1], k) for o in range(len(objs))]))
                                 if gt.shape[0] else 0.0)
    return {f"{prefix}@{k}": 100.0 * float(np.mean(scores[k])) for k in IOU_THRESHOLDS}
