"""Segmenter backend `sam2`: SAM 2 automatic masks per frame, then one id per object across frames.

transformers' `Sam2Model` runs directly: its processor and the `mask-generation` pipeline need
torchvision, which this stack cannot install, so preprocessing is ours (resize to the model's
square input, rescale, ImageNet mean/std from the checkpoint's preprocessor config when present).
Automatic masks follow SAM's recipe: a regular grid of single-point prompts, the best of the three
multimask outputs by predicted IoU, filters on predicted IoU, stability and area, then greedy
mask NMS. Across frames, masks are merged by the overlap of their 3D points (mask_merge.py).

Batched (`frame_labels`): the image encoder takes `frames_per_batch` frames per call, and one
mask-decoder call takes up to `points_per_batch` (frame, prompt) pairs across frames, so a scene
costs a few large calls instead of F image calls and F x N / points_per_batch small ones. The
naive per-frame order (`frame_masks`) stays as the reference: both give the same masks (tested)
and benchmarks/features.py times one against the other. Attention runs through PyTorch's SDPA.

Legend: F frames, H x W pixels, S x S model input, N prompts, M masks, s x s low-res mask logits,
B frames in one call, P prompts per frame in one call.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.models.mask_merge import merge_frames_3d, paint_masks
from pipeline.models.protocols import SensorFrames
from pipeline.models.resolve import UNTRAINED_MARKER
from schemas.store import ModelRef

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STABILITY_OFFSET = 1.0  # logit margin of SAM's stability score


def point_grid(points_per_side: int) -> np.ndarray:
    """N x 2 (x, y) in [0, 1]: cell centres of a points_per_side^2 grid, as SAM's generator."""
    offsets = (np.arange(points_per_side) + 0.5) / points_per_side
    xs, ys = np.meshgrid(offsets, offsets)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def mask_nms(masks_MHW: np.ndarray, scores_M: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Indices kept by greedy NMS on mask IoU, best score first."""
    order = np.argsort(-scores_M, kind="stable")
    flat = masks_MHW.reshape(len(masks_MHW), -1).astype(np.float32)
    areas = flat.sum(axis=1)
    keep: list[int] = []
    for i in order:
        if keep:
            inter = flat[keep] @ flat[i]
            iou = inter / np.maximum(areas[keep] + areas[i] - inter, 1)
            if np.any(iou > iou_thresh):
                continue
        keep.append(int(i))
    return np.array(keep, dtype=np.int64)


class SAM2Segmenter:
    def __init__(self, model: str, revision: str | None = None, device: str = "cpu",
                 points_per_side: int = 16, points_per_batch: int = 64, pred_iou_thresh: float = 0.7,
                 stability_thresh: float = 0.9, min_mask_area: float = 0.002, nms_iou: float = 0.7,
                 merge_voxel: float = 0.05, merge_min_overlap: float = 0.3, trained: bool = True,
                 frames_per_batch: int = 8, attn_implementation: str = "sdpa"):
        import torch
        from transformers import Sam2Model

        self.net = Sam2Model.from_pretrained(model, revision=revision,
                                             attn_implementation=attn_implementation).to(device).eval()
        self.frames_per_batch = frames_per_batch
        self.device = device
        self.input_size = int(self.net.config.prompt_encoder_config.image_size)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        try:
            from transformers.utils import cached_file

            pre = cached_file(model, "preprocessor_config.json", revision=revision,
                              _raise_exceptions_for_missing_entries=False)
        except OSError:
            pre = None
        if pre:
            data = json.loads(Path(pre).read_text())
            mean, std = data.get("image_mean", mean), data.get("image_std", std)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.points_per_side, self.points_per_batch = points_per_side, points_per_batch
        self.pred_iou_thresh, self.stability_thresh = pred_iou_thresh, stability_thresh
        self.min_mask_area, self.nms_iou = min_mask_area, nms_iou
        self.merge_voxel, self.merge_min_overlap = merge_voxel, merge_min_overlap
        self.ref = ModelRef(kind="sam2", model=model, revision=revision, trained=trained)

    def preprocess(self, images_FHW3: np.ndarray):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(images_FHW3)).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return ((x - self.mean) / self.std).to(self.device)

    def _filtered(self, out, num_frames: int, num_prompts: int, height: int, width: int):
        """Decoder output for B frames x P prompts -> per frame (bool masks, scores) passing SAM's filters."""
        import torch
        import torch.nn.functional as F

        iou_BP3 = out.iou_scores.float()
        best_BP = iou_BP3.argmax(dim=2)
        logits_BPss = torch.gather(out.pred_masks.float(), 2, best_BP[:, :, None, None, None].expand(
            -1, -1, 1, *out.pred_masks.shape[-2:]))[:, :, 0]
        score_BP = torch.gather(iou_BP3, 2, best_BP[..., None])[..., 0]
        logits_BPHW = F.interpolate(logits_BPss.flatten(0, 1)[:, None], size=(height, width), mode="bilinear",
                                    align_corners=False)[:, 0].view(num_frames, num_prompts, height, width)
        hi = (logits_BPHW > STABILITY_OFFSET).flatten(2).sum(2).float()
        lo = (logits_BPHW > -STABILITY_OFFSET).flatten(2).sum(2).float()
        stability_BP = hi / lo.clamp(min=1)
        binary_BPHW = logits_BPHW > 0
        area_BP = binary_BPHW.flatten(2).sum(2).float() / (height * width)
        keep_BP = (score_BP >= self.pred_iou_thresh) & (stability_BP >= self.stability_thresh) \
            & (area_BP >= max(self.min_mask_area, 1.0 / (height * width)))
        return [(binary_BPHW[b][keep_BP[b]].cpu().numpy(), score_BP[b][keep_BP[b]].cpu().numpy())
                for b in range(num_frames)]

    def _prompts(self):
        import torch

        return torch.from_numpy(point_grid(self.points_per_side) * self.input_size).float().to(self.device)

    @staticmethod
    def _nms_frame(parts: list[tuple[np.ndarray, np.ndarray]], height: int, width: int, nms_iou: float):
        masks_MHW = np.concatenate([m for m, _ in parts]) if parts else np.zeros((0, height, width), bool)
        scores_M = np.concatenate([s for _, s in parts]) if parts else np.zeros(0, np.float32)
        if len(masks_MHW) == 0:
            return masks_MHW, scores_M
        keep = mask_nms(masks_MHW, scores_M, nms_iou)
        return masks_MHW[keep], scores_M[keep]

    def frame_masks(self, image_HW3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Automatic masks of one frame, the naive order (one image call, then prompt chunks):
        bool M x H x W and their scores (predicted IoU)."""
        import torch

        height, width = image_HW3.shape[:2]
        grid_N2 = self._prompts()
        parts = []
        with torch.inference_mode():
            embeddings = self.net.get_image_embeddings(self.preprocess(image_HW3[None]))
            for start in range(0, len(grid_N2), self.points_per_batch):
                pts = grid_N2[start:start + self.points_per_batch]
                out = self.net(image_embeddings=embeddings, input_points=pts[None, :, None, :],
                               input_labels=torch.ones(1, len(pts), 1, dtype=torch.long, device=self.device),
                               multimask_output=True)
                parts += self._filtered(out, 1, len(pts), height, width)
        return self._nms_frame(parts, height, width, self.nms_iou)

    def batch_masks(self, images_FHW3: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """`frame_masks` of every frame, batched across frames and prompts."""
        import torch

        num_frames, height, width = images_FHW3.shape[:3]
        grid_N2 = self._prompts()
        num_prompts = min(len(grid_N2), self.points_per_batch)  # P prompts of each frame per call
        frames_per_call = max(1, self.points_per_batch // num_prompts)  # B frames per call: B x P <= budget
        parts: list[list] = [[] for _ in range(num_frames)]
        with torch.inference_mode():
            embeddings = []  # per frame, per feature level: 1 x C x h x w
            for lo in range(0, num_frames, self.frames_per_batch):
                levels = self.net.get_image_embeddings(self.preprocess(images_FHW3[lo:lo + self.frames_per_batch]))
                embeddings += [[level[b:b + 1] for level in levels] for b in range(len(levels[0]))]
            for f0 in range(0, num_frames, frames_per_call):
                frames = range(f0, min(f0 + frames_per_call, num_frames))
                batch_embeddings = [torch.cat([embeddings[f][i] for f in frames]) for i in range(len(embeddings[0]))]
                for start in range(0, len(grid_N2), num_prompts):
                    pts = grid_N2[start:start + num_prompts]
                    out = self.net(image_embeddings=batch_embeddings,
                                   input_points=pts[None, :, None, :].expand(len(frames), -1, -1, -1),
                                   input_labels=torch.ones(len(frames), len(pts), 1, dtype=torch.long,
                                                           device=self.device),
                                   multimask_output=True)
                    for f, part in zip(frames, self._filtered(out, len(frames), len(pts), height, width)):
                        parts[f].append(part)
        return [self._nms_frame(p, height, width, self.nms_iou) for p in parts]

    def frame_labels(self, images_FHW3: np.ndarray) -> np.ndarray:
        """Per-frame label maps (ids not shared across frames), int32 F x H x W, -1 = none."""
        labels = []
        for image_HW3, (masks_MHW, _) in zip(images_FHW3, self.batch_masks(images_FHW3)):
            labels.append(paint_masks(masks_MHW) if len(masks_MHW)
                          else np.full(image_HW3.shape[:2], -1, np.int32))
        return np.stack(labels)

    def segment(self, images_FHW3: np.ndarray, sensor: SensorFrames,
                xyz_FHW3: np.ndarray | None = None) -> np.ndarray:
        if xyz_FHW3 is None:
            raise ValueError(f"scene {sensor.scene_id}: segmenter 'sam2' merges masks across frames by "
                             "their 3D points and needs the geometry's point maps")
        return merge_frames_3d(self.frame_labels(images_FHW3), xyz_FHW3, self.merge_voxel,
                               self.merge_min_overlap)


def load_segmenter(config, data_root, device: str = "cpu") -> SAM2Segmenter:
    """Factory for the registry: `config` is a `schemas.config_features.SegmenterConfig`.
    `random:` and `toy:` ids are built under `<data_root>/models` on first use (pipeline/models/resolve.py)."""
    from pipeline.models.resolve import resolve_model

    model = resolve_model(config.model, data_root, family="sam2")
    segmenter = SAM2Segmenter(model, revision=config.revision, device=device,
                              points_per_side=config.points_per_side, points_per_batch=config.points_per_batch,
                              pred_iou_thresh=config.pred_iou_thresh, stability_thresh=config.stability_thresh,
                              min_mask_area=config.min_mask_area, nms_iou=config.nms_iou,
                              merge_voxel=config.merge_voxel, merge_min_overlap=config.merge_min_overlap,
                              frames_per_batch=config.frames_per_batch,
                              trained=not (Path(model) / UNTRAINED_MARKER).exists())
    segmenter.ref = segmenter.ref.model_copy(update={"model": config.model})
    return segmenter
