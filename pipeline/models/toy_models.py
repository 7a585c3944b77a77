"""Tiny random-weight models for the toy workflow, built and saved with `save_pretrained`.

No weights can be downloaded in the toy setting, so a workflow may name `toy:qwen2_5_vl` instead of a
hub id. The first use builds a tiny Qwen2.5-VL (vision tower + language model, random weights) and a
small byte-level BPE tokenizer trained on the given texts, and saves both under
`<data root>/models/qwen2_5_vl`. Everything afterwards loads that folder through the same
`from_pretrained` code that loads a real checkpoint. The folder's `p3d_toy.json` marks it untrained.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from schemas.io import atomic_dir
from schemas.layout import CATEGORIES_FILE, data_records, models_dir

TOY_PREFIX = "toy:"
TOY_MARKER = "p3d_toy.json"
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2.5-VL's text RoPE splits head_dim/2 frequencies into (temporal, height, width) sections.
TOY_TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096)
TOY_MROPE_SECTION = [4, 6, 6]  # sums to head_dim/2 = 128/4/2
TOY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[1])
# Qwen2.5-VL-Instruct's chat template reduced to what p3d sends: the same turns and vision markers
# (text and image parts; no video, no "Picture N:" labels), so toy prompts run through the same
# `apply_chat_template` code (trainer/chat.py), but without Qwen's default system prompt when none is
# given: for a random-init model it is a constant prefix that teaches nothing and would add 11 tokens
# to every toy example (stage 1's are ~25 tokens long).
TOY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_BASE_TEXT = [
    "system\nuser\nassistant\n",  # the chat template's role names, each one token
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 0.5 1.25 metres meters",
    "What is this object? How many are there? Where is it? left right front behind above below yes no",
]


def is_toy_id(model: str) -> bool:
    return model.startswith(TOY_PREFIX)


def toy_model_dir(model: str, data_root: str | Path) -> Path:
    return models_dir(data_root) / model[len(TOY_PREFIX):]


def train_toy_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer with Qwen's special tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(_BASE_TEXT) + list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, model_max_length=TOY_TEXT["max_position_embeddings"],
                                   chat_template=TOY_CHAT_TEMPLATE)


def build_toy_qwen(out_dir: str | Path, texts: Iterable[str] = (), seed: int = 0) -> Path:
    """Build, save and return the folder of a tiny random-weight Qwen2.5-VL with its tokenizer."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    out_dir = Path(out_dir)
    tokenizer = train_toy_tokenizer(texts)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text_cfg = dict(TOY_TEXT, vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                    eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "mrope_section": TOY_MROPE_SECTION})
    config = Qwen2_5_VLConfig(
        text_config=text_cfg,
        vision_config=dict(TOY_VISION, out_hidden_size=TOY_TEXT["hidden_size"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=1024 * 28 * 28)

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        (tmp / TOY_MARKER).write_text(json.dumps({"trained": False, "seed": seed,
                                                   "note": "random-weight toy model built by p3d"}))
    return out_dir


def _toy_texts(data_root: Path) -> list[str]:
    """Annotation text of the toy world (questions, answers, categories), when it exists."""
    texts: list[str] = []
    ann = data_records(data_root)
    if ann.exists():
        with ann.open() as f:
            for line in f:
                rec = json.loads(line)
                texts.append(rec.get("question", ""))
                texts.extend(rec.get("answers", []))
    cats = data_root / CATEGORIES_FILE
    if cats.exists():
        texts.extend(json.loads(cats.read_text()))
    return texts


def resolve_model(model: str, data_root: str | Path) -> str:
    """A hub id or folder stays as it is; `toy:<name>` and `random:<name>` (real architectures,
    pipeline/models/real_configs.py) become their folder, built on first use."""
    from pipeline.models.real_configs import is_random_id, resolve_random

    if is_random_id(model):
        return resolve_random(model, data_root, family="qwen2_5_vl")
    if not is_toy_id(model):
        return model
    name = model[len(TOY_PREFIX):]
    if name != "qwen2_5_vl":
        raise ValueError(f"unknown toy model {model!r}; known: toy:qwen2_5_vl")
    from schemas.io import build_once

    folder = build_once(toy_model_dir(model, data_root), TOY_MARKER,
                        lambda out: build_toy_qwen(out, _toy_texts(Path(data_root))))
    return str(folder)


def is_untrained_toy(path: str | Path) -> bool:
    return (Path(path) / TOY_MARKER).exists()
