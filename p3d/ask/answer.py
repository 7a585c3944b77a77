"""Greedy answers about one scene, the scene's prefix encoded once for all questions (KV cache).

Every prompt of a scene starts the same way: the template's opening (Qwen's system turn), the
vision-start token, the K scene tokens and the vision-end token (trainer/shard_reader.py's Collator lays it
out; K is 128-700, a question ~10 tokens). `PrefixCache` runs that prefix through the language model
once. A batch of questions then decodes on copies of its keys and values (`Proxy3DModel.generate`'s
`prefix_cache`), each row `prefix | padding | question` with the padding masked out and the
question's own rotary positions from the Collator, decoded greedily together, so each answer is the one
`Proxy3DModel.generate` gives on the whole prompt (tests/test_ask.py checks equality;
benchmarks/ask.py measures the speed-up against re-encoding).

Answers that name objects (`<OBJxxx>`) come back with each object's segment, box (metres, the
store's world frame) and category: the ground-truth category of the instance matched to the
segment where the source has ground truth, else the model's own answer to "What is <OBJxxx>?" (the
naming question it was trained on), asked in one more batch on the same cached prefix.

Legend: B questions, L tokens, N question tokens (padded), P prefix tokens, H hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainer.examples import Example
from trainer.model import text_only_batch

NAMING_QUESTION = "What is {}?"  # the toy world's object_name template (pipeline/toy/annotate.py)


@dataclass
class Answer:
    question: str
    text: str
    objects: list[dict] = field(default_factory=list)  # segment_id, identifier, category, category_from, box


def _batch(model, collate, scene_id: str, question: str, inputs: dict) -> dict:
    return collate([(Example(scene_id, "ask", question, ""), inputs)], with_answer=False)


def prefix_length(model, input_ids_L: torch.Tensor) -> int:
    """Tokens up to and including the vision-end token: the part every question of a scene shares."""
    ends = (input_ids_L == model.cfg.vision_end_id).nonzero()
    if len(ends) != 1:
        raise ValueError(f"expected one vision-end token in the prompt, found {len(ends)}")
    return int(ends[0, 0]) + 1


def _step(model, embeds_BLH, position_ids_3BL, cache, mask_BL):
    out = model.lm(inputs_embeds=embeds_BLH, attention_mask=mask_BL, position_ids=position_ids_3BL, cache=cache,
                   use_cache=True)
    return out, (out.cache if hasattr(out, "cache") else out.past_key_values)


class PrefixCache:
    """The scene's shared prompt prefix, run once; `generate_batch(questions)` re-uses it."""

    def __init__(self, model, collate, scene_id: str, inputs: dict):
        self.model, self.collate, self.scene_id, self.inputs = model, collate, scene_id, inputs
        probe = _batch(model, collate, scene_id, "?", inputs)
        self.num_prefix = prefix_length(model, probe["input_ids"][0])
        self.prefix_ids = probe["input_ids"][0, :self.num_prefix]
        with torch.inference_mode():
            embeds_1LH = model.input_embeddings(probe)[:, :self.num_prefix]
            _, self.cache = _step(model, embeds_1LH, probe["position_ids"][:, :, :self.num_prefix], None,
                                  torch.ones(1, self.num_prefix, dtype=torch.long))

    def generate(self, question: str, max_new_tokens: int) -> list[int]:
        return self.generate_batch([question], max_new_tokens)[0]

    @torch.inference_mode()
    def generate_batch(self, questions: list[str], max_new_tokens: int) -> list[list[int]]:
        """Greedy token ids per question, all decoded together on copies of the prefix's cache. Rows are
        `prefix | padding | question`: the padding is masked out and the rotary positions are each
        question's own, so a row sees what it would see alone. The question's own tokens only: no
        scene slots after the prefix, so no scene vectors needed."""
        model, P, B = self.model, self.num_prefix, len(questions)
        rows = [_batch(model, self.collate, self.scene_id, q, self.inputs) for q in questions]
        for row in rows:
            if not torch.equal(row["input_ids"][0, :P], self.prefix_ids):  # the Collator's layout changed
                raise AssertionError("a question's prompt does not start with the scene's cached prefix")
        width = max(row["input_ids"].shape[1] for row in rows) - P
        ids_BN = torch.full((B, width), model.cfg.pad_id, dtype=torch.long)
        pos_3BN = torch.zeros((3, B, width), dtype=torch.long)
        mask_BL = torch.zeros((B, P + width), dtype=torch.long)
        mask_BL[:, :P] = 1
        for b, row in enumerate(rows):
            n = row["input_ids"].shape[1] - P
            ids_BN[b, width - n:] = row["input_ids"][0, P:]
            pos_3BN[:, b, width - n:] = row["position_ids"][:, 0, P:]
            mask_BL[b, P + width - n:] = 1
        batch = text_only_batch(ids_BN, attention_mask=mask_BL, position_ids=pos_3BN)
        return model.generate(batch, max_new_tokens, prefix_cache=self.cache)


