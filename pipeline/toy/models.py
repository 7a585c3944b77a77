"""Tiny random-weight models for the toy workflow, built and saved with `save_pretrained`.

No weights can be downloaded in the toy setting, so a workflow may name `toy:qwen2_5_vl` instead of a
hub id. The first use builds a tiny Qwen2.5-VL (vision tower + language model, random weights) and a
small byte-level BPE tokenizer trained on the given texts, and saves both under
`<data root>/models/qwen2_5_vl`. Everything afterwards loads that folder through the same
`from_pretrained` code that loads a real checkpoint. The folder's `p3d_toy.json` marks it untrained.
`toy:sam2` and `toy:depth_anything` are the same for the segmenter and the metric-depth model.
The real path reaches `resolve_toy_model` only as the `toy` plugin of pipeline/models/resolve.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pipeline.models.resolve import UNTRAINED_MARKER
from pipeline.models.sam2_segmenter import IMAGENET_MEAN, IMAGENET_STD
from pipeline.models.tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer
from schemas.io import atomic_dir, build_once
from schemas.layout import CATEGORIES_FILE, data_records, models_dir

TOY_PREFIX = "toy:"
TOY_MARKER = UNTRAINED_MARKER
TOY_SAM2 = "toy:sam2"
# Qwen2.5-VL's text RoPE splits head_dim/2 frequencies into (temporal, height, width) sections.
TOY_TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096)
TOY_MROPE_SECTION = [4, 6, 6]  # sums to head_dim/2 = 128/4/2
TOY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[1])


def is_toy_id(model: str) -> bool:
    return model.startswith(TOY_PREFIX)


def toy_model_dir(model: str, data_root: str | Path) -> Path:
    return models_dir(data_root) / model[len(TOY_PREFIX):]


def build_toy_qwen(out_dir: str | Path, texts: Iterable[str] = (), seed: int = 0,
                   num_layers: int | None = None) -> Path:
    """Build, save and return the folder of a tiny random-weight Qwen2.5-VL with its tokenizer;
    `num_layers` replaces the toy depth (benchmarks/spatial.py asks what depth a task needs)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    out_dir = Path(out_dir)
    tokenizer = train_bpe_tokenizer(texts, model_max_length=TOY_TEXT["max_position_embeddings"])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    depth = {"num_hidden_layers": num_layers} if num_layers else {}
    text_cfg = dict(TOY_TEXT, **depth, vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
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


def tiny_sam2_config(image_size: int = 128):
    """A ~0.4M-parameter SAM 2 for tests and the toy workflow. Hiera puts a global-attention block
    inside stages 1-2, never first in a stage (a first block that pools queries cannot be global)."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    s = image_size
    backbone = Sam2HieraDetConfig(image_size=[s, s], hidden_size=16, num_attention_heads=1,
                                  blocks_per_stage=[1, 2, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                  num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 4, 4, 4],
                                  global_attention_blocks=[2, 4], window_positional_embedding_background_size=[4, 4])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                              backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
                              fpn_hidden_size=32)
    return Sam2Config(vision_config=vision,
                      prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=s, patch_size=16,
                                                                    mask_input_channels=4),
                      mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2,
                                                                iou_head_hidden_dim=32))


def build_toy_sam2(folder: str | Path, seed: int = 0) -> Path:
    """Save a random-weight tiny SAM 2 with `save_pretrained` (temp folder, then rename)."""
    import torch
    from transformers import Sam2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    model = Sam2Model(tiny_sam2_config()).eval()
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        (tmp / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}))
        (tmp / TOY_MARKER).write_text(json.dumps({"trained": False, "seed": seed}))
    return folder


def tiny_metric_config(max_depth: int = 20):
    """A 2-layer DINOv2 Depth Anything in the metric-indoor layout (tests, the toy world)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_indices=[1, 2, 3, 4],
                            reshape_hidden_states=False, apply_layernorm=True)
    return DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                               neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                               depth_estimation_type="metric", max_depth=max_depth)


def build_toy_depth_model(folder: str | Path, seed: int = 0, input_size: int = 56) -> Path:
    """Save a random-weight tiny metric Depth Anything with `save_pretrained` (temp folder, then rename)."""
    import torch
    from transformers import AutoModelForDepthEstimation

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForDepthEstimation.from_config(tiny_metric_config()).eval()
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        (tmp / "preprocessor_config.json").write_text(json.dumps({
            "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
            "size": {"height": input_size, "width": input_size}}))
        (tmp / TOY_MARKER).write_text(json.dumps({"trained": False, "seed": seed}))
    return folder


# toy:<name> -> (the family of loaders that can load it, its builder(folder, data root)).
TOY_MODELS = {
    "qwen2_5_vl": ("qwen2_5_vl", lambda out, data_root: build_toy_qwen(out, _toy_texts(data_root))),
    "sam2": ("sam2", lambda out, data_root: build_toy_sam2(out)),
    "depth_anything": ("depth_anything", lambda out, data_root: build_toy_depth_model(out)),
}


def resolve_toy_model(model: str, data_root: str | Path, family: str) -> str:
    """The `p3d.model_ids` plugin of `toy:<name>`: its folder under `<data root>/models`, built on first
    use; `family` is what the caller can load."""
    name = model[len(TOY_PREFIX):]
    if name not in TOY_MODELS:
        raise ValueError(f"unknown toy model {model!r}; known: {', '.join(TOY_PREFIX + n for n in TOY_MODELS)}")
    toy_family, build = TOY_MODELS[name]
    if toy_family != family:
        raise ValueError(f"{model!r} is a {toy_family} model; this backend loads {family} models")
    folder = build_once(toy_model_dir(model, data_root), TOY_MARKER, lambda out: build(Path(out), Path(data_root)))
    return str(folder)
