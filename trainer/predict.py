"""`p3d predict`: batched greedy answers of an exported Proxy3D folder over proxy shards + records.

Writes the predictions contract of `pipeline/eval/predictions.py`: one line per record with
`id`, `scene_id`, `task`, `text`, and, when the answer names objects, their segment ids
(`object_ids`), the ground-truth instances matched to them (`instance_ids`, null for a segment that
matched none; never the segmenter's labels) and boxes from segments.json. A record with targets
that match no segment lists them in `unmatched_targets`, so eval counts them. A caption carries the
segment its question names instead (Scan2Cap localizes a caption by its object). A record whose
question names an object that matches no segment cannot be asked: it is written with `not_asked`
and its reason, so that eval counts it as a miss. A stage 1-3 folder
answers from the simplified scene (fused identifier + semantic tokens); a stage-4 folder from the
proxies. No DeepSpeed here: the folder loads with `from_pretrained`.

Each question is asked as training wrote it, through the checkpoint's chat template up to its
generation prompt (`<|im_start|>assistant\n`, trainer/chat.py); an answer ends at the first
end-of-turn token (`<|im_end|>`, where decoding stops) or any other eos of the checkpoint's
generation config (Qwen2.5-VL's also lists `<|endoftext|>`), and nothing after it is kept.

Answers are greedy, as the benchmarks' own evaluations decode, except the tasks named in `mbr_tasks`
(number answers scored by MRA): each such question is answered `mbr_samples` times by sampling, and
the answer kept is the sample with the highest mean MRA against all of them, the minimum-Bayes-risk
answer under the metric (Lukasik et al., "Regression-aware inference with LLMs", 2024). Greedy
decoding writes a number digit by digit, each digit the most likely one alone: an uncertain model
writes the mode of the first digit, not a value near what it expects; measured:
docs/RESULTS.md#numeric-mbr. Each record draws from its own seed (the run's and its id), so an answer
does not depend on which others are asked beside it.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from schemas.workflow import EvalConfig

log = logging.getLogger("p3d.predict")


def answer_objects(text: str, segments: list[dict], expects_objects: bool, num_obj_tokens: int) -> dict:
    """Segment ids named in `text` (via their identifiers), with their matched ground-truth instance
    ids (None for a segment matched to none, so it equals no target) and boxes; {} when none is
    expected. An identifier that names no segment of the scene is dropped."""
    from trainer.objects import object_ids_in_text, segment_identifiers

    segment_of = {ident: seg for seg, ident in segment_identifiers(segments, num_obj_tokens).items()}
    ids = [segment_of[i] for i in object_ids_in_text(text) if i in segment_of]
    if not ids and not expects_objects:
        return {}
    by_id = {s["id"]: s for s in segments}
    return {"object_ids": ids, "instance_ids": [by_id[i]["instance_id"] for i in ids],
            "boxes": [by_id[i]["box"] for i in ids]}


def caption_objects(record, segments: list[dict]) -> dict:
    """The segment a caption's `<OBJ>` resolved to (its first target, through the matching), with
    its instance id and box; {} when the target matches no segment."""
    from trainer.objects import instances_to_segments

    seg_id = instances_to_segments(segments).get(record.target_ids[0]) if record.target_ids else None
    if seg_id is None:
        return {}
    seg = next(s for s in segments if s["id"] == seg_id)
    return {"object_ids": [seg_id], "instance_ids": [int(seg["instance_id"])], "boxes": [seg["box"]]}


def not_asked_reason(record, segments: list[dict], num_obj_tokens: int) -> str:
    """Why `record_example` could not write the question (an object it names has no identifier)."""
    from trainer.examples import OBJ_PLACEHOLDER
    from trainer.objects import instances_to_segments

    named = record.target_ids[:record.question.count(OBJ_PLACEHOLDER)]
    unmatched = [t for t in named if t not in instances_to_segments(segments)]
    if unmatched:
        return f"objects {unmatched} named by the question match no segment of the scene"
    return f"an object the question names has no identifier (only {num_obj_tokens} <OBJxxx> tokens)"


# Answer types a model trained with answer_steps may precede with steps (trainer.examples.answer_in_steps).
STEPS_ANSWER_TYPES = ("number", "choice")


def answer_parts(text: str, answer_type: str) -> tuple[str, str]:
    """(the answer, the text that names its objects). A model trained with count_by_listing names
    what it counts before the count ("<OBJ002> <OBJ005>: 2"): the answer is then the count, and the
    named objects stay with the prediction as its objects. A model trained with answer_steps writes
    steps before a number or a side ("4.6 3.8: 1.3", "west north, north west: left"): the answer is what
    follows them."""
    from trainer.examples import final_answer, split_listed_answer

    if answer_type == "objects":
        return text, text
    parts = split_listed_answer(text)
    if parts is not None:
        listed, answer = parts
        return answer, listed
    if answer_type in STEPS_ANSWER_TYPES and ": " in text:
        return final_answer(text), ""
    return text, text


def clean_text(text: str) -> str:
    return text.replace("<|im_end|>", "").replace("<|endoftext|>", "").strip()


def stop_ids(model) -> set[int]:
    """Token ids that end an answer: the end-of-turn token and the generation config's eos ids."""
    eos = getattr(getattr(model.lm, "generation_config", None), "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return {model.cfg.chat_end_id, *(int(i) for i in eos)}


def until_stop(ids: list[int], stops: set[int]) -> list[int]:
    """`ids` up to the first stop token (excluded)."""
    return next((ids[:i] for i, t in enumerate(ids) if t in stops), ids)


def load_for_prediction(checkpoint: str | Path):
    """(model, collate, mode) of an exported folder: a stage-4 folder reads proxies, a stage 1-3
    folder the simplified scene; prompts are left-padded and never cut."""
    from trainer.model import Proxy3DModel
    from trainer.shard_reader import Collator

    model = Proxy3DModel.from_pretrained(checkpoint).eval()
    mode = "proxy" if 4 in model.cfg.stages_done else "fused"
    collate = Collator(model.tokenizer, model.cfg, model.category_ids, max_length=10**9, padding_side="left")
    return model, collate, mode


def records_by_scene(records: str | Path, split: str | None, limit: int | None) -> dict[str, list]:
    """The records of `split` (None: all) by scene; with `limit`, the first that many in scene order."""
    from schemas.record import load_records

    by_scene: dict[str, list] = defaultdict(list)
    for rec in load_records(records):
        if split is None or rec.split == split:
            by_scene[rec.scene_id].append(rec)
    if limit is not None:
        kept = 0
        for scene_id in sorted(by_scene):
            by_scene[scene_id] = by_scene[scene_id][:max(0, limit - kept)]
            kept += len(by_scene[scene_id])
    return by_scene


def scene_questions(scene: dict, records: list, mode: str, num_obj_tokens: int):
    """Each record of the scene as (record, example, the scene inputs it is asked on); example and
    inputs None where the question cannot be asked (an object it names has no identifier)."""
    from pipeline.cluster.caption import captioned_segment, focus_scene
    from trainer.examples import record_example
    from trainer.shard_reader import scene_inputs

    inputs = scene_inputs(scene, mode, num_obj_tokens)
    for rec in records:
        ex = record_example(rec, scene["segments"], num_obj_tokens, with_answer=False)
        if ex is None:
            yield rec, None, None
            continue
        # A caption sees its object's Scan2Cap focus block, as in training (trainer/rank_stream.py).
        shown = focus_scene(scene, captioned_segment(ex) if mode == "proxy" else None)
        yield rec, ex, (inputs if shown is scene else scene_inputs(shown, mode, num_obj_tokens))


def was_cut(ids: list[int], stops: set[int]) -> bool:
    """Whether generated `ids` end without a stop token: the answer ran into max_new_tokens."""
    return not any(t in stops for t in ids)


def answer_batch(model, collate, pending: list[tuple], max_new_tokens: int) -> list:
    """Greedy predictions of (example, inputs, record, segments) questions, decoded together;
    an answer that ran into `max_new_tokens` is marked `cut`."""
    import torch

    if not pending:
        return []
    batch = collate([(ex, inputs) for ex, inputs, _, _ in pending], with_answer=False)
    with torch.inference_mode():
        generated = model.generate(batch, max_new_tokens=max_new_tokens)
    stops = stop_ids(model)
    predictions = []
    for (_, _, rec, segments), ids in zip(pending, generated):
        pred = prediction_of(rec, segments, clean_text(model.tokenizer.decode(until_stop(ids, stops),
                                                                             skip_special_tokens=False)),
                             model.cfg.num_obj_tokens)
        pred.cut = was_cut(ids, stops) or None
        predictions.append(pred)
    return predictions


def mbr_index(values: list[float]) -> int:
    """Index of the minimum-Bayes-risk value under MRA: the one whose mean MRA against all `values`
    (each standing in turn for the truth) is highest; the first of those that tie."""
    from pipeline.eval.metrics import mean_relative_accuracy

    expected = [sum(mean_relative_accuracy(c, v) for v in values) for c in values]
    return expected.index(max(expected))


def mbr_candidates(texts: list[str], cut: list[bool], answer_type: str) -> list[tuple[int, float]]:
    """(index, number) of the sampled answers that state a finite number, leaving out those that ran
    into max_new_tokens (`cut`) while any other states one: a sample cut inside its steps ("bed 2.6
    6.5 0.5, cab") has no answer yet, and the number read from it is a step's."""
    from pipeline.eval.text import parse_number

    stated = [(k, parse_number(answer_parts(text, answer_type)[0])) for k, text in enumerate(texts)]
    stated = [(k, value) for k, value in stated if value is not None and math.isfinite(value)]
    whole = [(k, value) for k, value in stated if not cut[k]]
    return whole or stated


def answer_by_mbr(model, collate, item: tuple, samples: int, max_new_tokens: int, seed: int):
    """The prediction of one number question (example, inputs, record, segments): the
    minimum-Bayes-risk answer (`mbr_index`) among `samples` sampled ones (`mbr_candidates`: those
    whole, where any is); greedy where none of them states a number. A record whose chosen sample ran
    into `max_new_tokens` is marked `cut`."""
    import torch

    ex, inputs, rec, segments = item
    batch = collate([(ex, inputs)] * samples, with_answer=False)
    generator = torch.Generator(device=model.lm.device).manual_seed(zlib.crc32(f"{seed}/{rec.id}".encode()))
    with torch.inference_mode():
        drawn = model.generate(batch, max_new_tokens=max_new_tokens, generator=generator)
    stops = stop_ids(model)
    texts = [clean_text(model.tokenizer.decode(until_stop(ids, stops), skip_special_tokens=False)) for ids in drawn]
    stated = mbr_candidates(texts, [was_cut(ids, stops) for ids in drawn], rec.answer_type)
    if not stated:
        return answer_batch(model, collate, [item], max_new_tokens)[0]
    chosen = stated[mbr_index([value for _, value in stated])][0]
    pred = prediction_of(rec, segments, texts[chosen], model.cfg.num_obj_tokens)
    pred.decoding = f"mbr {samples}"
    pred.cut = was_cut(drawn[chosen], stops) or None
    return pred


def prediction_of(rec, segments: list[dict], generated: str, num_obj_tokens: int):
    """The Prediction of a record from the model's whole answer text: the answer read out of it, the
    objects it names, and the whole text kept beside the answer where the two differ (the steps
    before an answer are what tells a model that has not learned a task apart from one that reads
    the scene wrong)."""
    from pipeline.eval.predictions import Prediction

    text, objects_text = answer_parts(generated, rec.answer_type)
    if rec.task == "caption":
        objects = caption_objects(rec, segments)
    else:
        objects = answer_objects(objects_text, segments, rec.answer_type == "objects", num_obj_tokens)
    return Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text=text,
                      generated=generated if generated != text else None, **objects)


