"""`p3d dataset stats`: record counts by source and task, plus scenes and answer types."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from schemas.record import Record


def record_stats(records: Iterable[Record]) -> dict:
    by_pair: Counter[tuple[str, str]] = Counter()
    scenes: dict[str, set[str]] = {}
    answer_types: Counter[str] = Counter()
    with_boxes = 0
    total = 0
    for r in records:
        total += 1
        by_pair[(r.source, r.task)] += 1
        scenes.setdefault(r.source, set()).add(r.scene_id)
        answer_types[r.answer_type] += 1
        with_boxes += bool(r.target_boxes)
    return {
        "total": total,
        "by_source_task": {f"{s}/{t}": n for (s, t), n in sorted(by_pair.items())},
        "scenes_by_source": {s: len(v) for s, v in sorted(scenes.items())},
        "answer_types": dict(sorted(answer_types.items())),
        "with_target_boxes": with_boxes,
    }


def format_stats(stats: dict) -> str:
    lines = [f"{'source':<14}{'task':<22}{'records':>9}"]
    for key, n in stats["by_source_task"].items():
        source, task = key.split("/", 1)
        lines.append(f"{source:<14}{task:<22}{n:>9}")
    lines.append(f"{'total':<36}{stats['total']:>9}")
    lines.append("scenes: " + ", ".join(f"{s} {n}" for s, n in stats["scenes_by_source"].items()))
    lines.append("answer types: " + ", ".join(f"{t} {n}" for t, n in stats["answer_types"].items()))
    lines.append(f"records with target boxes: {stats['with_target_boxes']}")
    return "\n".join(lines)
