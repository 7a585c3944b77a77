"""`p3d eval`: join records and predictions, pick each group's metric, print one table.

Groups are (source, task): ScanQA and MMScan QA share a task but are different benchmarks. A
benchmark name (scanqa, sqa3d, scanrefer, multi3drefer, scan2cap, vsibench, ...) selects records
by source; `vsibench` adds the benchmark's own aggregate row. A prediction marked `not_asked` (its
question names an object that matches no segment) scores as a missing one, with a note per group;
each group also notes how many targets match no segment (`unmatched_targets`, written by predict),
and counts the answers that ran into the generation limit before their end (`num_cut`).
ScanQA / SQA3D exact match follows a named convention (`qa_convention`, text.QA_CONVENTIONS).
What the caption scorers print (pycocoevalcap's BLEU prints a dictionary) is kept off standard
output: the table and p3d's own messages are all a user sees there.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
from collections import defaultdict
from pathlib import Path

from pipeline.eval.chance import chance_level
from pipeline.eval.metrics import (
    SceneObjects,
    TaskResult,
    eval_choice,
    eval_exact_match,
    eval_grounding,
    eval_multi_grounding,
    eval_number,
    eval_scan2cap,
    eval_scanqa,
    eval_sqa3d,
    eval_vsibench,
    metric_kind,
)
from pipeline.eval.predictions import Prediction
from schemas.record import TASKS, Record

log = logging.getLogger(__name__)


def select_records(records: list[Record], task: str) -> list[Record]:
    if task == "all":
        return records
    if task in TASKS:
        return [r for r in records if r.task == task]
    chosen = [r for r in records if r.source == task]
    if not chosen:
        known = sorted({r.task for r in records} | {r.source for r in records})
        raise ValueError(f"no records for task or source {task!r}; present: {', '.join(known)}")
    return chosen


def _quiet_stdout(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            out = fn(*args, **kwargs)
        if captured.getvalue().strip():
            log.debug("scorer output: %s", captured.getvalue().strip())
        return out

    return run


@_quiet_stdout
def evaluate(
    records: list[Record],
    predictions: dict[str, Prediction],
    task: str = "all",
    scene_objects: SceneObjects | None = None,
    caption_convention: str = "scan2cap",
    *,
    qa_convention: str = "scanqa",
) -> list[TaskResult]:
    chosen = select_records(records, task)
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in chosen:
        groups[(r.source, r.task)].append(r)
    results = []
    for (source, rtask), recs in sorted(groups.items()):
        preds = [predictions.get(r.id) for r in recs]
        not_asked = [p.not_asked for p in preds if p is not None and p.not_asked]
        pairs = [(r, None if p is not None and p.not_asked else p) for r, p in zip(recs, preds)]
        result = _score_group(f"{source}/{rtask}", rtask, pairs, scene_objects, caption_convention,
                              qa_convention=qa_convention)
        if not_asked:
            result.notes.append(f"{len(not_asked)} records not asked, scored as misses (e.g. {not_asked[0]})")
        unmatched = [p.unmatched_targets for p in preds if p is not None and p.unmatched_targets]
        if unmatched:  # the segments stand for objects only through the cluster stage's matching
            result.notes.append(f"{sum(map(len, unmatched))} targets of {len(unmatched)} records match no "
                                "segment of their scene (scored as they fall: they can only be missed)")
        result.num_cut = sum(1 for p in preds if p is not None and p.cut)
        result.chance = chance_level(rtask, recs, scene_objects)
        results.append(result)
    vsi = [r for r in chosen if r.source == "vsibench"]
    if vsi:
        results.append(eval_vsibench([(r, predictions.get(r.id)) for r in vsi]))
    known_ids = {r.id for r in records}
    stray = [i for i in predictions if i not in known_ids]
    if stray and results:
        results[0].notes.append(f"{len(stray)} predictions match no record (e.g. {stray[:3]})")
    return results


def _score_group(name: str, task: str, pairs, scene_objects, caption_convention: str = "scan2cap", *,
                 qa_convention: str = "scanqa") -> TaskResult:
    kinds = {metric_kind(task, r.answer_type) for r, _ in pairs}
    if len(kinds) != 1:
        raise ValueError(f"{name}: records mix answer types {sorted(kinds)}; split them by task")
    kind = kinds.pop()
    if kind == "scanqa":
        return eval_scanqa(pairs, name, qa_convention)
    if kind == "sqa3d":
        return eval_sqa3d(pairs, name, qa_convention)
    if kind == "scanrefer":
        return eval_grounding(pairs, name, scene_objects)
    if kind == "multi3drefer":
        return eval_multi_grounding(pairs, name, scene_objects)
    if kind == "scan2cap":
        return eval_scan2cap(pairs, name, scene_objects, caption_convention)
    if kind == "choice":
        return eval_choice(pairs, name)
    if kind == "number":
        return eval_number(pairs, name)
    return eval_exact_match(pairs, name)


def format_table(results: list[TaskResult]) -> str:
    """One line per (group, metric): score, chance beside it, sample counts."""
    rows = [("group", "metric", "score", "chance", "n", "missing")]
    for res in results:
        for metric, value in res.metrics.items():
            chance = res.chance.get(metric)
            rows.append((res.name, metric, _fmt(value), "-" if chance is None else _fmt(chance),
                         str(res.num_samples), str(res.num_missing)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"note ({r.name}): {n}" for r in results for n in r.notes]
    notes += [f"note ({r.name}): {r.num_cut} answers ran into the generation limit before their end, scored as "
              "written (raise --max-new-tokens)" for r in results if r.num_cut]
    return "\n".join(lines + notes)


def _fmt(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.2f}"


def write_json(results: list[TaskResult], path: str | Path) -> None:
    """Every number and the per-sample scores, written atomically."""
    from schemas.io import write_json_atomic

    write_json_atomic(path, {"results": [r.to_json() for r in results]}, default=_json_default)


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
