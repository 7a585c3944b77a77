"""`p3d predict`: batched greedy answers of an exported Proxy3D folder over proxy shards + records.

Writes the predictions contract of `pipeline/eval/predictions.py`: one line per answered record with
`id`, `scene_id`, `task`, `text`, and, when the answer names objects, their segment ids
(`object_ids`), store labels (`instance_ids`) and boxes from segments.json. A stage 1-3 folder
answers from the simplified scene (fused identifier + semantic tokens); a stage-4 folder from the
proxies. No DeepSpeed here: the folder loads with `from_pretrained`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

log = logging.getLogger("p3d.predict")


def answer_objects(text: str, segments: list[dict], expects_objects: bool, num_obj_tokens: int) -> dict:
    """Segment ids named in `text` (via their identifiers), with their instance ids and boxes; {}
    when none is expected. An identifier that names no segment of the scene is dropped."""
    from trainer.objects import object_ids_in_text, segment_identifiers

    segment_of = {ident: seg for seg, ident in segment_identifiers(segments, num_obj_tokens).items()}
    ids = [segment_of[i] for i in object_ids_in_text(text) if i in segment_of]
    if not ids and not expects_objects:
        return {}
    by_id = {s["id"]: s for s in segments}
    return {"object_ids": ids, "instance_ids": [by_id[i]["label"] for i in ids],
            "boxes": [by_id[i]["box"] for i in ids]}


def answer_parts(text: str, answer_type: str) -> tuple[str, str]:
    """(the answer, the text that names its objects). A model trained with count_by_listing names
    what it counts before the count ("<OBJ002> <OBJ005>: 2"): the answer is then the count, and the
    named objects stay with the prediction as its objects."""
    from trainer.stages import split_listed_answer

    if answer_type == "objects":
        return text, text
    parts = split_listed_answer(text)
    if parts is None:
        return text, text
    listed, answer = parts
    return answer, listed


def clean_text(text: str) -> str:
    return text.replace("<|im_end|>", "").replace("<|endoftext|>", "").strip()


def predict(checkpoint: str | Path, shards: str | Path, records: str | Path, out: str | Path,
            split: str | None = "val", batch_size: int = 8, max_new_tokens: int = 32,
            limit: int | None = None) -> int:
    """Answer the records of `split` (None: all); returns the number of predictions written."""
    import torch

    from pipeline.eval.predictions import Prediction, write_predictions
    from schemas.record import load_records
    from trainer.data import Collator, iter_scenes, scene_inputs
    from trainer.model import Proxy3DModel
    from trainer.stages import record_example

    model = Proxy3DModel.from_pretrained(checkpoint).eval()
    mode = "proxy" if 4 in model.cfg.stages_done else "fused"
    collate = Collator(model.tokenizer, model.cfg, model.category_ids, max_length=10**9, padding_side="left")
    by_scene: dict[str, list] = defaultdict(list)
    for rec in load_records(records):
        if split is None or rec.split == split:
            by_scene[rec.scene_id].append(rec)
    if limit is not None:
        kept = 0
        for scene_id in sorted(by_scene):
            by_scene[scene_id] = by_scene[scene_id][:max(0, limit - kept)]
            kept += len(by_scene[scene_id])

    predictions, skipped, seen = [], 0, set()
    pending: list[tuple] = []

    def flush() -> None:
        if not pending:
            return
        batch = collate([(ex, inputs) for ex, inputs, _, _ in pending], with_answer=False)
        with torch.inference_mode():
            generated = model.generate(batch, max_new_tokens=max_new_tokens)
        for (ex, _, rec, segments), ids in zip(pending, generated):
            text = clean_text(model.tokenizer.decode(ids, skip_special_tokens=False))
            text, objects_text = answer_parts(text, rec.answer_type)
            predictions.append(Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text=text,
                                          **answer_objects(objects_text, segments, rec.answer_type == "objects",
                                                            model.cfg.num_obj_tokens)))
        pending.clear()

    for scene in iter_scenes(shards, shuffle=False):
        recs = by_scene.get(scene["scene_id"])
        if not recs:
            continue
        seen.add(scene["scene_id"])
        inputs = scene_inputs(scene, mode, model.cfg.num_obj_tokens)
        for rec in recs:
            ex = record_example(rec, scene["segments"], model.cfg.num_obj_tokens, with_answer=False)
            if ex is None:
                skipped += 1
                continue
            pending.append((ex, inputs, rec, scene["segments"]))
            if len(pending) == batch_size:
                flush()
    flush()
    missing = sorted(s for s in by_scene if by_scene[s] and s not in seen)
    if missing:
        log.warning("%d scenes of the records are not in %s (e.g. %s)", len(missing), shards, missing[0])
    if skipped:
        log.warning("%d records skipped: an object the question names is not among the scene's segments", skipped)
    n = write_predictions(predictions, out)
    log.info("wrote %d predictions to %s", n, out)
    return n
