"""The real checkpoints' architectures, offline: their config values and `random:` model ids.

No weights can be downloaded, but random weights cost exactly the compute and memory of the real
ones. This module keeps the few configuration values of each real checkpoint (copied from the files
listed in ../shared/reference/configs/SOURCES.md; tests/test_real_configs.py checks the copies
against those files) and builds each architecture from them with random weights:

    random:qwen2_5_vl_7b        Qwen/Qwen2.5-VL-7B-Instruct (vision tower + language model)
    random:qwen2_5_vl_3b        Qwen/Qwen2.5-VL-3B-Instruct
    random:vggt_1b              facebook/VGGT-1B (our implementation, pipeline/models/vggt)
    random:sam2.1_hiera_large   facebook/sam2.1-hiera-large (original yaml mapped to `Sam2Config`)

An id may shrink what the CPU cannot afford, keeping the real widths: `@` then `key=value` pairs,
e.g. `random:qwen2_5_vl_3b@layers=2,vision_depth=2,vocab=8192`, `random:vggt_1b@depth=2,dino_depth=2`,
`random:sam2.1_hiera_large@image_size=256,depth=2` (REDUCTIONS lists the keys). The model is built once,
saved under `<data root>/models/random/<id>` with `save_pretrained` (VGGT: `save_vggt`) and marked
untrained, and from then on loads through the same code as the real checkpoint. The Qwen tokenizer
is the small BPE tokenizer of tokenizer.py (the real vocab files are not shipped): the config keeps the real vocabulary
size, and its special-token ids are rewritten to that tokenizer's, which changes no shape.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pipeline.models.resolve import UNTRAINED_MARKER
from schemas.layout import models_dir

RANDOM_PREFIX = "random:"
RANDOM_MARKER = UNTRAINED_MARKER  # every loader reads it as "untrained"

HUB_IDS = {
    "qwen2_5_vl_7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2_5_vl_3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "vggt_1b": "facebook/VGGT-1B",
    "sam2.1_hiera_large": "facebook/sam2.1-hiera-large",
}
FAMILIES = {"qwen2_5_vl_7b": "qwen2_5_vl", "qwen2_5_vl_3b": "qwen2_5_vl", "vggt_1b": "vggt",
            "sam2.1_hiera_large": "sam2"}
REDUCTIONS = {"qwen2_5_vl": ("layers", "vision_depth", "vocab"), "vggt": ("depth", "dino_depth", "camera_depth"),
              "sam2": ("image_size", "depth")}

# Parameter counts the model cards state (hub "Model size", rounded there as here), with what they cover.
CARD_PARAMS = {
    "qwen2_5_vl_7b": (8.29e9, "hub card: 8.29B, language model + vision tower"),
    "qwen2_5_vl_3b": (3.75e9, "hub card: 3.75B, language model + vision tower"),
    "vggt_1b": (1.26e9, "hub card: 1.26B, incl. the track head p3d does not load"),
    "sam2.1_hiera_large": (224.4e6, "facebookresearch/sam2 README: 224.4M, incl. the video memory modules"),
}

_QWEN_VISION = {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
                "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                "temporal_patch_size": 2}
_QWEN_COMMON = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
                "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
                "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
                "video_token_id": 151656, "hidden_act": "silu", "initializer_range": 0.02,
                "max_position_embeddings": 128000, "model_type": "qwen2_5_vl", "rms_norm_eps": 1e-06,
                "rope_theta": 1000000.0, "sliding_window": 32768, "torch_dtype": "bfloat16",
                "use_cache": True, "use_sliding_window": False,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
# config.json of each checkpoint (hub revisions cc594898 and 66285546), less transformers_version.
QWEN2_5_VL = {
    "qwen2_5_vl_7b": {**_QWEN_COMMON, "hidden_size": 3584, "intermediate_size": 18944, "max_window_layers": 28,
                      "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
                      "tie_word_embeddings": False, "vocab_size": 152064,
                      "vision_config": {**_QWEN_VISION, "out_hidden_size": 3584}},
    "qwen2_5_vl_3b": {**_QWEN_COMMON, "hidden_size": 2048, "intermediate_size": 11008, "max_window_layers": 70,
                      "num_attention_heads": 16, "num_hidden_layers": 36, "num_key_value_heads": 2,
                      "tie_word_embeddings": True, "vocab_size": 151936,
                      "vision_config": {**_QWEN_VISION, "out_hidden_size": 2048}},
}
# preprocessor_config.json (the same file in both checkpoints).
QWEN2_5_VL_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                           "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                           "image_std": [0.26862954, 0.26130258, 0.27577711]}
# facebook/VGGT-1B config.json: the VGGT() constructor arguments it sets (the rest are defaults).
VGGT_1B = {"embed_dim": 1024, "img_size": 518, "patch_size": 14}
# sam2.1_hiera_l.yaml, the values that shape the network (facebookresearch/sam2 at 2b90b9f5).
SAM2_1_HIERA_LARGE = {
    "trunk": {"embed_dim": 144, "num_heads": 2, "stages": [2, 6, 36, 4], "global_att_blocks": [23, 33, 43],
              "window_pos_embed_bkg_spatial_size": [7, 7], "window_spec": [8, 4, 16, 8]},
    "neck": {"d_model": 256, "backbone_channel_list": [1152, 576, 288, 144], "fpn_top_down_levels": [2, 3],
             "fpn_interp_model": "nearest"},
    "memory_attention": {"d_model": 256, "num_layers": 4, "dim_feedforward": 2048, "num_heads": 1,
                         "feat_sizes": [64, 64]},
    "memory_encoder": {"out_dim": 64, "fuser_num_layers": 2, "fuser_kernel_size": 7},
    "image_size": 1024,
    "num_maskmem": 7,
}
# Hiera's constructor defaults the yaml leaves out: each stage after a query pool doubles the width
# and the heads (dim_mul = head_mul = 2.0), 2x2 query stride, pooling before stages 2-4.
HIERA_DIM_MUL = 2
HIERA_HEAD_MUL = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------ ids
def is_random_id(model: str) -> bool:
    return model.startswith(RANDOM_PREFIX)


def parse_random_id(model: str) -> tuple[str, dict[str, int]]:
    """`random:name@k=v,...` -> (name, reductions); one clear error for an unknown name or key."""
    if not is_random_id(model):
        raise ValueError(f"{model!r} is not a random: model id")
    name, _, rest = model[len(RANDOM_PREFIX):].partition("@")
    if name not in HUB_IDS:
        raise ValueError(f"unknown random model {model!r}; known: {', '.join('random:' + n for n in HUB_IDS)}")
    allowed = REDUCTIONS[FAMILIES[name]]
    reductions: dict[str, int] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed or not value.isdigit() or int(value) < 1:
            raise ValueError(f"{model!r}: bad reduction {item!r}; {name} takes {', '.join(allowed)} "
                             "as key=positive integer")
        reductions[key] = int(value)
    return name, reductions


# ------------------------------------------------------------------------------------------ configs
def qwen_config(name: str, layers: int | None = None, vision_depth: int | None = None,
                vocab: int | None = None, token_ids: dict[str, int] | None = None):
    """`Qwen2_5_VLConfig` of a real checkpoint; fewer layers / a smaller vocabulary keep every width."""
    from transformers import Qwen2_5_VLConfig

    values = json.loads(json.dumps(QWEN2_5_VL[name]))
    if layers is not None:
        values["num_hidden_layers"] = layers
        values["max_window_layers"] = min(values["max_window_layers"], layers)
    if vision_depth is not None:
        vision = values["vision_config"]
        # Keep the real pattern: windowed blocks, every 8th full (7, 15, ...), the last block full.
        full = [i for i in vision["fullatt_block_indexes"] if i < vision_depth] or [vision_depth - 1]
        vision.update(depth=vision_depth, fullatt_block_indexes=sorted(set(full) | {vision_depth - 1}))
    if vocab is not None:
        values["vocab_size"] = vocab
    for key, value in (token_ids or {}).items():
        values[key] = value
    return Qwen2_5_VLConfig(**values)


def vggt_config(depth: int | None = None, dino_depth: int | None = None, camera_depth: int | None = None):
    """Our `VGGTConfig` of VGGT-1B (its config.json holds the defaults); fewer blocks keep the widths."""
    from dataclasses import replace

    from pipeline.models.vggt.config import AggregatorConfig, VGGTConfig

    cfg = VGGTConfig.vggt_1b()
    agg = cfg.aggregator
    assert (agg.embed_dim, agg.img_size, agg.patch_size) == tuple(VGGT_1B[k] for k in
                                                                 ("embed_dim", "img_size", "patch_size"))
    if depth is not None:
        # The DPT heads read 4 aggregator layers; keep their relative depths (4, 11, 17, 23 of 24).
        layers = tuple(max(0, math.ceil((i + 1) * depth / agg.depth) - 1)
                       for i in cfg.depth_head.intermediate_layer_idx)
        cfg = replace(cfg, aggregator=replace(agg, depth=depth),
                      depth_head=replace(cfg.depth_head, intermediate_layer_idx=layers),
                      point_head=replace(cfg.point_head, intermediate_layer_idx=layers))
    if dino_depth is not None:
        cfg = replace(cfg, aggregator=replace(cfg.aggregator, dino_depth=dino_depth))
    if camera_depth is not None:
        cfg = replace(cfg, camera_head=replace(cfg.camera_head, trunk_depth=camera_depth))
    assert isinstance(cfg.aggregator, AggregatorConfig)
    return cfg


def sam2_config(values: dict[str, Any] = SAM2_1_HIERA_LARGE, image_size: int | None = None,
                depth: int | None = None, video: bool = False):
    """Map the original SAM 2 yaml values to transformers' `Sam2Config` (`Sam2VideoConfig` if video).

    Hiera: embed_dim -> hidden_size, stages -> blocks_per_stage, global_att_blocks -> global_attention_blocks,
    window_spec -> window_size_per_stage, window_pos_embed_bkg_spatial_size ->
    window_positional_embedding_background_size; per-stage widths and heads from dim_mul / head_mul.
    The neck's backbone_channel_list and d_model -> Sam2VisionConfig; image_size sets the backbone
    input, the three FPN feature sizes (strides 4, 8, 16) and the prompt encoder. `depth` keeps at most
    that many blocks per stage, with one global-attention block last in the third stage (a stage's
    first block pools queries and cannot be global).
    """
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2PromptEncoderConfig, Sam2VisionConfig

    trunk, neck = values["trunk"], values["neck"]
    size = int(image_size or values["image_size"])
    if size % 128:
        raise ValueError(f"SAM 2 image_size {size} must be a multiple of 128 (Hiera's strides and windows)")
    if depth is not None:
        stages = [min(n, depth) for n in trunk["stages"]]
        trunk = {**trunk, "stages": stages, "global_att_blocks": [sum(stages[:3]) - 1]}
        if stages[2] < 2:
            raise ValueError("SAM 2 depth must be at least 2 (the global block cannot start a stage)")
    num_stages = len(trunk["stages"])
    widths = [trunk["embed_dim"] * HIERA_DIM_MUL ** i for i in range(num_stages)]
    heads = [trunk["num_heads"] * HIERA_HEAD_MUL ** i for i in range(num_stages)]
    if list(reversed(widths)) != list(neck["backbone_channel_list"]):
        raise ValueError(f"neck backbone_channel_list {neck['backbone_channel_list']} does not match the "
                         f"trunk's stage widths {widths}")
    backbone = Sam2HieraDetConfig(
        hidden_size=trunk["embed_dim"], num_attention_heads=trunk["num_heads"], image_size=[size, size],
        blocks_per_stage=list(trunk["stages"]), embed_dim_per_stage=widths, num_attention_heads_per_stage=heads,
        global_attention_blocks=list(trunk["global_att_blocks"]),
        window_size_per_stage=list(trunk["window_spec"]),
        window_positional_embedding_background_size=list(trunk["window_pos_embed_bkg_spatial_size"]))
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=list(neck["backbone_channel_list"]),
                              backbone_feature_sizes=[[size // s, size // s] for s in (4, 8, 16)],
                              fpn_hidden_size=neck["d_model"], fpn_top_down_levels=list(neck["fpn_top_down_levels"]))
    prompt = Sam2PromptEncoderConfig(hidden_size=neck["d_model"], image_size=size)
    if not video:
        return Sam2Config(vision_config=vision, prompt_encoder_config=prompt)
    from transformers import Sam2VideoConfig

    memory, encoder = values["memory_attention"], values["memory_encoder"]
    return Sam2VideoConfig(vision_config=vision, prompt_encoder_config=prompt, image_size=size,
                           num_maskmem=values["num_maskmem"], memory_attention_hidden_size=memory["d_model"],
                           memory_attention_num_layers=memory["num_layers"],
                           memory_attention_feed_forward_hidden_size=memory["dim_feedforward"],
                           memory_attention_num_attention_heads=memory["num_heads"],
                           memory_attention_rope_feat_sizes=list(memory["feat_sizes"]),
                           memory_encoder_output_channels=encoder["out_dim"],
                           memory_fuser_num_layers=encoder["fuser_num_layers"],
                           memory_fuser_kernel_size=encoder["fuser_kernel_size"])


def build_on_meta(name: str, **reductions: int):
    """The architecture on the meta device: shapes and parameter counts, no memory."""
    import torch

    family = FAMILIES[name]
    with torch.device("meta"):
        if family == "qwen2_5_vl":
            from transformers import Qwen2_5_VLForConditionalGeneration

            return Qwen2_5_VLForConditionalGeneration(qwen_config(name, **reductions))
        if family == "vggt":
            from pipeline.models.vggt.model import VGGT

            return VGGT(vggt_config(**reductions))
        from transformers import Sam2Model

        return Sam2Model(sam2_config(**reductions))


def num_params(module) -> int:
    """Distinct parameters (tied weights once), as the hub's model size counts them."""
    return sum({p.data_ptr() if p.device.type != "meta" else id(p): p.numel()
                for p in module.parameters()}.values())