def mark_unmatched(predictions: list, unmatched_of: dict[str, list[int]]) -> None:
    """Give each prediction its record's targets that match no segment (eval counts them as misses)."""
    if not unmatched_of:
        return
    for pred in predictions:
        pred.unmatched_targets = unmatched_of.get(pred.id)
    by_task = Counter(pred.task for pred in predictions if pred.unmatched_targets)
    log.warning("%d records have targets that match no segment (their predictions can only miss): %s",
                len(unmatched_of), dict(sorted(by_task.items())))


def predict(checkpoint: str | Path, shards: str | Path, records: str | Path, out: str | Path,
            split: str | None = "val", batch_size: int = 8, max_new_tokens: int = 32,
            limit: int | None = None, mbr_tasks: list[str] | tuple[str, ...] = (),
            mbr_samples: int = EvalConfig.model_fields["mbr_samples"].default, seed: int = 0) -> int:
    """Answer the records of `split` (None: all); returns the number of predictions written. The
    records of `mbr_tasks` (number answers) are answered by minimum Bayes risk over `mbr_samples`
    samples (module docstring)."""
    from pipeline.eval.predictions import Prediction, write_predictions
    from trainer.examples import unmatched_targets
    from trainer.shard_reader import iter_scenes

    model, collate, mode = load_for_prediction(checkpoint)
    num_obj_tokens = model.cfg.num_obj_tokens
    by_scene = records_by_scene(records, split, limit)
    mbr_tasks = frozenset(mbr_tasks)
    if mbr_tasks and mbr_samples < 2:
        raise ValueError(f"mbr_samples must be at least 2 to decode by minimum Bayes risk, got {mbr_samples}")
    not_numbers = sorted({rec.task for recs in by_scene.values() for rec in recs
                          if rec.task in mbr_tasks and rec.answer_type != "number"})
    if not_numbers:
        raise ValueError(f"mbr_tasks: {', '.join(not_numbers)} have answers that are not numbers; minimum "
                         "Bayes risk decoding is for number answers (scored by MRA)")
    predictions, pending, seen = [], [], set()
    unmatched_of: dict[str, list[int]] = {}  # record id -> its targets that match no segment
    for scene in iter_scenes(shards, shuffle=False):
        if not by_scene.get(scene["scene_id"]):
            continue
        seen.add(scene["scene_id"])
        segments = scene["segments"]
        for rec, ex, inputs in scene_questions(scene, by_scene[scene["scene_id"]], mode, num_obj_tokens):
            unmatched = unmatched_targets(rec, segments)
            if unmatched:
                unmatched_of[rec.id] = unmatched
            if ex is None:
                predictions.append(Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text="",
                                              not_asked=not_asked_reason(rec, segments, num_obj_tokens)))
                continue
            if rec.task in mbr_tasks:
                predictions.append(answer_by_mbr(model, collate, (ex, inputs, rec, segments), mbr_samples,
                                                 max_new_tokens, seed))
                continue
            pending.append((ex, inputs, rec, segments))
            if len(pending) == batch_size:
                predictions += answer_batch(model, collate, pending, max_new_tokens)
                pending = []
    predictions += answer_batch(model, collate, pending, max_new_tokens)
    cut = Counter(pred.task for pred in predictions if pred.cut)  # task -> answers cut by max_new_tokens
    if cut:
        # An answer in steps cut before its end reads as a wrong answer, and the scores cannot say
        # why: the spatial recipe's left/right at 7.6 with 16 tokens. measured: docs/RESULTS.md#left-right-signs
        log.warning("%d answers ran into max_new_tokens=%d without ending (%s) and are scored as written: "
                    "raise --max-new-tokens (eval.max_new_tokens)", sum(cut.values()), max_new_tokens,
                    ", ".join(f"{task} {n}" for task, n in sorted(cut.items())))

    missing = sorted(s for s in by_scene if by_scene[s] and s not in seen)
    if missing:
        log.warning("%d scenes of the records are not in %s (e.g. %s)", len(missing), shards, missing[0])
    not_asked = Counter(pred.task for pred in predictions if pred.not_asked)
    if not_asked:
        log.warning("%d records not asked (an object the question names is not among the scene's segments), "
                    "written with not_asked, scored as misses: %s", sum(not_asked.values()), dict(not_asked))
    mark_unmatched(predictions, unmatched_of)
    n = write_predictions(predictions, out)
    log.info("wrote %d predictions to %s", n, out)
    return n
