"""The real checkpoints' architectures (pipeline/models/real_configs.py): the project's copies of their
config values equal the files in ../shared/reference/configs, each architecture built on the meta
device has the parameter count its model card states (and, for Qwen2.5-VL, the count a hand formula
gives from the config), SAM 2.1's original yaml maps onto transformers' Sam2Config, and `random:` ids
build real-width models that load through the same loaders as the real checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from pipeline.models import real_configs as rc
from tests.conftest import SHARED

CONFIGS = SHARED / "reference" / "configs"


def _reference(*parts: str):
    path = CONFIGS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference config {path} not found")
    return path


# ------------------------------------------------------------------ the copies match the files
@pytest.mark.parametrize("name,folder", [("qwen2_5_vl_7b", "Qwen__Qwen2.5-VL-7B-Instruct"),
                                         ("qwen2_5_vl_3b", "Qwen__Qwen2.5-VL-3B-Instruct")])
def test_qwen_config_copies_equal_the_checkpoint_files(name, folder):
    config = json.loads(_reference(folder, "config.json").read_text())
    config.pop("transformers_version")
    assert rc.QWEN2_5_VL[name] == config
    pre = json.loads(_reference(folder, "preprocessor_config.json").read_text())
    assert {k: pre[k] for k in rc.QWEN2_5_VL_PREPROCESSOR} == rc.QWEN2_5_VL_PREPROCESSOR


def test_vggt_and_sam2_values_equal_the_checkpoint_files():
    assert json.loads(_reference("facebook__VGGT-1B", "config.json").read_text()) == rc.VGGT_1B
    model = yaml.safe_load(_reference("facebook__sam2.1-hiera-large", "sam2.1_hiera_l.yaml").read_text())["model"]
    encoder = model["image_encoder"]
    ours = rc.SAM2_1_HIERA_LARGE
    assert {k: encoder["trunk"][k] for k in ours["trunk"]} == ours["trunk"]
    assert {k: encoder["neck"][k] for k in ours["neck"]} == ours["neck"]
    memory = model["memory_attention"]
    assert ours["memory_attention"] == {
        "d_model": memory["d_model"], "num_layers": memory["num_layers"],
        "dim_feedforward": memory["layer"]["dim_feedforward"],
        "num_heads": memory["layer"]["self_attention"]["num_heads"],
        "feat_sizes": memory["layer"]["self_attention"]["feat_sizes"]}
    fuser = model["memory_encoder"]["fuser"]
    assert ours["memory_encoder"] == {"out_dim": model["memory_encoder"]["out_dim"],
                                      "fuser_num_layers": fuser["num_layers"],
                                      "fuser_kernel_size": fuser["layer"]["kernel_size"]}
    assert (ours["image_size"], ours["num_maskmem"]) == (model["image_size"], model["num_maskmem"])


# ------------------------------------------------------------------ meta-device parameter counts
def _qwen_params_by_hand(c: dict) -> tuple[int, int]:
    """(total, vision tower) from the config alone: Qwen2 decoder layers (q/k/v with bias, o without,
    SwiGLU MLP, two RMSNorms) and the Qwen2.5 ViT (conv patch embed without bias, qkv and proj with
    bias, SwiGLU MLP with biases, RMSNorms, a 2x2 patch merger of two linears)."""
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = c["num_key_value_heads"] * h // c["num_attention_heads"]
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h
    text = c["vocab_size"] * h * (1 if c["tie_word_embeddings"] else 2) + layers * layer + h
    v = c["vision_config"]
    w, vi, out = v["hidden_size"], v["intermediate_size"], v["out_hidden_size"]
    patch = 3 * v["temporal_patch_size"] * v["patch_size"] ** 2 * w
    block = 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + 2 * (w * vi + vi) + (vi * w + w)
    merged = w * v["spatial_merge_size"] ** 2
    merger = w + (merged * merged + merged) + (merged * out + out)
    vision = patch + v["depth"] * block + merger
    return text + vision, vision


@pytest.mark.parametrize("name,card_billions,vision_billions", [
    # Hub model cards, "Model size": Qwen/Qwen2.5-VL-7B-Instruct 8.29B, Qwen/Qwen2.5-VL-3B-Instruct 3.75B.
    # The vision tower is ~0.67B in both (the same ViT; only the merger's output width differs).
    ("qwen2_5_vl_7b", 8.29, 0.67),
    ("qwen2_5_vl_3b", 3.75, 0.67),
])
def test_qwen_on_meta_matches_the_card_and_the_formula(name, card_billions, vision_billions):
    model = rc.build_on_meta(name)
    total, vision = rc.num_params(model), rc.num_params(model.model.visual)
    assert (total, vision) == _qwen_params_by_hand(rc.QWEN2_5_VL[name])
    assert round(total / 1e9, 2) == card_billions
    assert abs(vision / 1e9 - vision_billions) < 0.01
    text = rc.QWEN2_5_VL[name]
    assert model.lm_head.weight.shape == (text["vocab_size"], text["hidden_size"])
    assert model.model.visual.merger.mlp[-1].weight.shape == (text["hidden_size"], 4 * 1280)
    assert all(p.device.type == "meta" for p in model.parameters())


def test_vggt_on_meta_matches_the_card():
    # ../shared/reference/vggt/ARCHITECTURE.md (state dict of upstream VGGT() at 44b3afbd): 1,256,537,516
    # parameters (the hub card's 1.26B), of which the track head, never loaded by p3d, holds 65,941,396.
    model = rc.build_on_meta("vggt_1b")
    assert rc.num_params(model) == 1_256_537_516 - 65_941_396
    assert round((rc.num_params(model) + 65_941_396) / 1e9, 2) == 1.26
    agg = model.aggregator
    assert agg.patch_embed.pos_embed.shape == (1, 1 + (518 // 14) ** 2, 1024)  # DINOv2-L grid at 518 px
    assert len(agg.frame_blocks) == len(agg.global_blocks) == 24


def test_sam2_yaml_maps_to_transformers_config():
    cfg = rc.sam2_config()
    bb = cfg.vision_config.backbone_config
    assert (bb.hidden_size, bb.num_attention_heads) == (144, 2)
    assert bb.blocks_per_stage == [2, 6, 36, 4] and bb.global_attention_blocks == [23, 33, 43]
    assert bb.embed_dim_per_stage == [144, 288, 576, 1152] and bb.num_attention_heads_per_stage == [2, 4, 8, 16]
    assert bb.window_size_per_stage == [8, 4, 16, 8] and bb.window_positional_embedding_background_size == [7, 7]
    assert cfg.vision_config.backbone_feature_sizes == [[256, 256], [128, 128], [64, 64]]
    assert cfg.prompt_encoder_config.image_size == 1024 and cfg.vision_config.fpn_hidden_size == 256

    from transformers import Sam2VideoModel

    image = rc.build_on_meta("sam2.1_hiera_large")
    with torch.device("meta"):
        video = Sam2VideoModel(rc.sam2_config(video=True))
    # facebookresearch/sam2 README, model table: sam2.1_hiera_large 224.4M (the video model).
    assert round(rc.num_params(video) / 1e6, 1) == 224.4
    # The image model p3d runs is the video model without its memory: same names, same shapes.
    video_shapes = {k: tuple(v.shape) for k, v in video.state_dict().items()}
    image_shapes = {k: tuple(v.shape) for k, v in image.state_dict().items()}
    assert image_shapes.items() <= video_shapes.items()
    assert image_shapes["vision_encoder.backbone.patch_embed.projection.weight"] == (144, 3, 7, 7)
    last = max(int(k.split(".")[3]) for k in image_shapes if k.startswith("vision_encoder.backbone.blocks."))
    assert last == 2 + 6 + 36 + 4 - 1
    assert image_shapes[f"vision_encoder.backbone.blocks.{last}.attn.qkv.weight"] == (3 * 1152, 1152)


def test_sam2_reduced_size_and_depth():
    cfg = rc.sam2_config(image_size=256, depth=2)
    bb = cfg.vision_config.backbone_config
    assert bb.blocks_per_stage == [2, 2, 2, 2] and bb.global_attention_blocks == [5]
    assert bb.embed_dim_per_stage == [144, 288, 576, 1152]  # the real widths
    assert cfg.vision_config.backbone_feature_sizes == [[64, 64], [32, 32], [16, 16]]
    with pytest.raises(ValueError, match="multiple of 128"):
        rc.sam2_config(image_size=200)


def test_reduced_qwen_keeps_the_widths():
    model = rc.build_on_meta("qwen2_5_vl_7b", layers=2, vision_depth=3, vocab=4096)
    assert len(model.model.language_model.layers) == 2 and len(model.model.visual.blocks) == 3
    assert model.config.vision_config.fullatt_block_indexes == [2]
    assert model.model.language_model.layers[0].mlp.gate_proj.weight.shape == (18944, 3584)
    assert model.lm_head.weight.shape == (4096, 3584)


@pytest.mark.parametrize("bad,match", [
    ("random:qwen3", "unknown random model"),
    ("random:qwen2_5_vl_7b@depth=2", "bad reduction"),
    ("random:vggt_1b@depth=0", "bad reduction"),
    ("random:sam2.1_hiera_large@image_size", "bad reduction"),
])
def test_bad_random_ids_are_one_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        rc.parse_random_id(bad)


def test_a_random_id_of_another_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a vggt model; this backend loads qwen2_5_vl"):
        rc.resolve_random("random:vggt_1b@depth=1", tmp_path, family="qwen2_5_vl")
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------ through the real loaders
@pytest.mark.slow
def test_random_ids_load_through_the_real_loaders(tmp_path):
    from pipeline.models.qwen_encoder import load_encoder
    from pipeline.models.sam2_segmenter import load_segmenter
    from pipeline.models.vggt_scaled import load_geometry
    from schemas.config_features import EncoderConfig, GeometryConfig, SegmenterConfig

    qwen_id = "random:qwen2_5_vl_3b@layers=1,vision_depth=1,vocab=4096"
    encoder = load_encoder(EncoderConfig(model=qwen_id), tmp_path)
    assert encoder.dim == 2048 and encoder.ref.model == qwen_id and encoder.ref.trained is False
    assert encoder.net.blocks[0].mlp.gate_proj.weight.shape == (3420, 1280)
    frames = np.random.default_rng(0).integers(0, 255, size=(2, 56, 84, 3), dtype=np.uint8)
    out = encoder.encode(frames)
    assert out.feat_FhwD.shape == (2, 2, 3, 2048) and np.isfinite(out.feat_FhwD).all()
    # Built once: the second load finds the folder (its marker names the architecture).
    marker = json.loads((rc.random_model_dir(qwen_id, tmp_path) / rc.RANDOM_MARKER).read_text())
    assert marker["architecture"] == "Qwen/Qwen2.5-VL-3B-Instruct" and marker["trained"] is False
    from trainer.model import Proxy3DModel

    model = Proxy3DModel.build(str(rc.random_model_dir(qwen_id, tmp_path)), feat_dim=2048, num_obj_tokens=4,
                               categories=["chair"], height_bins=8, height_range=(0.0, 3.0), fourier_dim=8)
    assert model.cfg.hidden_size == 2048 and model.lm.config.text_config.intermediate_size == 11008

    sam_id = "random:sam2.1_hiera_large@image_size=128,depth=2"
    segmenter = load_segmenter(SegmenterConfig(kind="sam2", model=sam_id, points_per_side=2,
                                               pred_iou_thresh=0.0, stability_thresh=0.0, min_mask_area=0.0),
                               tmp_path)
    assert segmenter.ref.trained is False and segmenter.input_size == 128
    assert segmenter.net.config.vision_config.backbone_config.embed_dim_per_stage == [144, 288, 576, 1152]
    labels = segmenter.frame_labels(frames[:1])
    assert labels.shape == (1, 56, 84) and labels.dtype == np.int32

    vggt_id = "random:vggt_1b@depth=1,dino_depth=1,camera_depth=1"
    geometry = load_geometry(GeometryConfig(kind="vggt", model=vggt_id), tmp_path)
    assert geometry.ref.trained is False and geometry.ref.model == vggt_id
    assert geometry.vggt.net.cfg.aggregator.embed_dim == 1024
    assert geometry.vggt.net.aggregator.patch_embed.pos_embed.shape == (1, 1 + 37 * 37, 1024)
