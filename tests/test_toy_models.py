"""The toy Qwen2.5-VL is a real checkpoint folder: it loads through from_pretrained and runs."""

import torch

from pipeline.models.toy_models import SPECIAL_TOKENS, build_toy_qwen, is_untrained_toy, resolve_model


def test_build_and_load_through_user_path(tmp_path):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    texts = ["How many chairs are in the room?", "3", "the red sofa near the wall"]
    folder = build_toy_qwen(tmp_path / "qwen", texts)
    assert is_untrained_toy(folder)
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
