"""`p3d plan`: will a workflow fit, before renting GPUs.

Per feature actor: the three networks' weights (parameters counted on the meta device, in the
workflow's dtype) plus their largest live activations at the workflow's frames and image size.
Per training GPU: ZeRO model states from DeepSpeed's own estimators
(`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`: the functions
behind its `..._all_cold` printouts), for the parameters the stage trains, plus the frozen weights,
plus activations (gradient checkpointing keeps one hidden state per layer) and the answer positions'
logits (at a 150k vocabulary the largest single tensor; the trainer computes no others). Then which
ZeRO stage / offload / LoRA fits.

Activation terms are estimates of the largest tensors alive at once, not a trace: they are checked
against measured peaks on CPU (tests/test_plan.py states the tolerance) and on a GPU by
`make bench-gpu` (benchmarks/results/).

Legend: P parameters, S sequence length, B micro-batch, H hidden size, I MLP width, V vocabulary.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# CUDA context, NCCL / allocator slack; measured: docs/RESULTS.md#plan-gpu-overhead
OVERHEAD_BYTES = int(1.5 * GIB)
TEXT_TOKENS = 96  # prompt + answer tokens beside the scene in one stage-3/4 example (chat template included)


@dataclass(frozen=True)
class NetworkMemory:
    role: str
    model: str
    params: int
    weight_bytes: int
    activation_bytes: int
    detail: str = ""
    out_dim: int = 0  # the encoder's feature width D (the projector's input)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


@dataclass(frozen=True)
class TrainOption:
    name: str  # zero2 | zero3 | zero3_offload | lora
    model_state_bytes: int
    activation_bytes: int
    cpu_bytes: int
    note: str = ""

    @property
    def gpu_bytes(self) -> int:
        return self.model_state_bytes + self.activation_bytes + OVERHEAD_BYTES


@dataclass
class Plan:
    workflow: str
    gpus: int
    gpu_memory_gib: float
    features: list[NetworkMemory] = field(default_factory=list)
    train_model: str = ""
    trainable_params: int = 0
    total_params: int = 0
    sequence: int = 0
    options: list[TrainOption] = field(default_factory=list)

    def feature_bytes(self) -> int:
        return sum(n.total_bytes for n in self.features) + OVERHEAD_BYTES

    def fitting(self) -> list[TrainOption]:
        return [o for o in self.options if o.gpu_bytes <= self.gpu_memory_gib * GIB]


# ------------------------------------------------------------------ architectures on the meta device
def _random_on_meta(model: str):
    """The architecture a `random:` id names, on the meta device; None for any other id."""
    from pipeline.models import real_configs as rc

    if not rc.is_random_id(model):
        return None
    name, reductions = rc.parse_random_id(model)
    return rc.build_on_meta(name, **reductions)


@functools.lru_cache(maxsize=8)
def _meta_qwen(model: str, data_root: str | Path):
    """A Qwen2.5-VL on the meta device from its config: random:/hub ids from real_configs, else a folder."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from pipeline.models import real_configs as rc

    names = {v: k for k, v in rc.HUB_IDS.items()}
    if (random_net := _random_on_meta(model)) is not None:
        return random_net
    if model in names:
        return rc.build_on_meta(names[model])
    from pipeline.models.resolve import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model, data_root))
    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config)


def _meta_vggt(model: str):
    import torch

    from pipeline.models.vggt.config import VGGTConfig
    from pipeline.models.vggt.model import VGGT

    if (random_net := _random_on_meta(model)) is not None:
        return random_net
    config_path = Path(model) / "config.json"
    cfg = VGGTConfig.vggt_1b()
    if config_path.is_file() and "aggregator" in config_path.read_text():
        cfg = VGGTConfig.from_json(config_path)
    with torch.device("meta"):
        return VGGT(cfg)


def _meta_sam2(model: str):
    import torch
    from transformers import AutoConfig, Sam2Model

    from pipeline.models import real_configs as rc
    from pipeline.toy.models import TOY_SAM2, tiny_sam2_config

    if (random_net := _random_on_meta(model)) is not None:
        return random_net
    if model == TOY_SAM2:
        config = tiny_sam2_config()
    elif model == rc.HUB_IDS["sam2.1_hiera_large"]:
        config = rc.sam2_config()
    else:
        config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        return Sam2Model(config)