def generate_reencoded(model, collate, scene_id: str, inputs: dict, question: str, max_new_tokens: int) -> list[int]:
    """The whole prompt through `Proxy3DModel.generate` (what `p3d predict` does): the reference."""
    with torch.inference_mode():
        return model.generate(_batch(model, collate, scene_id, question, inputs), max_new_tokens=max_new_tokens)[0]


def load_model(checkpoint):
    """(model, collate, mode) of an exported folder, as `p3d predict` loads it."""
    from trainer.predict import load_for_prediction

    return load_for_prediction(checkpoint)


def named_objects(text: str, segments: list[dict], num_obj_tokens: int, ask_name) -> list[dict]:
    """The objects an answer names: segment, identifier, box, and category, the matched ground truth's
    where there is one, else `ask_name(identifier)` (the model's own naming)."""
    from trainer.objects import obj_token, segment_identifiers
    from trainer.predict import answer_objects

    ident_of = segment_identifiers(segments, num_obj_tokens)
    found = answer_objects(text, segments, False, num_obj_tokens)
    objects = []
    for seg_id, box in zip(found.get("object_ids", []), found.get("boxes", [])):
        seg = next(s for s in segments if s["id"] == seg_id)
        identifier = obj_token(ident_of[seg_id])
        if seg.get("category"):
            category, source = seg["category"], "ground truth (matched instance)"
        else:
            category, source = ask_name(identifier), "model"
        objects.append({"segment_id": seg_id, "identifier": identifier, "category": category,
                        "category_from": source, "instance_id": seg.get("instance_id"), "box": box})
    return objects


def answer_questions(model, collate, mode: str, sample: dict, questions: list[str], max_new_tokens: int = 32,
                     kv_cache: bool = True, batch_size: int = 8) -> list[Answer]:
    """Each question's answer, with the objects it names. With `kv_cache` the scene is encoded once and
    the questions decoded `batch_size` at a time on it; without, each whole prompt is encoded alone."""
    from trainer.predict import answer_parts, clean_text
    from trainer.shard_reader import scene_inputs

    if sample["feat"].shape[1] != model.cfg.feat_dim:
        raise ValueError(f"the scene's features have D={sample['feat'].shape[1]}, the checkpoint's projector reads "
                         f"D={model.cfg.feat_dim}: features of another encoder than it was trained on")
    inputs = scene_inputs(sample, mode, model.cfg.num_obj_tokens)
    if not len(inputs["xyz"]):
        raise ValueError("the checkpoint (stages 1-3) reads the simplified scene, one token per object matched "
                         "to ground truth, and this scene has none: ask a stage-4 checkpoint")
    scene_id = sample["scene_id"]
    prefix = PrefixCache(model, collate, scene_id, inputs) if kv_cache else None

    def run(asked: list[str]) -> list[str]:
        if prefix is not None:
            ids = [t for lo in range(0, len(asked), batch_size)
                   for t in prefix.generate_batch(asked[lo:lo + batch_size], max_new_tokens)]
        else:
            ids = [generate_reencoded(model, collate, scene_id, inputs, q, max_new_tokens) for q in asked]
        return [clean_text(model.tokenizer.decode(t, skip_special_tokens=False)) for t in ids]

    parts = [answer_parts(text, "text") for text in run(questions)]
    # The objects the answers name and ground truth does not: the model names each, once, in one batch.
    unnamed: set[str] = set()
    for _, named in parts:
        named_objects(named, sample["segments"], model.cfg.num_obj_tokens, lambda ident: unnamed.add(ident) or "")
    wanted = sorted(unnamed)
    names = dict(zip(wanted, run([NAMING_QUESTION.format(i) for i in wanted]))) if wanted else {}
    return [Answer(q, text, named_objects(named, sample["segments"], model.cfg.num_obj_tokens, names.__getitem__))
            for q, (text, named) in zip(questions, parts)]
