"""Encoder backend: the vision tower of any Qwen2.5-VL checkpoint, without its language model.

Only the vision config is read and only tensors under the vision prefix are loaded (safetensors are
read tensor by tensor, and shards without vision tensors are never opened), so a 7B checkpoint costs
the ~0.7B vision tower's memory. Preprocessing mirrors `Qwen2VLImageProcessor` (rescale, normalize
with the checkpoint's mean/std, 14 px patches laid out merge-block-major, each still frame repeated
over the temporal patch), done in torch so frames batch; a test checks it against the PIL processor.

Two modes, as in the paper's ablation:
  per frame  every frame is its own image (grid t = 1);
  video      frames go in as one video: consecutive pairs share a temporal patch (the model's own
             video path), so both frames of a pair get the same token map. Qwen2.5-VL's attention
             stays within one temporal slice in both modes; the temporal patch is where frames mix.

Legend: F frames, H x W pixels, h x w merged tokens (H = 28 h for Qwen2.5-VL), D output dim,
C vision width, T temporal slices, N flattened patches.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.models.protocols import EncoderOutput
from schemas.store import ModelRef

log = logging.getLogger(__name__)

VISION_PREFIXES = ("model.visual.", "visual.")  # transformers >= 4.52 layout, then the hub's original
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _cached(model: str, name: str, revision: str | None) -> str | None:
    from transformers.utils import cached_file

    return cached_file(model, name, revision=revision, _raise_exceptions_for_missing_entries=False)


def _weight_files(model: str, revision: str | None) -> list[str]:
    """Files that hold vision tensors: the index names them, so other shards are never fetched."""
    index = _cached(model, "model.safetensors.index.json", revision)
    if index:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        shards = sorted({f for k, f in weight_map.items() if k.startswith(VISION_PREFIXES)})
        return [_cached(model, s, revision) for s in shards]
    single = _cached(model, "model.safetensors", revision)
    if single:
        return [single]
    legacy = _cached(model, "pytorch_model.bin", revision)
    if legacy:
        return [legacy]
    raise ValueError(f"encoder {model}: no model.safetensors(.index.json) or pytorch_model.bin found")


def load_vision_state_dict(model: str, revision: str | None = None) -> dict:
    import torch
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(model, revision):
        if path.endswith(".bin"):
            full = torch.load(path, map_location="cpu", weights_only=True)
            items = ((k, full[k]) for k in list(full))
        else:
            handle = safe_open(path, framework="pt")
            items = ((k, handle.get_tensor(k)) for k in handle.keys() if k.startswith(VISION_PREFIXES))
        for key, tensor in items:
            for prefix in VISION_PREFIXES:
                if key.startswith(prefix):
                    state[key[len(prefix):]] = tensor
                    break
    if not state:
        raise ValueError(f"encoder {model}: checkpoint has no tensors under {' or '.join(VISION_PREFIXES)}")
    return state


class QwenVisionEncoder:
    def __init__(self, model: str, revision: str | None = None, device: str = "cpu", dtype: str = "auto",
                 video_mode: bool = False, keep_premerge: bool = False, trained: bool = True,
                 frames_per_batch: int = 8):
        import torch
        from transformers import AutoConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VisionTransformerPretrainedModel,
        )

        config = AutoConfig.from_pretrained(model, revision=revision)
        if getattr(config, "model_type", None) != "qwen2_5_vl":
            raise ValueError(f"encoder {model}: expected a qwen2_5_vl checkpoint, got {config.model_type!r}")
        vision_config = config.vision_config
        torch_dtype = {"auto": torch.float32 if device == "cpu" else torch.bfloat16, "float32": torch.float32,
                       "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        net = Qwen2_5_VisionTransformerPretrainedModel._from_config(vision_config)
        missing, unexpected = net.load_state_dict(load_vision_state_dict(model, revision), strict=False)
        # Rotary inv_freq is a non-persistent buffer recomputed from the config, never in checkpoints.
        missing = [k for k in missing if not k.endswith("inv_freq")]
        if missing or unexpected:
            raise ValueError(f"encoder {model}: vision weights do not match the config "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        self.net = net.to(device=device, dtype=torch_dtype).eval()
        self.device, self.dtype = device, torch_dtype
        self.video_mode, self.keep_premerge = video_mode, keep_premerge
        self.frames_per_batch = max(2, frames_per_batch - frames_per_batch % 2)

        pre_path = _cached(model, "preprocessor_config.json", revision)
        pre = json.loads(Path(pre_path).read_text()) if pre_path else {}
        self.mean = tuple(pre.get("image_mean", CLIP_MEAN))
        self.std = tuple(pre.get("image_std", CLIP_STD))
        self.rescale = float(pre.get("rescale_factor", 1 / 255))
        self.vit_patch = int(vision_config.patch_size)
        self.merge = int(vision_config.spatial_merge_size)
        self.temporal_patch = int(vision_config.temporal_patch_size)
        self.patch_size = self.vit_patch * self.merge
        self.dim = int(vision_config.out_hidden_size)
        self.ref = ModelRef(kind="qwen2_5_vl", model=model, revision=revision, trained=trained)

    # -- preprocessing -------------------------------------------------------------------------------
    def pixel_patches(self, images_FHW3: np.ndarray, video: bool):
        """Flattened patches N x (3 * temporal * 14 * 14) and grid_thw rows, as the Qwen processor lays them."""
        import torch

        num_frames, height, width = images_FHW3.shape[:3]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"encoder: frame size {height}x{width} must be a multiple of {self.patch_size} px")
        x_F3HW = torch.from_numpy(np.ascontiguousarray(images_FHW3)).permute(0, 3, 1, 2).to(torch.float32)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        x_F3HW = (x_F3HW * self.rescale - mean) / std
        tp = self.temporal_patch
        if video:
            pad = (-num_frames) % tp
            if pad:  # the processor pads a clip by repeating its last frame
                x_F3HW = torch.cat([x_F3HW, x_F3HW[-1:].expand(pad, -1, -1, -1)])
            groups = x_F3HW.reshape(-1, tp, 3, height, width)  # T tp 3 H W
        else:
            groups = x_F3HW[:, None].expand(-1, tp, -1, -1, -1)  # a still image fills its temporal patch
        num_t = groups.shape[0]
        gh, gw, m, p = height // self.vit_patch, width // self.vit_patch, self.merge, self.vit_patch
        patches = groups.reshape(num_t, tp, 3, gh // m, m, p, gw // m, m, p)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # T, h, w, m, m, 3, tp, p, p
        patches_ND = patches.reshape(num_t * gh * gw, 3 * tp * p * p)
        if video:
            grid = [[num_t, gh, gw]]
        else:
            grid = [[1, gh, gw]] * num_t
        return patches_ND, torch.tensor(grid, dtype=torch.long)

    # -- forward -------------------------------------------------------------------------------------
    def _forward(self, images_FHW3: np.ndarray, video: bool):
        import torch
        from transformers.vision_utils import get_vision_window_index

        patches_ND, grid_thw = self.pixel_patches(images_FHW3, video)
        out = self.net(patches_ND.to(self.device, self.dtype), grid_thw=grid_thw.to(self.device))
        num_t = int(grid_thw[:, 0].sum())
        gh, gw = int(grid_thw[0, 1]), int(grid_thw[0, 2])
        h, w, m = gh // self.merge, gw // self.merge, self.merge
        feat_ThwD = out.pooler_output.float().reshape(num_t, h, w, -1).cpu()
        premerge = None
        if self.keep_premerge:
            # last_hidden_state is in window-attention order; undo it per merge block, then unfold blocks.
            window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=m,
                                                      window_size=self.net.window_size,
                                                      patch_size=self.vit_patch)
            hidden = out.last_hidden_state.float().reshape(-1, m * m, out.last_hidden_state.shape[-1])
            hidden = hidden[torch.argsort(window_index.to(hidden.device))]
            premerge = hidden.reshape(num_t, h, w, m, m, -1).permute(0, 1, 3, 2, 4, 5)
            premerge = premerge.reshape(num_t, gh, gw, -1).cpu()
        return feat_ThwD, premerge

    def encode(self, images_FHW3: np.ndarray) -> EncoderOutput:
        import torch

        if images_FHW3.ndim != 4 or images_FHW3.shape[-1] != 3 or images_FHW3.dtype != np.uint8:
            raise ValueError(f"encoder: expected uint8 F x H x W x 3 frames, got {images_FHW3.dtype} "
                             f"{images_FHW3.shape}")
        num_frames = len(images_FHW3)
        feats, premerges = [], []
        with torch.inference_mode():
            for start in range(0, num_frames, self.frames_per_batch):
                chunk = images_FHW3[start:start + self.frames_per_batch]
                feat, premerge = self._forward(chunk, self.video_mode)
                if self.video_mode:  # one map per temporal pair -> one per frame
                    feat = feat.repeat_interleave(self.temporal_patch, 0)[: len(chunk)]
                    premerge = None if premerge is None else \
                        premerge.repeat_interleave(self.temporal_patch, 0)[: len(chunk)]
                feats.append(feat)
                premerges.append(premerge)
        feat_FhwD = torch.cat(feats).numpy()
        premerge_F = torch.cat(premerges).numpy() if self.keep_premerge else None
        return EncoderOutput(feat_FhwD=feat_FhwD, premerge_FHpWpC=premerge_F)


def load_encoder(config, data_root, device: str = "cpu") -> QwenVisionEncoder:
    """Factory for the registry: `config` is a `schemas.config_features.EncoderConfig`."""
    from pipeline.models.resolve import is_untrained, resolve_model

    folder = resolve_model(config.model, data_root)
    trained = not (Path(folder).is_dir() and is_untrained(folder))
    encoder = QwenVisionEncoder(folder, revision=config.revision, device=device, dtype=config.dtype,
                                video_mode=config.video_mode, keep_premerge=config.keep_premerge,
                                trained=trained, frames_per_batch=config.frames_per_batch)
    encoder.ref = encoder.ref.model_copy(update={"model": config.model})  # the id, not a local folder
    return encoder
