"""The Proxy3D model: Qwen2.5-VL's language model reading 3D proxy tokens in place of image tokens.

A scene enters the prompt as K `<|image_pad|>` placeholders between `<|vision_start|>` and
`<|vision_end|>`; `forward` replaces their embeddings by

    proxy mode (stage 4):   projector(feat) + identifier[segment] + fourier(x, y)
    fused mode (stage 1-3): semantic[category] + identifier[segment] + fourier(x, y)   (one per object)

and the rotary position ids carry the quantized height (trainer.positions; `cfg.rope_positions`
records the layout the model was trained with, which prediction then uses). The text tokens
`<OBJxxx>` share their input embedding with the identifier table (the paper's embedding-text pair),
so a question that names `<OBJ012>` and the proxies of segment 12 carry the same vector; the output
rows of those tokens start as a copy of it.

The p3d modules (projector, Fourier MLP, identifier and semantic tables) are saved beside the
Hugging Face folder as `p3d_modules.safetensors` + `p3d_config.json` (written last: the marker).

Legend: B batch, L tokens, K scene tokens, D proxy feature dim, H hidden size, M identifiers,
C categories.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import CausalLMOutput

from schemas.config_train import FourierFrequencies, RopePositions
from schemas.io import atomic_dir
from trainer import objects
from trainer.chat import IGNORE
from trainer.lora import add_lora, lora_scalings, merge_lora_state_dict
from trainer.positions import FourierXY

P3D_CONFIG = "p3d_config.json"
P3D_MODULES = "p3d_modules.safetensors"


class P3DModelConfig(BaseModel):
    """Everything needed to rebuild the p3d modules around a saved language model."""

    model_config = ConfigDict(extra="forbid")
    feat_dim: int
    hidden_size: int
    num_obj_tokens: int
    obj_token_ids: list[int]
    categories: list[str]  # row i + 1 of the semantic table; row 0 is the unknown category
    height_bins: int
    height_range: tuple[float, float]
    rope_positions: RopePositions = "height"  # set from train.rope_positions by each stage
    fourier_dim: int
    fourier_sigma: float = 1.0  # the Fourier frequencies' spread at initialisation (train.fourier_sigma)
    fourier_frequencies: FourierFrequencies = "gaussian"  # their initial draw (train.fourier_frequencies)
    fourier_out_scale: float = 0.02  # the Fourier term's size at initialisation (train.fourier_out_scale)
    fourier_on: bool = True  # the Fourier term joins the scene tokens; set by each stage (train.fourier_from_stage)
    scene_token_id: int
    vision_start_id: int
    vision_end_id: int
    chat_start_id: int
    chat_end_id: int
    pad_id: int
    glyph_folder: str | None = None
    base_model: str = ""
    stages_done: list[int] = []


def _special_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {token!r} token; a Qwen2.5-VL tokenizer is required")
    return int(tid)


class Proxy3DModel(nn.Module):
    def __init__(self, lm, tokenizer, image_processor, cfg: P3DModelConfig):
        super().__init__()
        self.lm, self.tokenizer, self.image_processor, self.cfg = lm, tokenizer, image_processor, cfg
        hidden = cfg.hidden_size
        self.projector = nn.Linear(cfg.feat_dim, hidden)
        if cfg.feat_dim == hidden:  # already in the language model's space: start as identity
            nn.init.eye_(self.projector.weight)
            nn.init.zeros_(self.projector.bias)
        self.fourier = FourierXY(hidden, cfg.fourier_dim, sigma=cfg.fourier_sigma, out_scale=cfg.fourier_out_scale,
                                 frequencies=cfg.fourier_frequencies)
        self.identifiers = nn.Embedding(cfg.num_obj_tokens, hidden)
        self.semantic = nn.Embedding(len(cfg.categories) + 1, hidden)
        self.semantic.weight.requires_grad_(False)
        ids = cfg.obj_token_ids
        assert ids == list(range(ids[0], ids[0] + len(ids))), "object tokens must be contiguous ids"
        self.obj_first = ids[0]
        self.lora_enabled = False

    # ---------------------------------------------------------------- building and loading
    @classmethod
    def build(cls, base: str, *, feat_dim: int, num_obj_tokens: int, categories: list[str],
              height_bins: int, height_range: tuple[float, float], fourier_dim: int,
              fourier_sigma: float = 1.0, fourier_out_scale: float = 0.02,
              fourier_frequencies: FourierFrequencies = "gaussian", glyph_folder: str | None = None,
              dtype=torch.float32) -> Proxy3DModel:
        """A fresh Proxy3D model on a Hugging Face Qwen2.5-VL (hub id or folder)."""
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        tokenizer = AutoTokenizer.from_pretrained(base)
        lm = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=dtype)
        tokens = objects.obj_tokens(num_obj_tokens)
        tokenizer.add_tokens(tokens)
        # Resize right after loading (never after a backward pass); a real Qwen vocabulary has spare rows.
        if len(tokenizer) > lm.get_input_embeddings().weight.shape[0]:
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        cfg = P3DModelConfig(
            feat_dim=feat_dim, hidden_size=lm.config.text_config.hidden_size, num_obj_tokens=num_obj_tokens,
            obj_token_ids=[int(i) for i in tokenizer.convert_tokens_to_ids(tokens)],
            categories=sorted(set(categories)), height_bins=height_bins, height_range=tuple(height_range),
            fourier_dim=fourier_dim, fourier_sigma=fourier_sigma, fourier_out_scale=fourier_out_scale,
            fourier_frequencies=fourier_frequencies, scene_token_id=_special_id(tokenizer, "<|image_pad|>"),
            vision_start_id=_special_id(tokenizer, "<|vision_start|>"),
            vision_end_id=_special_id(tokenizer, "<|vision_end|>"),
            chat_start_id=_special_id(tokenizer, "<|im_start|>"), chat_end_id=_special_id(tokenizer, "<|im_end|>"),
            pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                       else _special_id(tokenizer, "<|endoftext|>")),
            glyph_folder=glyph_folder, base_model=base)
        model = cls(lm, tokenizer, _image_processor(base), cfg)
        model._init_glyph_tables()
        return model

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype=torch.float32) -> Proxy3DModel:
        """Load an exported folder (no DeepSpeed needed)."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        folder = Path(folder)
        if not (folder / P3D_CONFIG).exists():
            raise ValueError(f"{folder}: not a p3d checkpoint (no {P3D_CONFIG}; unfinished export?)")
        cfg = P3DModelConfig.model_validate_json((folder / P3D_CONFIG).read_text())
        lm = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=dtype)
        model = cls(lm, AutoTokenizer.from_pretrained(folder), _image_processor(folder), cfg)
        model.load_state_dict(load_file(folder / P3D_MODULES), strict=False)
        return model.to(dtype)

    def _init_glyph_tables(self) -> None:
        table_MH = objects.glyph_table(self.lm, self.image_processor,
                                       [objects.draw_identifier(i) for i in range(self.cfg.num_obj_tokens)])
        with torch.no_grad():
            self.identifiers.weight.copy_(table_MH)
            # Output rows of <OBJxxx> start from the same vectors, so predicting one is reading it back.
            self.lm.get_output_embeddings().weight[self.obj_first:self.obj_first + len(table_MH)].copy_(table_MH)
        self._set_semantic(self.cfg.categories)

    def _set_semantic(self, categories: list[str]) -> None:
        names = [objects.UNKNOWN_CATEGORY, *categories]
        images = objects.category_images(names, self.cfg.glyph_folder)
        table_CH = objects.glyph_table(self.lm, self.image_processor, images)
        self.semantic = nn.Embedding(len(names), self.cfg.hidden_size).to(table_CH.device)
        with torch.no_grad():
            self.semantic.weight.copy_(table_CH)
        self.semantic.weight.requires_grad_(False)
        self.cfg.categories = list(categories)

    def ensure_categories(self, categories) -> None:
        """Extend the semantic table with unseen categories (before any distributed wrapping)."""
        new = sorted(set(categories) - set(self.cfg.categories))
        if new:
            self._set_semantic(sorted(set(self.cfg.categories) | set(new)))

    def category_ids(self, names: list[str | None]) -> list[int]:
        index = {c: i + 1 for i, c in enumerate(self.cfg.categories)}
        return [index.get(n, 0) if n else 0 for n in names]

    # ---------------------------------------------------------------- training setup
    def set_trainable(self, trainable: list[str], lora_rank: int = 16) -> list[nn.Parameter]:
        """Freeze everything, then unfreeze the named parts; returns the trainable parameters."""
        for p in self.parameters():
            p.requires_grad_(False)
        parts = {"projector": [self.projector], "position": [self.fourier], "identifiers": [self.identifiers],
                 "language_model": [self.lm.model.language_model, self.lm.lm_head]}
        for name in trainable:
            if name == "lora":
                if not self.lora_enabled:
                    add_lora(self.lm.model.language_model, lora_rank)
                    self.lora_enabled = True
                for n, p in self.lm.model.language_model.named_parameters():
                    if n.endswith((".lora_a", ".lora_b")):
                        p.requires_grad_(True)
                continue
            for module in parts[name]:
                for p in module.parameters():
                    p.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    # ---------------------------------------------------------------- forward
    def scene_vectors(self, batch: dict) -> torch.Tensor:
        """B x K x H scene token embeddings (module docstring)."""
        if batch.get("scene_feat") is not None:
            vec_BKH = self.projector(batch["scene_feat"].to(self.projector.weight.dtype))
        else:
            vec_BKH = self.semantic(batch["scene_sem"])
        ident_BK = batch["scene_ident"]
        has_id_BK1 = (ident_BK >= 0).unsqueeze(-1).to(vec_BKH.dtype)
        vec_BKH = vec_BKH + self.identifiers(ident_BK.clamp_min(0)) * has_id_BK1
        if not self.cfg.fourier_on:
            return vec_BKH
        return vec_BKH + self.fourier(batch["scene_xyz"][..., :2]).to(vec_BKH.dtype)

    def input_embeddings(self, batch: dict) -> torch.Tensor:
        input_ids_BL = batch["input_ids"]
        embeds_BLH = self.lm.get_input_embeddings()(input_ids_BL)
        obj_BL = (input_ids_BL >= self.obj_first) & (input_ids_BL < self.obj_first + self.cfg.num_obj_tokens)
        ident_BLH = self.identifiers((input_ids_BL - self.obj_first).clamp(0, self.cfg.num_obj_tokens - 1))
        embeds_BLH = torch.where(obj_BL.unsqueeze(-1), ident_BLH.to(embeds_BLH.dtype), embeds_BLH)
        scene_vec_BKH = self.scene_vectors(batch).to(embeds_BLH.dtype)
        slots_BL = input_ids_BL == self.cfg.scene_token_id
        values_NH = scene_vec_BKH[batch["scene_mask"]]
        if int(slots_BL.sum()) != values_NH.shape[0]:
            raise ValueError(f"{int(slots_BL.sum())} scene slots in the prompts but {values_NH.shape[0]} "
                             "scene tokens in the batch")
        return embeds_BLH.masked_scatter(slots_BL.unsqueeze(-1), values_NH)

    def forward(self, batch: dict):
        """With `labels`: the loss (mean cross-entropy over the labelled next tokens, as the Hugging Face
        loss) and the logits of those positions only (N x V). Without: the model's full output.

        The vocabulary projection runs only where a token is labelled (the answer): over every
        position it was ~45 % of a toy training step for nothing, since the loss is on the answer only.
        measured: docs/RESULTS.md#answer-only-logits
        """
        kwargs = dict(inputs_embeds=self.input_embeddings(batch), attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], use_cache=False)
        labels_BL = batch.get("labels")
        if labels_BL is None:
            return self.lm(**kwargs)
        hidden_BLH = self.lm.model(**kwargs).last_hidden_state
        next_BL = labels_BL[:, 1:]  # position t predicts token t + 1
        labelled_BL = next_BL != IGNORE
        logits_NV = self.lm.lm_head(hidden_BLH[:, :-1][labelled_BL])
        loss = F.cross_entropy(logits_NV.float(), next_BL[labelled_BL])
        return CausalLMOutput(loss=loss, logits=logits_NV)

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 32, prefix_cache=None,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Greedy decoding of a left-padded batch with a KV cache; stops at `<|im_end|>`. With a
        `generator`, each token is drawn from the model's distribution (temperature 1) instead.

        `prefix_cache`: the KV cache of a one-row prompt prefix every row shares, already run (a
        scene's prefix, asked many questions: p3d/ask/answer.py). It is copied, never changed;
        `batch` then holds only the tokens after the prefix, and its `attention_mask` covers prefix
        and tokens (B x (P + L)).
        """
        cache = None
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            if batch["input_ids"].shape[0] > 1:
                cache.batch_repeat_interleave(batch["input_ids"].shape[0])
        embeds_BLH = self.input_embeddings(batch)
        mask_BL = batch["attention_mask"]
        next_pos_B = batch["position_ids"][0, :, -1] + 1
        out = self.lm(inputs_embeds=embeds_BLH, attention_mask=mask_BL, position_ids=batch["position_ids"],
                      cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        B = embeds_BLH.shape[0]
        done_B = torch.zeros(B, dtype=torch.bool, device=embeds_BLH.device)
        generated: list[list[int]] = [[] for _ in range(B)]
        for _ in range(max_new_tokens):
            # The scene slot is input only: fed back, it would ask for a scene token that is not there.
            logits_BV = out.logits[:, -1].clone()
            logits_BV[:, self.cfg.scene_token_id] = float("-inf")
            next_B = (logits_BV.argmax(-1) if generator is None else
                      torch.multinomial(torch.softmax(logits_BV.float(), -1), 1, generator=generator)[:, 0])
            for b in range(B):
                if not done_B[b]:
                    generated[b].append(int(next_B[b]))
            done_B |= next_B == self.cfg.chat_end_id
            if bool(done_B.all()):
                break
            mask_BL = torch.cat([mask_BL, torch.ones_like(mask_BL[:, :1])], dim=1)
            out = self.lm(inputs_embeds=self.input_embeddings(text_only_batch(next_B[:, None])),
                          attention_mask=mask_BL, position_ids=next_pos_B.view(1, B, 1).expand(3, B, 1),
                          cache=cache, use_cache=True)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            next_pos_B = next_pos_B + 1
        return generated

    # ---------------------------------------------------------------- export
    def export(self, out_dir: str | Path, state_dict: dict | None = None, extra: dict | None = None) -> Path:
        """Write a Hugging Face folder + p3d modules atomically; `state_dict` = gathered full weights."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        state = state_dict if state_dict is not None else self.state_dict()
        lm_state = {k[3:]: v.detach().cpu().contiguous() for k, v in state.items() if k.startswith("lm.")}
        if self.lora_enabled:
            lm_state = merge_lora_state_dict(lm_state, lora_scalings(self.lm.model.language_model,
                                                                     "model.language_model."))
        p3d_state = {k: v.detach().cpu().contiguous() for k, v in state.items() if not k.startswith("lm.")}
        with atomic_dir(out_dir) as tmp:
            self.lm.save_pretrained(tmp, state_dict=lm_state)
            self.tokenizer.save_pretrained(tmp)
            self.image_processor.save_pretrained(tmp)
            save_file(p3d_state, tmp / P3D_MODULES)
            if extra:
                (tmp / "p3d_train.json").write_text(json.dumps(extra, indent=2, default=str))
            (tmp / P3D_CONFIG).write_text(self.cfg.model_dump_json(indent=2))
        return out_dir


def text_only_batch(input_ids_BL: torch.Tensor, **fields) -> dict:
    """A batch of text tokens and no scene (`input_embeddings` then places no scene vector)."""
    B = input_ids_BL.shape[0]
    return {"input_ids": input_ids_BL, "scene_mask": torch.zeros(B, 0, dtype=torch.bool),
            "scene_ident": torch.zeros(B, 0, dtype=torch.long),
            "scene_sem": torch.zeros(B, 0, dtype=torch.long), "scene_xyz": torch.zeros(B, 0, 3),
            "scene_feat": None, **fields}


def _image_processor(source: str | Path):
    # The PIL processor: the default "fast" one needs torchvision, which cannot be installed here.
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil.from_pretrained(source)
