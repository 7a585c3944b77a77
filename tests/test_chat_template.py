"""Prompts go through the checkpoint's own chat template (trainer/chat.py).

The layout is checked with the real Qwen2.5-VL-7B-Instruct tokenizer and chat template, built offline
from ../shared/reference/configs (vocab.json, merges.txt, tokenizer_config.json: byte-identical to
the hub, see SOURCES.md there); the expected sequence is written from the template's documented
layout, with Qwen's special token ids spelled out.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from pipeline.models.tokenizer import PLAIN_CHAT_TEMPLATE, train_bpe_tokenizer
from pipeline.toy.models import build_toy_qwen
from tests.conftest import SHARED
from trainer.chat import IGNORE, chat_layout
from trainer.shard_reader import Collator
from trainer.model import P3DModelConfig, Proxy3DModel
from trainer.predict import stop_ids, until_stop
from trainer.examples import Example

QWEN_DIR = SHARED / "reference" / "configs" / "Qwen__Qwen2.5-VL-7B-Instruct"
QWEN_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
# Qwen2.5's added tokens (tokenizer_config.json, added_tokens_decoder).
IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD = 151644, 151645, 151652, 151653, 151655
ENDOFTEXT = 151643
HEIGHT_BINS = 8


@pytest.fixture(scope="module")
def qwen_tokenizer(tmp_path_factory):
    if not all((QWEN_DIR / f).exists() for f in QWEN_FILES):
        pytest.skip(f"Qwen2.5-VL tokenizer files not found in {QWEN_DIR}")
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("qwen_tok")  # only the tokenizer's files: no config, no weights
    for name in QWEN_FILES:
        shutil.copy(QWEN_DIR / name, folder / name)
    return AutoTokenizer.from_pretrained(folder)


def _collator(tokenizer, max_length: int = 4096) -> Collator:
    ids = tokenizer.convert_tokens_to_ids
    cfg = P3DModelConfig(
        feat_dim=4, hidden_size=4, num_obj_tokens=1, obj_token_ids=[0], categories=[], height_bins=HEIGHT_BINS,
        height_range=(0.0, 4.0), fourier_dim=2, scene_token_id=ids("<|image_pad|>"),
        vision_start_id=ids("<|vision_start|>"), vision_end_id=ids("<|vision_end|>"),
        chat_start_id=ids("<|im_start|>"), chat_end_id=ids("<|im_end|>"), pad_id=tokenizer.pad_token_id)
    return Collator(tokenizer, cfg, category_ids=lambda names: [0] * len(names), max_length=max_length)


def _text(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_real_qwen_layout_system_user_assistant_and_labels_on_the_answer(qwen_tokenizer):
    tok, num_scene = qwen_tokenizer, 5
    question, answer = "How far apart are the chair and the table in meters?", "1.5"
    z_bin_K = torch.tensor([0, 3, 3, 7, 1])
    ids, labels, pos_3L = _collator(tok).encode(Example("s0", "distance", question, answer), num_scene, z_bin_K)

    # <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n
    # <|vision_start|><|image_pad|>*K<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n
    before = [IM_START, *_text(tok, "system\nYou are a helpful assistant."), IM_END, *_text(tok, "\n"),
              IM_START, *_text(tok, "user\n"), VISION_START]
    after = [VISION_END, *_text(tok, question), IM_END, *_text(tok, "\n"), IM_START, *_text(tok, "assistant\n")]
    response = [*_text(tok, answer), IM_END]
    # The template's newline after <|im_end|> is not fed: it would follow the last label.
    expected = [*before, *[IMAGE_PAD] * num_scene, *after, *response]
    assert ids == expected
    assert _text(tok, "\n") == [198] and _text(tok, "assistant\n") == [77091, 198]  # Qwen's own ids
    # The loss is on the answer and the end-of-turn token the model must emit to stop; everything
    # before it is masked.
    assert labels == [IGNORE] * (len(expected) - len(response)) + response
    # Rotary ids: text before the scene counts 0..s-1, the scene starts at s = len(before).
    s = len(before)
    assert torch.equal(pos_3L[:, :s], torch.arange(s).expand(3, -1))
    assert torch.equal(pos_3L[1, s:s + num_scene], s + z_bin_K) and pos_3L.shape[1] == len(expected)


def test_generation_prompt_ends_with_the_assistant_turn(qwen_tokenizer):
    tok = qwen_tokenizer
    ids, labels, _ = _collator(tok).encode(Example("s0", "qa", "What is on the table?", ""), 3,
                                           torch.zeros(3, dtype=torch.long), with_answer=False)
    assert ids[-3:] == [IM_START, 77091, 198]  # <|im_start|>assistant\n: the model answers next
    assert ids[:3] == [IM_START, 8948, 198]  # <|im_start|>system\n (the template's default system turn)
    assert ids.count(IMAGE_PAD) == 3 and set(labels) == {IGNORE}
    assert tok.eos_token_id == IM_END and tok.pad_token_id == ENDOFTEXT  # generation stops at <|im_end|>


def test_toy_template_renders_the_real_layout_without_the_default_system_turn(qwen_tokenizer):
    toy = train_bpe_tokenizer(["What is on the table?", "a lamp"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is on the table?"}]},
                {"role": "assistant", "content": "a lamp"}]
    real = qwen_tokenizer.apply_chat_template(messages, tokenize=False)
    system_turn = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert real.startswith(system_turn)
    assert toy.apply_chat_template(messages, tokenize=False) == real[len(system_turn):]
    # Given a system message, both render it the same way.
    with_system = [{"role": "system", "content": "Answer briefly."}, *messages]
    assert (toy.apply_chat_template(with_system, tokenize=False)
            == qwen_tokenizer.apply_chat_template(with_system, tokenize=False))


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    folder = build_toy_qwen(tmp_path_factory.mktemp("toy") / "qwen", ["What is a chair?"])
    return Proxy3DModel.build(str(folder), feat_dim=128, num_obj_tokens=4, categories=["chair"], height_bins=8,
                              height_range=(0.0, 4.0), fourier_dim=8)


def test_toy_model_answer_layout_and_truncation(toy_model):
    model = toy_model
    tok, c = model.tokenizer, model.cfg
    ex = Example("s0", "object_name", "What is <OBJ001>?", "chair")
    ids, labels, _ = Collator(tok, c, model.category_ids).encode(ex, 2, torch.zeros(2, dtype=torch.long))
    expected = [c.chat_start_id, *_text(tok, "user\n"), c.vision_start_id, c.scene_token_id, c.scene_token_id,
                c.vision_end_id, *_text(tok, "What is <OBJ001>?"), c.chat_end_id, *_text(tok, "\n"),
                c.chat_start_id, *_text(tok, "assistant\n"), *_text(tok, "chair"), c.chat_end_id]
    assert ids == expected
    assert _text(tok, "user\n")[0] == tok.convert_tokens_to_ids("user")  # role names are single toy tokens
    answer = [*_text(tok, "chair"), c.chat_end_id]
    assert labels == [IGNORE] * (len(expected) - len(answer)) + answer
    # A long answer is cut to max_length; the prompt never is.
    cut = Collator(tok, c, model.category_ids, max_length=len(expected) - 1)
    ids_cut, labels_cut, _ = cut.encode(ex, 2, torch.zeros(2, dtype=torch.long))
    assert ids_cut == expected[:-1] and labels_cut == labels[:-1]
    with pytest.raises(ValueError, match="exceed max_length"):
        Collator(tok, c, model.category_ids, max_length=10).encode(ex, 2, torch.zeros(2, dtype=torch.long))


def test_a_tokenizer_without_a_chat_template_is_refused():
    tok = train_bpe_tokenizer([])
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        chat_layout(tok, "What is it?", "a chair", tok.convert_tokens_to_ids("<|image_pad|>"),
                    tok.convert_tokens_to_ids("<|im_end|>"))


def test_a_toy_folder_keeps_its_template(tmp_path):
    """The toy builder saves its tokenizer's template: loading the folder needs nothing else."""
    from transformers import AutoTokenizer

    folder = build_toy_qwen(tmp_path / "qwen", ["What is a chair?"])
    assert AutoTokenizer.from_pretrained(folder).chat_template == PLAIN_CHAT_TEMPLATE


def test_an_answer_ends_at_the_first_stop_token(toy_model, qwen_tokenizer):
    """p3d predict keeps an answer up to <|im_end|> or any eos of the checkpoint's generation config."""
    from transformers import GenerationConfig

    assert stop_ids(toy_model) == {toy_model.cfg.chat_end_id}
    real = GenerationConfig.from_pretrained(QWEN_DIR)  # Qwen2.5-VL-7B-Instruct's: eos [151645, 151643]
    saved = toy_model.lm.generation_config
    toy_model.lm.generation_config = real
    try:
        stops = stop_ids(toy_model)
    finally:
        toy_model.lm.generation_config = saved
    assert stops == {toy_model.cfg.chat_end_id, IM_END, ENDOFTEXT}
    assert until_stop([7, 8, ENDOFTEXT, 9, IM_END], stops) == [7, 8]
    assert until_stop([7, 8], stops) == [7, 8] and until_stop([IM_END, 3], stops) == []
