"""Metrics per benchmark: pure functions from (record, prediction) pairs to a `TaskResult`.

Every score is a percentage (0..100), as the benchmarks print them. A record without a
prediction scores 0 on every metric (it is counted in `num_missing`, never dropped).

Which metric a group of records gets (see `metric_kind`):
  qa -> ScanQA (EM@1, EM-R, BLEU-1..4, METEOR, ROUGE-L, CIDEr); situated_qa -> SQA3D (EM per
  question type); grounding -> ScanRefer (Acc@0.25/0.5, unique/multiple); multi_grounding ->
  Multi3DRefer (F1@0.25/0.5, Hungarian, per eval type); caption -> Scan2Cap (CIDEr/BLEU-4/METEOR/
  ROUGE-L @0.5 and @0.25 IoU as Scan2Cap's own eval, plus the plain scores); anything else by answer type: choice -> accuracy,
  number -> mean relative accuracy (VSI-Bench), text -> exact match.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipeline.eval.boxes import boxes_to_array, matched_f1, pairwise_iou
from pipeline.eval.captions import (
    CAPTION_CONVENTIONS,
    caption_tokens,
    scan2cap_candidate,
    scan2cap_reference,
    score_captions,
)
from pipeline.eval.predictions import Prediction
from pipeline.eval.text import (
    answer_choice_index,
    normalize_text,
    parse_choice,
    parse_number,
    qa_match,
)
from schemas.manifest import ObjectInfo
from schemas.record import Record

Pair = tuple[Record, Prediction | None]
SceneObjects = dict[str, list[ObjectInfo]]
MRA_THRESHOLDS = np.linspace(0.50, 0.95, 10)
IOU_THRESHOLDS = (0.25, 0.5)


@dataclass
class TaskResult:
    name: str  # row label: "<source>/<task>" or a benchmark name
    kind: str  # which metric family scored it
    num_samples: int
    num_missing: int
    metrics: dict[str, float] = field(default_factory=dict)
    chance: dict[str, float | None] = field(default_factory=dict)
    per_sample: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    num_cut: int = 0  # answers that ran into the generation limit before their end (Prediction.cut)

    def to_json(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "num_samples": self.num_samples,
            "num_missing": self.num_missing, "num_cut": self.num_cut, "metrics": self.metrics,
            "chance": self.chance, "notes": self.notes, "per_sample": self.per_sample,
        }


def metric_kind(task: str, answer_type: str) -> str:
    fixed = {"qa": "scanqa", "situated_qa": "sqa3d", "grounding": "scanrefer",
             "multi_grounding": "multi3drefer", "caption": "scan2cap"}
    if task in fixed:
        return fixed[task]
    return {"choice": "choice", "number": "number"}.get(answer_type, "exact_match")


def _pct(values) -> float:
    values = list(values)
    return 100.0 * float(np.mean(values)) if values else float("nan")


def _base_sample(rec: Record, pred: Prediction | None) -> dict:
    return {"id": rec.id, "scene_id": rec.scene_id, "prediction": None if pred is None else pred.text,
            "answers": rec.answers}


# ---------------------------------------------------------------- text answers


def eval_scanqa(pairs: list[Pair], name: str = "scanqa", convention: str = "scanqa") -> TaskResult:
    """EM@1 / EM-R under a named convention (`text.QA_CONVENTIONS`, default the official ScanQA
    scorer's); n-gram scores on COCO-tokenized raw text."""
    res = TaskResult(name, "scanqa", len(pairs), sum(p is None for _, p in pairs))
    res.notes.append(f"EM@1 / EM-R convention: {convention}")
    em, em_r, refs, hyps = [], [], {}, {}
    for i, (rec, pred) in enumerate(pairs):
        if not rec.answers:
            raise ValueError(f"record {rec.id} ({rec.scene_id}) has no reference answers")
        text = "" if pred is None else pred.text
        e, r = qa_match(text, list(rec.answers), convention)
        em.append(e)
        em_r.append(r)
        refs[str(i)], hyps[str(i)] = list(rec.answers), text
        res.per_sample.append({**_base_sample(rec, pred), "EM@1": 100.0 * e, "EM-R": 100.0 * r})
    res.metrics = {"EM@1": _pct(em), "EM-R": _pct(em_r)}
    if pairs:
        scores = score_captions(refs, hyps)
        for metric, value in scores.corpus.items():
            res.metrics[metric] = 100.0 * value
        for i, sample in enumerate(res.per_sample):
            for metric in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
                sample[metric] = 100.0 * scores.per_sample[metric][i]
    return res


def eval_sqa3d(pairs: list[Pair], name: str = "sqa3d", convention: str = "scanqa") -> TaskResult:
    """EM (and EM-R) overall and per question type (SQA3D: what / is / how / can / which / others,
    as the converter derives them), under a named convention (`text.QA_CONVENTIONS`)."""
    res = TaskResult(name, "sqa3d", len(pairs), sum(p is None for _, p in pairs))
    res.notes.append(f"EM / EM-R convention: {convention}")
    by_type: dict[str, list[int]] = defaultdict(list)
    em, em_r = [], []
    for rec, pred in pairs:
        text = "" if pred is None else pred.text
        e, r = qa_match(text, list(rec.answers), convention)
        em.append(e)
        em_r.append(r)
        by_type[rec.question_type or "others"].append(e)
        res.per_sample.append({**_base_sample(rec, pred), "question_type": rec.question_type,
                               "EM": 100.0 * e, "EM-R": 100.0 * r})
    res.metrics = {"EM": _pct(em), "EM-R": _pct(em_r)}
    for qtype in sorted(by_type):
        res.metrics[f"EM/{qtype}"] = _pct(by_type[qtype])
    return res


def eval_exact_match(pairs: list[Pair], name: str) -> TaskResult:
    """Normalized exact match against any reference; with no text answers, the predicted
    instance ids must equal the target ids as a set."""
    res = TaskResult(name, "exact_match", len(pairs), sum(p is None for _, p in pairs))
    hits = []
    for rec, pred in pairs:
        if pred is None:
            hit = 0
        elif rec.answers:
            hit = int(normalize_text(pred.text) in {normalize_text(a) for a in rec.answers})
        elif pred.instance_ids is not None:
            hit = int(set(pred.instance_ids) == set(rec.target_ids))
        else:
            raise ValueError(f"record {rec.id}: no text answers and the prediction has no instance_ids")
        hits.append(hit)
        res.per_sample.append({**_base_sample(rec, pred), "EM": 100.0 * hit})
    res.metrics = {"EM": _pct(hits)}
    return res


# ---------------------------------------------------------------- choices and numbers


def _vsibench_first_word(text: str) -> str:
    # VSI-Bench's own "fuzzy matching": the first word, trailing period removed.
    return text.split(" ")[0].rstrip(".").strip()


def choice_hit(rec: Record, text: str) -> int:
    assert rec.choices is not None
    gt = answer_choice_index(rec.answers[0], rec.choices)
    if rec.source == "vsibench":
        return int(_vsibench_first_word(text).lower() == rec.answers[0].strip().lower())
    return int(parse_choice(text, rec.choices) == gt)


def eval_choice(pairs: list[Pair], name: str) -> TaskResult:
    res = TaskResult(name, "choice", len(pairs), sum(p is None for _, p in pairs))
    hits = []
    for rec, pred in pairs:
        if not rec.answers or not rec.choices:
            raise ValueError(f"record {rec.id} ({rec.scene_id}): a choice question needs choices and an answer")
        hit = 0 if pred is None else choice_hit(rec, pred.text)
        hits.append(hit)
        res.per_sample.append({**_base_sample(rec, pred), "Acc": 100.0 * hit})
    res.metrics = {"Acc": _pct(hits)}
    return res


def mean_relative_accuracy(pred: float | None, gt: float) -> float:
    """VSI-Bench MRA: the fraction of thresholds t in 0.50..0.95 with |pred-gt|/gt <= 1 - t."""
    if pred is None or not np.isfinite(pred):
        return 0.0
    if gt == 0:
        return float(pred == 0)
    rel_err = abs(pred - gt) / abs(gt)
    return float(np.mean(rel_err <= 1.0 - MRA_THRESHOLDS))


def read_number(rec: Record, text: str) -> float | None:
    if rec.source == "vsibench":
        try:
            return float(_vsibench_first_word(text))
        except ValueError:
            return None
    return parse_number(text)


def eval_number(pairs: list[Pair], name: str) -> TaskResult:
    """MRA for every numeric answer; EM too when all references are integers (counting)."""
    res = TaskResult(name, "number", len(pairs), sum(p is None for _, p in pairs))
    mra, em = [], []
    integral = all(float(parse_number(r.answers[0]) or 0).is_integer() for r, _ in pairs if r.answers)
    for rec, pred in pairs:
        gt = parse_number(rec.answers[0]) if rec.answers else None
        if gt is None:
            raise ValueError(f"record {rec.id} ({rec.scene_id}): numeric answer {rec.answers!r} is not a number")
        value = None if pred is None else read_number(rec, pred.text)
        score = mean_relative_accuracy(value, gt)
        mra.append(score)
        sample = {**_base_sample(rec, pred), "parsed": value, "MRA": 100.0 * score}
        if integral:
            hit = int(value is not None and round(value) == round(gt) and abs(value - round(value)) < 1e-6)
            em.append(hit)
            sample["EM"] = 100.0 * hit
        res.per_sample.append(sample)
    res.metrics = {"MRA": _pct(mra)}
    if integral:
        res.metrics["EM"] = _pct(em)
    return res


# ---------------------------------------------------------------- boxes


def _objects_by_id(scene_objects: SceneObjects | None, scene_id: str) -> dict[int, ObjectInfo]:
    if not scene_objects or scene_id not in scene_objects:
        return {}
    return {o.id: o for o in scene_objects[scene_id]}


def gt_boxes(rec: Record, scene_objects: SceneObjects | None) -> np.ndarray | None:
    if rec.target_boxes or not rec.target_ids:
        return boxes_to_array(rec.target_boxes)
    objs = _objects_by_id(scene_objects, rec.scene_id)
    if not objs:
        return None
    missing = [i for i in rec.target_ids if i not in objs]
    if missing:
        raise ValueError(f"record {rec.id}: target ids {missing} are not objects of scene {rec.scene_id}")
    return boxes_to_array([objs[i].box for i in rec.target_ids])


def pred_boxes(pred: Prediction, scene_objects: SceneObjects | None) -> np.ndarray | None:
    if pred.boxes is not None:
        return boxes_to_array(pred.boxes)
    if pred.instance_ids is None:
        return None
    objs = _objects_by_id(scene_objects, pred.scene_id)
    if not objs:
        return None
    # An id that is no object of the scene is still a prediction: a zero-volume box overlaps nothing.
    return np.array([[*objs[i].box.center, *objs[i].box.size] if i in objs else [0.0] * 6
                     for i in pred.instance_ids], dtype=np.float64).reshape(-1, 6)


def iou_matrix(rec: Record, pred: Prediction, scene_objects: SceneObjects | None) -> tuple[np.ndarray, str]:
    """IoU (P, G) between predicted and target objects, and how it was obtained ("boxes" | "ids").

    Without boxes on either side, identity of instance ids stands in for IoU (1 same, 0 not):
    the setting where the model picks among ground-truth objects.
    """
    gt = gt_boxes(rec, scene_objects)
    pb = pred_boxes(pred, scene_objects)
    if gt is not None and pb is not None:
        return pairwise_iou(pb, gt), "boxes"
    if pred.instance_ids is not None:
        same = np.array([[float(p == t) for t in rec.target_ids] for p in pred.instance_ids])
        return same.reshape(len(pred.instance_ids), len(rec.target_ids)), "ids"
    raise ValueError(
        f"record {rec.id} ({rec.scene_id}): cannot compare objects: the prediction has neither boxes "
        "nor instance_ids resolvable to boxes (pass --boxes with the scene objects)"
    )


def eval_grounding(pairs: list[Pair], name: str, scene_objects: SceneObjects | None = None) -> TaskResult:
    """ScanRefer: the first predicted object against the (single) target, Acc@kIoU, unique/multiple."""
    res = TaskResult(name, "scanrefer", len(pairs), sum(p is None for _, p in pairs))
    hits = {k: [] for k in IOU_THRESHOLDS}
    split_hits: dict[str, dict[float, list[int]]] = defaultdict(lambda: {k: [] for k in IOU_THRESHOLDS})
    modes = Counter()
    for rec, pred in pairs:
        if not rec.target_ids and not rec.target_boxes:
            raise ValueError(f"record {rec.id} ({rec.scene_id}): a grounding record needs a target")
        iou = 0.0
        if pred is not None:
            m, mode = iou_matrix(rec, pred, scene_objects)
            modes[mode] += 1
            iou = float(m[0].max()) if m.shape[0] and m.shape[1] else 0.0
        sample = {**_base_sample(rec, pred), "iou": iou, "unique": rec.unique}
        for k in IOU_THRESHOLDS:
            hit = int(iou >= k)
            hits[k].append(hit)
            sample[f"Acc@{k}"] = 100.0 * hit
            if rec.unique is not None:
                split_hits["unique" if rec.unique else "multiple"][k].append(hit)
        res.per_sample.append(sample)
    for k in IOU_THRESHOLDS:
        res.metrics[f"Acc@{k}"] = _pct(hits[k])
    for split in ("unique", "multiple"):
        if split in split_hits:
            for k in IOU_THRESHOLDS:
                res.metrics[f"Acc@{k}/{split}"] = _pct(split_hits[split][k])
    if modes.get("ids"):
        res.notes.append(f"{modes['ids']} samples compared by instance id (no boxes available)")
    return res


def eval_multi_grounding(pairs: list[Pair], name: str, scene_objects: SceneObjects | None = None) -> TaskResult:
    """Multi3DRefer: F1@kIoU per query with Hungarian one-to-one matching, per eval type."""
    res = TaskResult(name, "multi3drefer", len(pairs), sum(p is None for _, p in pairs))
    f1 = {k: [] for k in IOU_THRESHOLDS}
    by_type: dict[str, dict[float, list[float]]] = defaultdict(lambda: {k: [] for k in IOU_THRESHOLDS})
    for rec, pred in pairs:
        sample = _base_sample(rec, pred)
        eval_type = rec.meta.get("eval_type") or rec.question_type
        for k in IOU_THRESHOLDS:
            if pred is None:
                score = 0.0  # a missing answer is wrong even where the target set is empty
            elif pred.boxes is None and pred.instance_ids is None:
                raise ValueError(f"record {rec.id}: multi_grounding prediction has no boxes or instance_ids")
            else:
                m, _ = iou_matrix(rec, pred, scene_objects)
                score = matched_f1(m, k)
            f1[k].append(score)
            sample[f"F1@{k}"] = 100.0 * score
            if eval_type:
                by_type[eval_type][k].append(score)
        res.per_sample.append(sample)
    for k in IOU_THRESHOLDS:
        res.metrics[f"F1@{k}"] = _pct(f1[k])
    for eval_type in sorted(by_type):
        for k in IOU_THRESHOLDS:
            res.metrics[f"F1@{k}/{eval_type}"] = _pct(by_type[eval_type][k])
    return res


def eval_scan2cap(pairs: list[Pair], name: str, scene_objects: SceneObjects | None = None,
                  convention: str = "scan2cap") -> TaskResult:
    """Scan2Cap m@kIoU (k = 0.25, 0.5) as Scan2Cap's official eval computes it (github.com/daveredrum/
    Scan2Cap, scripts/eval.py -> lib/eval_helper.py `eval_cap`, `prepare_corpus`, `check_candidates`).

    Every record is one ground-truth object. Its references are "sos <first 30 tokens> eos" of each
    description (ScanRefer's `token` lists when the record carries them, see convert_scan2cap). Its
    candidate is "sos <predicted tokens> eos" where the prediction's box (the segment its question
    named, see trainer/predict.py) hits the object at IoU > k, else "sos eos"; a missing or not-asked
    prediction is "sos eos" too. BLEU, CIDEr, METEOR and ROUGE-L are then corpus scores over all
    objects. `convention="chatscene"` follows Chat-Scene's utils/eval.py instead: IoU >= k, and both
    sides PTB-tokenized. The plain scores beside (no @k) gate nothing: caption quality alone.
    """
    if convention not in CAPTION_CONVENTIONS:
        raise ValueError(f"unknown caption convention {convention!r}; known: {', '.join(CAPTION_CONVENTIONS)}")
    res = TaskResult(name, "scan2cap", len(pairs), sum(p is None for _, p in pairs))
    refs, ious, texts = {}, [], []
    localized = True
    modes = Counter()
    for i, (rec, pred) in enumerate(pairs):
        refs[str(i)] = _scan2cap_references(rec)
        iou = 0.0
        if pred is not None:
            if pred.boxes is None and pred.instance_ids is None:
                localized = False
            else:
                m, mode = iou_matrix(rec, pred, scene_objects)
                modes[mode] += 1
                iou = float(m[0].max()) if m.size else 0.0
        ious.append(iou)
        texts.append(None if pred is None else pred.text)
    if not pairs:
        return res
    tokenize = convention == "chatscene"

    def hit(iou: float, k: float) -> bool:
        return iou > k if convention == "scan2cap" else iou >= k

    per_k = {}
    if localized:
        for k in sorted(IOU_THRESHOLDS, reverse=True):
            hyps = {str(i): scan2cap_candidate(t if hit(iou, k) else None, convention)
                    for i, (t, iou) in enumerate(zip(texts, ious))}
            per_k[k] = score_captions(refs, hyps, tokenize=tokenize)
            for metric in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L"):
                res.metrics[f"{metric}@{k}"] = 100.0 * per_k[k].corpus[metric]
    plain = score_captions(refs, {str(i): scan2cap_candidate(t, convention) for i, t in enumerate(texts)},
                           tokenize=tokenize)
    for metric in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L"):
        res.metrics[metric] = 100.0 * plain.corpus[metric]
    untokenized = sum(rec.meta.get("tokens") is None for rec, _ in pairs)
    res.notes += _scan2cap_notes(convention, untokenized, localized, modes)
    for i, (rec, pred) in enumerate(pairs):
        sample = {**_base_sample(rec, pred), "iou": ious[i]}
        for k, scores in per_k.items():
            sample.update({f"{m}@{k}": 100.0 * scores.per_sample[m][i] for m in ("CIDEr", "BLEU-4", "ROUGE-L")})
        res.per_sample.append(sample)
    return res


def _scan2cap_references(rec: Record) -> list[str]:
    """"sos <first 30 tokens> eos" per description: ScanRefer's own tokens, else the answers tokenized."""
    tokens = rec.meta.get("tokens")
    if tokens is None:
        tokens = [caption_tokens(a) for a in rec.answers]
    if not tokens:
        raise ValueError(f"record {rec.id} ({rec.scene_id}) has no reference captions")
    return [scan2cap_reference(t) for t in tokens]


def _scan2cap_notes(convention: str, untokenized: int, localized: bool, modes: Counter) -> list[str]:
    notes = [f"caption convention {convention}: hit is IoU {'>' if convention == 'scan2cap' else '>='} k"]
    if untokenized:
        notes.append(f"{untokenized} records carry no ScanRefer tokens: references tokenized from their "
                     "answers (close to, not exactly, Scan2Cap's corpus)")
    if not localized:
        notes.append("predictions carry no boxes or instance ids: only plain caption scores")
    if modes.get("ids"):
        notes.append(f"{modes['ids']} samples compared by instance id (no target boxes available)")
    return notes


# ---------------------------------------------------------------- VSI-Bench aggregate

VSI_MCA = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard",
           "object_rel_distance", "route_planning", "obj_appearance_order")
