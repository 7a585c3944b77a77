"""Qwen2.5-VL vision-tower encoder, on a tiny random-weight checkpoint saved and loaded like a real one."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.models.qwen_encoder import QwenVisionEncoder
from pipeline.toy.models import build_toy_qwen


@pytest.fixture(scope="module")
def toy_qwen(tmp_path_factory) -> Path:
    return build_toy_qwen(tmp_path_factory.mktemp("qwen") / "qwen2_5_vl")


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, size=(3, 56, 84, 3), dtype=np.uint8)


def test_matches_full_model_through_official_processor(toy_qwen, frames):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    encoder = QwenVisionEncoder(str(toy_qwen))
    out = encoder.encode(frames)
    assert out.feat_FhwD.shape == (3, 2, 3, 128)  # 56x84 px -> 2x3 tokens of the LM width

    processor = Qwen2VLImageProcessorPil.from_pretrained(toy_qwen)
    inputs = processor(images=list(frames), return_tensors="pt")
    mine, grid = encoder.pixel_patches(frames, video=False)
    np.testing.assert_array_equal(grid.numpy(), inputs["image_grid_thw"].numpy())
    torch.testing.assert_close(mine, inputs["pixel_values"], atol=1e-5, rtol=0)

    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(toy_qwen).eval()
    with torch.no_grad():
        ref = full.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    ref = torch.cat(list(ref)) if isinstance(ref, (list, tuple)) else ref
    np.testing.assert_allclose(out.feat_FhwD, ref.numpy().reshape(out.feat_FhwD.shape), atol=1e-5)


def test_loads_without_language_model_shards(toy_qwen, frames, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    sharded = tmp_path / "sharded"
    Qwen2_5_VLForConditionalGeneration.from_pretrained(toy_qwen).save_pretrained(sharded, max_shard_size="100KB")
    shutil.copy(toy_qwen / "preprocessor_config.json", sharded)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    vision_shards = {f for k, f in index.items() if "visual." in k}
    lm_only = set(index.values()) - vision_shards
    assert lm_only, "the test needs shards that hold only language-model tensors"
    for name in lm_only:
        (sharded / name).unlink()  # a loader that touches the LM would fail now

    encoder = QwenVisionEncoder(str(sharded))
    assert not any("layers" in n or "lm_head" in n or "embed_tokens" in n for n, _ in encoder.net.named_parameters())
    ref = QwenVisionEncoder(str(toy_qwen)).encode(frames).feat_FhwD
    np.testing.assert_allclose(encoder.encode(frames).feat_FhwD, ref, atol=1e-6)


def test_premerge_map_is_the_merger_input_in_image_order(toy_qwen, frames):
    encoder = QwenVisionEncoder(str(toy_qwen), keep_premerge=True)
    out = encoder.encode(frames)
    num_frames, h, w, _ = out.feat_FhwD.shape
    premerge = torch.from_numpy(out.premerge_FHpWpC)
    assert premerge.shape[:3] == (num_frames, 2 * h, 2 * w)
    # Regroup 2x2 pixel-order blocks and merge them: must give the stored tokens back.
    blocks = premerge.reshape(num_frames, h, 2, w, 2, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1, premerge.shape[-1])
    with torch.no_grad():
        merged = encoder.net.merger(blocks).reshape(out.feat_FhwD.shape)
    np.testing.assert_allclose(merged.numpy(), out.feat_FhwD, atol=1e-5)


def test_video_mode_pairs_frames(toy_qwen, frames):
    per_frame = QwenVisionEncoder(str(toy_qwen))
    video = QwenVisionEncoder(str(toy_qwen), video_mode=True)
    # A still image is a temporal patch of one repeated frame, so a clip [a, a] encodes like image a.
    same = np.stack([frames[0], frames[0]])
    np.testing.assert_allclose(video.encode(same).feat_FhwD[0], per_frame.encode(frames[:1]).feat_FhwD[0], atol=1e-5)

    clip = video.encode(frames).feat_FhwD  # odd F: the last frame is padded by repetition
    assert clip.shape == (3, 2, 3, 128)
    np.testing.assert_array_equal(clip[0], clip[1])
    changed = frames.copy()
    changed[1] = 255 - changed[1]
    assert not np.allclose(video.encode(changed).feat_FhwD[0], clip[0])  # frames mix in video mode
    np.testing.assert_allclose(per_frame.encode(changed).feat_FhwD[0], per_frame.encode(frames).feat_FhwD[0])


def test_rejects_bad_frames(toy_qwen):
    encoder = QwenVisionEncoder(str(toy_qwen))
    with pytest.raises(ValueError, match="multiple of 28"):
        encoder.encode(np.zeros((1, 50, 84, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode(np.zeros((1, 56, 84, 3), np.float32))