# ------------------------------------------------------------------------------------------ builders
def _marker(tmp: Path, model: str, **extra: Any) -> None:
    name, reductions = parse_random_id(model)
    (tmp / RANDOM_MARKER).write_text(json.dumps({"trained": False, "random": model, "architecture": HUB_IDS[name],
                                                 "reductions": reductions, **extra}))


def _build_qwen(folder: Path, model: str, seed: int) -> None:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from pipeline.models.tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer
    from schemas.io import atomic_dir

    name, reductions = parse_random_id(model)
    tokenizer = train_bpe_tokenizer([])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    token_ids = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                 "pad_token_id": ids["<|endoftext|>"], "vision_start_token_id": ids["<|vision_start|>"],
                 "vision_end_token_id": ids["<|vision_end|>"], "image_token_id": ids["<|image_pad|>"],
                 "video_token_id": ids["<|video_pad|>"]}
    config = qwen_config(name, token_ids=token_ids, **reductions)
    if config.text_config.vocab_size < len(tokenizer):
        raise ValueError(f"{model}: vocab {config.text_config.vocab_size} is smaller than the tokenizer's "
                         f"{len(tokenizer)} tokens")
    torch.manual_seed(seed)
    # bf16 as the hub's weights: a 7B model in float32 would need 33 GB to build.
    net = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    pre = {k: QWEN2_5_VL_PREPROCESSOR[k] for k in ("min_pixels", "max_pixels", "image_mean", "image_std")}
    with atomic_dir(folder) as tmp:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        Qwen2VLImageProcessorPil(**pre).save_pretrained(tmp)
        _marker(tmp, model, seed=seed)