# ------------------------------------------------------------------ feature actors
def _dtype_bytes(dtype: str, on_gpu: bool) -> int:
    return DTYPE_BYTES["bfloat16" if on_gpu else "float32"] if dtype == "auto" else DTYPE_BYTES[dtype]


def encoder_memory(cfg, image_hw: tuple[int, int], data_root, on_gpu: bool = True) -> NetworkMemory:
    """The vision tower only (the encoder never loads the language model); `cfg` is an EncoderConfig."""
    from pipeline.models.real_configs import num_params

    visual = _meta_qwen(cfg.model, data_root).model.visual
    v = visual.config
    b = _dtype_bytes(cfg.dtype, on_gpu)
    patches = (image_hw[0] // v.patch_size) * (image_hw[1] // v.patch_size)
    tokens = cfg.frames_per_batch * patches
    # One block's live tensors: residual, norm, qkv (3w), attention out, SwiGLU gate/up/act (3 x I).
    live = tokens * (6 * v.hidden_size + 3 * v.intermediate_size) * b
    # Without a fused kernel (CPU) one frame's full-attention scores exist at once, in float32.
    scores = 0 if on_gpu else v.num_heads * patches**2 * 4
    params = num_params(visual)
    return NetworkMemory("encoder", cfg.model, params, params * b, live + scores,
                         f"{cfg.frames_per_batch} frames x {patches} patches per call", v.out_hidden_size)


def geometry_memory(cfg, num_frames: int, image_hw: tuple[int, int], on_gpu: bool = True) -> NetworkMemory:
    """VGGT over all frames at once (long side 518); its DPT heads run in float32, chunk by chunk."""
    from pipeline.models.real_configs import num_params
    from pipeline.models.vggt.preprocess import fit_size

    if cfg.kind != "vggt":
        return NetworkMemory("geometry", cfg.kind, 0, 0, 0, "no network")
    net = _meta_vggt(cfg.model)
    agg, dpt = net.cfg.aggregator, net.cfg.depth_head
    b = _dtype_bytes(cfg.dtype, on_gpu)
    h, w = fit_size(*image_hw)
    tokens = (h // agg.patch_size) * (w // agg.patch_size) + 1 + agg.num_register_tokens
    width = agg.embed_dim
    # Every layer's concat(frame, global) output is kept for the heads, beside one block's live tensors.
    kept = agg.depth * num_frames * tokens * 2 * width * b
    live = num_frames * tokens * (6 * width + 3 * int(agg.mlp_ratio * width)) * b
    chunk = min(dpt.frames_chunk_size, num_frames)
    head = chunk * h * w * (dpt.features // 2) * 4 * 2  # the full-resolution map and its sum, float32
    params = num_params(net)
    heads = sum(num_params(m) for m in (net.camera_head, net.depth_head, net.point_head))
    return NetworkMemory("geometry", cfg.model, params, (params - heads) * b + heads * 4, kept + live + head,
                         f"{num_frames} frames x {tokens} tokens at {h}x{w}")


def segmenter_memory(cfg, image_hw: tuple[int, int], on_gpu: bool = True) -> NetworkMemory:
    """SAM 2 automatic masks: one frame's image embedding, then prompts in batches of points_per_batch."""
    from pipeline.models.real_configs import num_params

    if cfg.kind != "sam2":
        return NetworkMemory("segmenter", cfg.kind, 0, 0, 0, "no network")
    net = _meta_sam2(cfg.model)
    bb = net.config.vision_config.backbone_config
    size = net.config.prompt_encoder_config.image_size
    first = (size // 4) ** 2  # Hiera's first stage, the largest token map
    backbone = first * (6 * bb.embed_dim_per_stage[0] + 3 * int(bb.mlp_ratio * bb.embed_dim_per_stage[0])) * 4
    fpn = first * net.config.vision_config.fpn_hidden_size * 4 * 3
    masks = cfg.points_per_batch * (3 * (size // 4) ** 2 + 3 * image_hw[0] * image_hw[1]) * 4
    params = num_params(net)
    return NetworkMemory("segmenter", cfg.model, params, params * 4, backbone + fpn + masks,
                         f"{size} px input, {cfg.points_per_batch} prompts per call")


# ------------------------------------------------------------------ training
def trainable_split(lm_model, trainable: list[str], feat_dim: int, num_obj_tokens: int, fourier_dim: int,
                    lora_rank: int) -> tuple[int, int, int]:
    """(trainable, total, largest layer) parameters of the Proxy3D model built on this language model."""
    from pipeline.models.real_configs import num_params

    text = lm_model.config.text_config
    hidden = text.hidden_size
    language = num_params(lm_model.model.language_model) + (
        0 if lm_model.config.tie_word_embeddings else lm_model.lm_head.weight.numel())
    parts = {"projector": feat_dim * hidden + hidden,
             "position": fourier_dim // 2 * 2 + fourier_dim * 256 + 256 + 256 * hidden + hidden,
             "identifiers": num_obj_tokens * hidden, "language_model": language}
    head_dim = hidden // text.num_attention_heads
    kv = text.num_key_value_heads * head_dim
    per_layer = lora_rank * ((hidden + hidden) * 2 + (hidden + kv) * 2)  # q, o square; k, v to kv width
    parts["lora"] = text.num_hidden_layers * per_layer
    total = num_params(lm_model) + sum(v for k, v in parts.items() if k not in ("language_model", "lora"))
    total += parts["lora"] if "lora" in trainable else 0
    largest = max(p.numel() for p in lm_model.parameters())
    return sum(parts[t] for t in dict.fromkeys(trainable)), total, largest


# The trainer projects only the answer's positions onto the vocabulary (trainer/model.py:
# Proxy3DModel.forward); the plan counts logits for this many answer tokens per sample (a long caption).
ANSWER_TOKENS = 64


def activation_bytes(text_config, seq: int, batch: int, checkpointing: bool, vocab: int,
                     param_bytes: int = 2, answer_tokens: int = ANSWER_TOKENS) -> int:
    """Activations of one forward + backward: with checkpointing one H-wide state per layer is kept and
    one layer is recomputed at a time; the answer positions' logits (bf16, their float32 upcast and
    its gradient)."""
    h, inter, layers = text_config.hidden_size, text_config.intermediate_size, text_config.num_hidden_layers
    tokens = seq * batch
    layer_live = tokens * (10 * h + 4 * inter) * param_bytes
    kept = layers * tokens * h * param_bytes if checkpointing else layers * layer_live
    logits = min(seq, answer_tokens) * batch * vocab * (param_bytes + 4 + 4)
    return kept + (layer_live if checkpointing else 0) + logits


def cpu_fp32_training_bytes(trainable: int, total: int, activation: int, stored_bytes: int = 2) -> int:
    """Peak of a torch AdamW step in float32 (the trainer on CPU): 4-byte weights; per trained
    parameter a 4-byte gradient, 8 bytes of Adam moments and 4 of the foreach update's temporaries;
    `activation` computed with param_bytes=4; plus the checkpoint's tensors in their stored dtype, which
    `from_pretrained` holds while it fills the model (freed memory stays in the process's heap)."""
    return 4 * total + 16 * trainable + activation + stored_bytes * total


def train_options(trainable: int, total: int, largest: int, gpus: int, activation: int,
                  lora_trainable: int) -> list[TrainOption]:
    """Model states per GPU for each way to run the stage (DeepSpeed's formulas, bf16 + Adam)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    frozen = total - trainable
    options = []
    cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, num_gpus_per_node=gpus, cpu_offload=False)
    options.append(TrainOption("zero2", gpu + 2 * frozen, activation, cpu, "states partitioned, weights replicated"))
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trainable, largest, num_gpus_per_node=gpus,
                                                       cpu_offload=False, cpu_offload_params=False)
    options.append(TrainOption("zero3", gpu + math.ceil(2 * frozen / gpus), activation, cpu,
                               "weights, gradients and optimizer partitioned"))
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trainable, largest, num_gpus_per_node=gpus,
                                                       cpu_offload=True, cpu_offload_params=False)
    options.append(TrainOption("zero3_offload", gpu + math.ceil(2 * frozen / gpus), activation, cpu,
                               "optimizer states in CPU memory (slower steps)"))
    frozen_lora = total - lora_trainable
    cpu, gpu = estimate_zero2_model_states_mem_needs(lora_trainable, num_gpus_per_node=gpus, cpu_offload=False)
    options.append(TrainOption("lora", gpu + 2 * frozen_lora, activation, cpu,
                               "trainable: [projector, position, lora] instead of the whole language model"))
    return options


def plan_workflow(workflow, gpus: int, gpu_memory_gib: float, stage: int = 3, name: str = "") -> Plan:
    """The plan of one workflow (a `schemas.workflow.Workflow`) for `stage`'s recipe."""
    from trainer.recipes import stage_config

    if gpus < 1 or gpu_memory_gib <= 0:
        raise ValueError(f"--gpus must be >= 1 and --gpu-memory > 0 (got {gpus}, {gpu_memory_gib})")
    feats, train = workflow.features, workflow.train
    plan = Plan(workflow=name or workflow.name, gpus=gpus, gpu_memory_gib=gpu_memory_gib)
    hw = tuple(feats.image_size)
    plan.features = [encoder_memory(feats.encoder, hw, workflow.out),
                     geometry_memory(feats.geometry, feats.num_frames, hw),
                     segmenter_memory(feats.segmenter, hw)]
    lm = _meta_qwen(train.model, workflow.out)
    scfg = stage_config(train, stage)
    common = dict(feat_dim=plan.features[0].out_dim, num_obj_tokens=train.num_obj_tokens,
                  fourier_dim=train.fourier_dim, lora_rank=train.lora_rank)
    trainable, total, largest = trainable_split(lm, list(scfg.trainable), **common)
    lora, _, _ = trainable_split(lm, ["projector", "position", "lora"], **common)
    plan.train_model, plan.trainable_params, plan.total_params = train.model, trainable, total
    plan.sequence = workflow.cluster.proxies + TEXT_TOKENS
    act = activation_bytes(lm.config.text_config, plan.sequence, scfg.batch_size, train.gradient_checkpointing,
                           lm.config.text_config.vocab_size)
    plan.options = train_options(trainable, total, largest, gpus, act, lora)
    return plan


def render(plan: Plan) -> list[str]:
    gib = lambda n: f"{n / GIB:.1f}"  # noqa: E731
    lines = [f"plan for {plan.workflow}: {plan.gpus} GPU(s) x {plan.gpu_memory_gib:g} GiB",
             "", "feature actor (one per GPU): weights + activations, GiB",
             f"  {'network':<10} {'model':<42} {'params':>9} {'weights':>8} {'activ.':>7}  at"]
    for n in plan.features:
        lines.append(f"  {n.role:<10} {n.model:<42} {n.params / 1e6:>8.1f}M {gib(n.weight_bytes):>8} "
                     f"{gib(n.activation_bytes):>7}  {n.detail}")
    need = plan.feature_bytes()
    lines.append(f"  total with {OVERHEAD_BYTES / GIB:.1f} GiB runtime overhead: {gib(need)} GiB -> "
                 + ("fits" if need <= plan.gpu_memory_gib * GIB else "does NOT fit"))
    lines += ["", f"training ({plan.train_model}): {plan.trainable_params / 1e9:.2f}B of "
              f"{plan.total_params / 1e9:.2f}B parameters trained, sequence {plan.sequence} tokens",
              f"  {'option':<14} {'states':>7} {'activ.':>7} {'per GPU':>8} {'CPU':>7}  verdict"]
    for o in plan.options:
        fits = o.gpu_bytes <= plan.gpu_memory_gib * GIB
        lines.append(f"  {o.name:<14} {gib(o.model_state_bytes):>7} {gib(o.activation_bytes):>7} "
                     f"{gib(o.gpu_bytes):>8} {gib(o.cpu_bytes):>7}  {'fits' if fits else 'too big'}: {o.note}")
    fitting = plan.fitting()
    lines.append("")
    lines.append(f"use: {fitting[0].name} (train.deepspeed / the stage's trainable)" if fitting else
                 "nothing fits: more GPUs, larger GPUs, fewer proxies or a smaller micro-batch")
    return lines