VSI_NA = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")


def eval_vsibench(pairs: list[Pair], name: str = "vsibench") -> TaskResult:
    """Accuracy (MC) or MRA (numerical) per question type; `overall` is the mean over tasks.

    As the benchmark's own aggregate (thinking-in-space, lmms_eval/tasks/vsibench/utils.py,
    `vsibench_aggregate_results`): the easy / medium / hard relative-direction accuracies are
    summed and divided by 3, a level with no questions counting 0, and that task always enters
    `overall`. A note names each absent level."""
    res = TaskResult(name, "vsibench", len(pairs), sum(p is None for _, p in pairs))
    per_type: dict[str, list[float]] = defaultdict(list)
    for rec, pred in pairs:
        qtype = rec.question_type or rec.task
        if rec.answer_type == "choice":
            score = 0.0 if pred is None else float(choice_hit(rec, pred.text))
        else:
            gt = parse_number(rec.answers[0])
            if gt is None:
                raise ValueError(f"record {rec.id}: numeric answer {rec.answers!r} is not a number")
            score = 0.0 if pred is None else mean_relative_accuracy(read_number(rec, pred.text), gt)
        per_type[qtype].append(score)
        res.per_sample.append({**_base_sample(rec, pred), "question_type": qtype, "score": 100.0 * score})
    task_scores = {q: _pct(v) for q, v in sorted(per_type.items())}
    levels = VSI_MCA[:3]
    absent = [q for q in levels if q not in task_scores]
    task_scores["object_rel_direction"] = sum(task_scores.pop(q, 0.0) for q in levels) / 3.0
    if absent:
        res.notes.append(f"relative direction: no {', '.join(absent)} questions; each absent level "
                         "counts 0 in object_rel_direction (sum of the three levels / 3), as the "
                         "official aggregate does")
    res.metrics = dict(task_scores)
    res.metrics["overall"] = float(np.mean(list(task_scores.values()))) if task_scores else float("nan")
    return res
