"""Greedy answers about one scene, the scene's prefix encoded once for all questions (KV cache).

Every prompt of a scene starts the same way: the template's opening, the vision-start token, the K
scene tokens and the vision-end token (trainer/data.py's Collator lays it out; K is 128-700, the
question ~10 tokens). `PrefixCache` runs that prefix through the language model once; each question
then appends only its own tokens to the cached keys and values, decodes greedily, and the cache is
cut back to the prefix (`DynamicCache.crop`; a copy where a cache cannot be cropped). The token ids
and rotary positions a question gets are the Collator's, so the answer is the one
`Proxy3DModel.generate` gives on the whole prompt (tests/test_ask.py checks equality;
benchmarks/ask.py measures the speed-up).

Answers that name objects (`<OBJxxx>`) come back with each object's segment, box (metres, the
store's world frame) and category: the ground-truth category of the instance matched to the
segment where the source has ground truth, else the model's own answer to "What is <OBJxxx>?" (the
naming question it was trained on), asked on the same cached prefix.

Legend: L tokens, P prefix tokens, H hidden size.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from trainer.stages import Example

NAMING_QUESTION = "What is {}?"  # the toy world's object_name template (pipeline/sources/toy/annotate.py)


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


def _step(model, embeds_1LH, position_ids_31L, cache, total_len: int):
    out = model.lm(inputs_embeds=embeds_1LH, attention_mask=torch.ones(1, total_len, dtype=torch.long),
                   position_ids=position_ids_31L, cache=cache, use_cache=True)
    return out, (out.cache if hasattr(out, "cache") else out.past_key_values)


class PrefixCache:
    """The scene's shared prompt prefix, run once; `generate(question)` re-uses it."""

    def __init__(self, model, collate, scene_id: str, inputs: dict):
        self.model, self.collate, self.scene_id, self.inputs = model, collate, scene_id, inputs
        probe = _batch(model, collate, scene_id, "?", inputs)
        self.num_prefix = prefix_length(model, probe["input_ids"][0])
        self.prefix_ids = probe["input_ids"][0, :self.num_prefix]
        with torch.inference_mode():
            embeds_1LH = model.input_embeddings(probe)[:, :self.num_prefix]
            _, self.cache = _step(model, embeds_1LH, probe["position_ids"][:, :, :self.num_prefix], None,
                                  self.num_prefix)

    def _fresh_cache(self):
        if getattr(self.cache, "is_croppable", False) and hasattr(self.cache, "crop"):
            extra = self.cache.get_seq_length() - self.num_prefix
            if extra > 0:  # transformers 5 crops by a negative count: the tokens to remove
                self.cache.crop(-extra)
            return self.cache
        return copy.deepcopy(self.cache)

    @torch.inference_mode()
    def generate(self, question: str, max_new_tokens: int) -> list[int]:
        model, P = self.model, self.num_prefix
        batch = _batch(model, self.collate, self.scene_id, question, self.inputs)
        ids_L = batch["input_ids"][0]
        if not torch.equal(ids_L[:P], self.prefix_ids):  # the Collator's layout changed under us
            raise AssertionError("the question's prompt does not start with the scene's cached prefix")
        # The question's own tokens only: no scene slots after the prefix, so no scene vectors needed.
        embeds_1LH = _token_embeddings(model, batch["input_ids"][:, P:])
        cache = self._fresh_cache()
        out, cache = _step(model, embeds_1LH, batch["position_ids"][:, :, P:], cache, len(ids_L))
        next_pos = int(batch["position_ids"][0, 0, -1]) + 1
        total, generated = len(ids_L), []
        for _ in range(max_new_tokens):
            token = int(out.logits[0, -1].argmax())
            generated.append(token)
            if token == model.cfg.chat_end_id:
                break
            total += 1
            out, cache = _step(model, _token_embeddings(model, torch.tensor([[token]])), torch.full((3, 1, 1), next_pos), cache, total)
            next_pos += 1
        self.cache = cache
        return generated


def _token_embeddings(model, input_ids_1L: torch.Tensor) -> torch.Tensor:
    step = {"input_ids": input_ids_1L, "scene_mask": torch.zeros(1, 0, dtype=torch.bool),
            "scene_ident": torch.zeros(1, 0, dtype=torch.long), "scene_sem": torch.zeros(1, 0, dtype=torch.long),
            "scene_xyz": torch.zeros(1, 0, 3), "scene_feat": None}
    return model.input_embeddings(step)


def generate_reencoded(model, collate, scene_id: str, inputs: dict, question: str, max_new_tokens: int) -> list[int]:
    """The whole prompt through `Proxy3DModel.generate` (what `p3d predict` does): the reference."""
    with torch.inference_mode():
        return model.generate(_batch(model, collate, scene_id, question, inputs), max_new_tokens=max_new_tokens)[0]


def load_model(checkpoint):
    """(model, collate, mode) of an exported folder, as `p3d predict` loads it."""
    from trainer.data import Collator
    from trainer.model import Proxy3DModel

    model = Proxy3DModel.from_pretrained(checkpoint).eval()
    mode = "proxy" if 4 in model.cfg.stages_done else "fused"
    collate = Collator(model.tokenizer, model.cfg, model.category_ids, max_length=10**9, padding_side="left")
    return model, collate, mode


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
                     kv_cache: bool = True) -> list[Answer]:
    """Each question's answer, with the objects it names."""
    from trainer.data import scene_inputs
    from trainer.predict import answer_parts, clean_text

    if sample["feat"].shape[1] != model.cfg.feat_dim:
        raise ValueError(f"the scene's features have D={sample['feat'].shape[1]}, the checkpoint's projector reads "
                         f"D={model.cfg.feat_dim}: features of another encoder than it was trained on")
    inputs = scene_inputs(sample, mode, model.cfg.num_obj_tokens)
    if not len(inputs["xyz"]):
        raise ValueError("the checkpoint (stages 1-3) reads the simplified scene, one token per object matched "
                         "to ground truth, and this scene has none: ask a stage-4 checkpoint")
    scene_id = sample["scene_id"]
    prefix = PrefixCache(model, collate, scene_id, inputs) if kv_cache else None

    def run(question: str) -> str:
        ids = (prefix.generate(question, max_new_tokens) if prefix is not None
               else generate_reencoded(model, collate, scene_id, inputs, question, max_new_tokens))
        return clean_text(model.tokenizer.decode(ids, skip_special_tokens=False))

    names: dict[str, str] = {}  # identifier -> the model's name for it, asked once per scene

    def ask_name(identifier: str) -> str:
        if identifier not in names:
            names[identifier] = run(NAMING_QUESTION.format(identifier))
        return names[identifier]

    answers = []
    for question in questions:
        text, objects_text = answer_parts(run(question), "text")
        answers.append(Answer(question, text, named_objects(objects_text, sample["segments"],
                                                            model.cfg.num_obj_tokens, ask_name)))
    return answers
