"""The toy Qwen2.5-VL is a real checkpoint folder: it loads through from_pretrained and runs."""

import pytest
import torch

from pipeline.models.resolve import is_untrained, resolve_model
from pipeline.models.tokenizer import SPECIAL_TOKENS
from pipeline.toy.models import build_toy_qwen


def test_build_and_load_through_user_path(tmp_path):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    texts = ["How many chairs are in the room?", "3", "the red sofa near the wall"]
    folder = build_toy_qwen(tmp_path / "qwen", texts)
    assert is_untrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    for t in SPECIAL_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    # Byte-level: any text round-trips, including unseen characters.
    s = "How many sofas? ünïcode 42"
    assert tok.decode(tok(s)["input_ids"]) == s
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).eval()
    assert model.config.text_config.vocab_size == len(tok)
    ids = torch.tensor([tok("How many chairs")["input_ids"]])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_resolve_keeps_real_ids_and_builds_toy_once(tmp_path):
    assert resolve_model("Qwen/Qwen2.5-VL-7B-Instruct", tmp_path) == "Qwen/Qwen2.5-VL-7B-Instruct"
    folder = resolve_model("toy:qwen2_5_vl", tmp_path)
    stamp = (tmp_path / "models/qwen2_5_vl/config.json").stat().st_mtime_ns
    assert resolve_model("toy:qwen2_5_vl", tmp_path) == folder
    assert (tmp_path / "models/qwen2_5_vl/config.json").stat().st_mtime_ns == stamp


def test_resolve_routes_each_id_scheme_and_refuses_unknown_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model id scheme 'nope'; known: random, toy"):
        resolve_model("nope:qwen2_5_vl", tmp_path)
    with pytest.raises(ValueError, match=r"unknown toy model 'toy:gpt'; known: toy:qwen2_5_vl"):
        resolve_model("toy:gpt", tmp_path)
    with pytest.raises(ValueError, match="'toy:sam2' is a sam2 model; this backend loads qwen2_5_vl models"):
        resolve_model("toy:sam2", tmp_path)
    folder = tmp_path / "my:model"  # an existing folder is taken as it is, colon or not
    folder.mkdir()
    assert resolve_model(str(folder), tmp_path) == str(folder)
