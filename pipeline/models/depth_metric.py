"""Metric depth backend `depth_anything`: Depth Anything V2 metric indoor, through transformers.

VGGT's points are up to scale. Where a source has neither sensor poses nor sensor depth (a plain
video, VSI-Bench), this model's metric depth gives the metres (pipeline/features/align.py,
`metric_depth_scale`). Any `AutoModelForDepthEstimation` checkpoint whose `depth_estimation_type` is
"metric" works; a relative-depth checkpoint is refused, since its output has no unit.

Preprocessing is ours and mirrors the checkpoint's `DPTImageProcessor` (the fast one needs
torchvision, which this stack cannot install): keep the aspect ratio, scale by the factor of the
side closer to the model's input size (518), round both sides to a multiple of 14, bicubic resize,
rescale to [0, 1], normalize with the checkpoint's mean/std. The prediction is resized back to the
frames' H x W bicubically, as `post_process_depth_estimation` does.

Legend: F frames, H x W pixels, h x w network input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.models.resolve import UNTRAINED_MARKER
from schemas.store import ModelRef

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 518  # Depth Anything V2's training resolution
MULTIPLE = 14  # DINOv2 patch size


def network_size(image_hw: tuple[int, int], size: int = INPUT_SIZE, multiple: int = MULTIPLE
                 ) -> tuple[int, int]:
    """DPT's `keep_aspect_ratio` + `ensure_multiple_of`: one scale for both sides, the one closer to 1."""
    height, width = image_hw
    scale_h, scale_w = size / height, size / width
    scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (height, width))


class MetricDepthModel:
    def __init__(self, model: str, revision: str | None = None, device: str = "cpu", dtype: str = "auto",
                 frames_per_batch: int = 8, trained: bool = True):
        import torch
        from transformers import AutoModelForDepthEstimation

        net = AutoModelForDepthEstimation.from_pretrained(model, revision=revision)
        kind = getattr(net.config, "depth_estimation_type", None)
        if kind != "metric":
            raise ValueError(f"depth model {model}: depth_estimation_type is {kind!r}, not 'metric': its "
                             "depth has no unit and cannot give metres (use a *-Metric-* checkpoint)")
        self.dtype = {"auto": torch.float32 if device == "cpu" else torch.bfloat16, "float32": torch.float32,
                      "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.net = net.to(device=device, dtype=self.dtype).eval()
        self.device, self.frames_per_batch = device, frames_per_batch
        pre = _preprocessor_config(model, revision)
        self.mean = torch.tensor(pre.get("image_mean", IMAGENET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.get("image_std", IMAGENET_STD)).view(1, 3, 1, 1)
        size = pre.get("size", {})
        self.input_size = int(size.get("height", INPUT_SIZE)) if isinstance(size, dict) else INPUT_SIZE
        self.ref = ModelRef(kind="depth_anything", model=model, revision=revision, trained=trained)

    def preprocess(self, images_FHW3: np.ndarray):
        """uint8 F x H x W x 3 -> normalized float32 F x 3 x h x w (as DPTImageProcessor)."""
        import torch
        import torch.nn.functional as F

        net_hw = network_size(images_FHW3.shape[1:3], self.input_size)
        x = torch.from_numpy(np.ascontiguousarray(images_FHW3)).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=net_hw, mode="bicubic", align_corners=False, antialias=True)
        return (x.clamp(0, 255) / 255.0 - self.mean) / self.std

    def predict(self, images_FHW3: np.ndarray) -> np.ndarray:
        """Metric depth in metres (float32 F x H x W, >= 0) of uint8 RGB frames."""
        import torch
        import torch.nn.functional as F

        if images_FHW3.ndim != 4 or images_FHW3.shape[-1] != 3 or images_FHW3.dtype != np.uint8:
            raise ValueError(f"depth model: frames must be uint8 F x H x W x 3, got {images_FHW3.dtype} "
                             f"{images_FHW3.shape}")
        image_hw = images_FHW3.shape[1:3]
        out = []
        with torch.inference_mode():
            for start in range(0, len(images_FHW3), self.frames_per_batch):
                x = self.preprocess(images_FHW3[start:start + self.frames_per_batch])
                depth = self.net(pixel_values=x.to(self.device, self.dtype)).predicted_depth.float()[:, None]
                depth = F.interpolate(depth, size=image_hw, mode="bicubic", align_corners=False)
                out.append(depth[:, 0].clamp_min(0).cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def _preprocessor_config(model: str, revision: str | None) -> dict:
    from transformers.utils import cached_file

    path = cached_file(model, "preprocessor_config.json", revision=revision,
                       _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(path).read_text()) if path else {}


def load_depth_model(config, data_root, device: str = "cpu") -> MetricDepthModel:
    """Factory for the registry: `config` is a `schemas.config_features.DepthModelConfig`.
    `toy:depth_anything` is built under `<data_root>/models/depth_anything` on first use."""
    from pipeline.models.resolve import resolve_model

    model = resolve_model(config.model, data_root, family="depth_anything")
    depth = MetricDepthModel(model, revision=config.revision, device=device, dtype=config.dtype,
                             trained=not (Path(model) / UNTRAINED_MARKER).exists())
    depth.ref = depth.ref.model_copy(update={"model": config.model})
    return depth