def _build_vggt(folder: Path, model: str, seed: int) -> None:
    from pipeline.models.vggt.loader import random_vggt, save_vggt
    from schemas.io import atomic_dir

    _, reductions = parse_random_id(model)
    with atomic_dir(folder) as tmp:
        save_vggt(random_vggt(vggt_config(**reductions), seed=seed), tmp, toy=True)
        _marker(tmp, model, seed=seed)


def _build_sam2(folder: Path, model: str, seed: int) -> None:
    import torch
    from transformers import Sam2Model

    from schemas.io import atomic_dir

    _, reductions = parse_random_id(model)
    torch.manual_seed(seed)
    net = Sam2Model(sam2_config(**reductions)).eval()
    with atomic_dir(folder) as tmp:
        net.save_pretrained(tmp)
        (tmp / "preprocessor_config.json").write_text(json.dumps({"image_mean": list(IMAGENET_MEAN),
                                                                  "image_std": list(IMAGENET_STD)}))
        _marker(tmp, model, seed=seed)


_BUILDERS = {"qwen2_5_vl": _build_qwen, "vggt": _build_vggt, "sam2": _build_sam2}


def random_model_dir(model: str, data_root: str | Path) -> Path:
    return models_dir(data_root) / "random" / model[len(RANDOM_PREFIX):].replace("=", "-").replace(",", "_")


def resolve_random(model: str, data_root: str | Path, family: str, seed: int = 0) -> str:
    """The folder of a `random:` model, built on first use; `family` is what the caller can load."""
    from schemas.io import build_once

    name, _ = parse_random_id(model)
    if FAMILIES[name] != family:
        raise ValueError(f"{model!r} is a {FAMILIES[name]} model; this backend loads {family} models")
    folder = build_once(random_model_dir(model, data_root), RANDOM_MARKER,
                        lambda out: _BUILDERS[family](Path(out), model, seed))
    return str(folder)
