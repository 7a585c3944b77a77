"""The demo's `p3d ask` step: its own stage-4 checkpoint asked about a held-out scene, the answers
beside the ground truth in the report.

The scene is the held-out toy scene filmed into an mp4 (pipeline/sources/film.py), asked as a user asks
about a video: its frames are decoded and sampled from the mp4. The toy workflow's geometry and
segmenter (`sim_vggt`, `sim_sam2`) simulate the networks from the toy world's depth, poses and masks,
so the filmed scene carries them in its ground-truth sidecar, read at the sampled frames; a real
video goes through a checkpoint trained with the real networks (tests/test_ask.py asks both). The questions are the scene's held-out records that need
no identifier (an `<OBJ>` placeholder names ground truth the user does not have): one per task that
stage 4 trained, as a user would type them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from schemas import layout
from schemas.record import OBJ_PLACEHOLDER, load_records

MAX_QUESTIONS = 3


def held_out_questions(records_path: Path, scene_id: str, split: str, tasks: list[str] | None) -> list:
    """Up to MAX_QUESTIONS records of the scene, one per task, free of placeholders."""
    picked, seen = [], set()
    for rec in load_records(records_path):
        if (rec.scene_id != scene_id or rec.split != split or OBJ_PLACEHOLDER in rec.question
                or rec.task in seen or (tasks and rec.task not in tasks)):
            continue
        picked.append(rec)
        seen.add(rec.task)
        if len(picked) == MAX_QUESTIONS:
            break
    return picked


def truth_of(rec, categories: dict[int, str]) -> str:
    """The record's answer as a user reads it: the targets' categories and boxes for object answers."""
    if rec.answer_type != "objects":
        return ", ".join(rec.answers)
    if not rec.target_ids:
        return "none"
    parts = []
    for target, box in zip(rec.target_ids, rec.target_boxes or [None] * len(rec.target_ids)):
        where = "" if box is None else f" at ({', '.join(f'{v:.2f}' for v in box.center)}) m"
        parts.append(f"{categories.get(target, 'object')} {target}{where}")
    return "; ".join(parts)


def ask_held_out(demo, wf, records_path: Path, scene_id: str, p3d, job: str | None = None,
                 threads: int | None = None) -> dict | None:
    """Run `p3d ask` (a demo step of `job`, with `threads`) on the scene with the main stage-4
    checkpoint; None when the scene has no question to ask."""
    stage4 = wf.train.stage(4)
    recs = held_out_questions(records_path, scene_id, wf.eval.split, stage4.tasks if stage4 else None)
    if not recs:
        return None
    from pipeline.sources.sidecar import sidecar_path
    from pipeline.toy.film import film_scene_folder

    ask_dir = demo.run_dir / layout.DEMO_ASK
    ask_dir.mkdir(parents=True, exist_ok=True)
    questions = ask_dir / f"{scene_id}.questions.txt"
    questions.write_text("".join(r.question + "\n" for r in recs))
    doc_path, viewer = ask_dir / f"{scene_id}.json", layout.scene_page(demo.run_dir, f"{scene_id}-ask")
    video = ask_dir / f"{scene_id}.mp4"
    if not (video.is_file() and sidecar_path(video).is_file()):  # both written atomically; a rerun keeps the cache
        film_scene_folder(Path(wf.source.path), scene_id, video)
    demo.run(f"ask {scene_id}", p3d("ask", str(video), "--questions", str(questions),
                                   "--checkpoint", str(layout.stage_model(wf.train.out, 4)),
                                   "--cache", str(ask_dir / "cache"), "--save", str(doc_path), "--html", str(viewer),
                                   "--max-new-tokens", str(wf.eval.max_new_tokens)), job, threads)
    doc = json.loads(doc_path.read_text())
    objects_json = Path(wf.source.path) / scene_id / "objects.json"
    categories = ({int(o["id"]): o["category"] for o in json.loads(objects_json.read_text())}
                  if objects_json.is_file() else {})
    rows = [{"question": a["question"], "answer": a["text"],
             "objects": "; ".join(f"{o['identifier']} {o['category']} at "
                                  f"({', '.join(f'{v:.2f}' for v in o['box']['center'])}) m" for o in a["objects"]),
             "truth": truth_of(rec, categories)} for a, rec in zip(doc["answers"], recs)]
    return {"scene_id": scene_id, "frame": doc["frame"]["description"], "rows": rows, "viewer": str(viewer),
            "source": doc["kind"], "video": str(video)}


def report_lines(asked: dict | None, run_dir: Path) -> list[str]:
    """The report's section: each question, the answer with its objects, and the ground truth."""
    if not asked:
        return []
    source = (f"the held-out scene filmed into a video ([{Path(asked['video']).name}]"
              f"({os.path.relpath(asked['video'], run_dir)}), its ground truth beside it for the simulated networks)"
              if asked.get("source") == "video" else "the held-out scene's folder")
    lines = ["", f"## Asking a held-out scene (`p3d ask`): {asked['scene_id']}", "",
             (f"The main stage-4 checkpoint answers questions about {source}, as a user runs "
              f"it; boxes in {asked['frame']}. [3D viewer with the answers]"
              f"({os.path.relpath(asked['viewer'], run_dir)})"), "",
             "| question | answer | objects named | ground truth |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['question']} | {r['answer']} | {r['objects'] or '-'} | {r['truth']} |" for r in asked["rows"]]
    return lines
