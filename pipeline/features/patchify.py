"""Patchify and align pixel maps to the encoder's token grid (pure numpy).

Each p x p pixel patch becomes one triplet slot:
  label  the label covering the largest area inside the patch (-1 "none" competes like any label;
         ties go to the smaller label id, so a tie with "none" stays unlabeled);
  xyz    the mean of that label's pixels with valid geometry inside the patch, so the point lies on
         the object the patch is assigned to; NaN when none of them is valid;
  conf   the mean confidence over the same pixels; 0 when none is valid.
Also the nearest-neighbour resampling used for depth and masks (never blends ids or depths), and
the bilinear upsampling of encoder feature maps to a finer latent grid (the paper's 32 x 42 maps
from Qwen's 16 x 21, Table 4): points and labels are then patchified at that grid's pixel patch.

Legend: F frames, H x W pixels, h x w patches (H = h * p), L distinct labels.
"""

from __future__ import annotations

import numpy as np


def nearest_resize(maps_FHW: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resample the two axes after the first to out_hw by nearest neighbour (pixel-centre aligned)."""
    height, width = maps_FHW.shape[1:3]
    out_h, out_w = out_hw
    if (height, width) == (out_h, out_w):
        return maps_FHW
    rows = np.minimum(((np.arange(out_h) + 0.5) * height / out_h).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * width / out_w).astype(np.int64), width - 1)
    return maps_FHW[:, rows][:, :, cols]


def upsample_features(feat_FhwD: np.ndarray, grid_hw: tuple[int, int], frames_per_call: int = 8,
                      dtype: type = np.float32) -> np.ndarray:
    """Bilinear resize of F x h x w x D token maps to F x grid_h x grid_w x D (computed in float32,
    returned as `dtype`: torch's cast to float16 is vectorized, numpy's is not;
    measured: docs/RESULTS.md#half-precision-cast).

    align_corners=False (PyTorch's default, the convention of Qwen's own image resizing): each token
    is the value at the centre of its pixel cell, and an output token is sampled at the centre of
    its smaller cell, so the upsampled map stays aligned with points and labels patchified at
    H / grid_h pixels. align_corners=True would pin the corner tokens' centres to the image corners
    and shift every interior sample off its patch centre. Borders replicate the edge tokens (the
    sample positions outside the outer token centres are clamped).
    """
    import torch
    import torch.nn.functional as F

    if feat_FhwD.ndim != 4:
        raise ValueError(f"upsample_features: features must be F x h x w x D, got shape {feat_FhwD.shape}")
    if tuple(feat_FhwD.shape[1:3]) == tuple(grid_hw):
        return feat_FhwD.astype(dtype, copy=False)
    torch_dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}[np.dtype(dtype)]
    chunks = []
    for start in range(0, len(feat_FhwD), frames_per_call):  # bounds the float32 copy on a 7B's D
        chunk = torch.from_numpy(np.ascontiguousarray(feat_FhwD[start:start + frames_per_call],
                                                      dtype=np.float32)).permute(0, 3, 1, 2)
        out = F.interpolate(chunk, size=tuple(grid_hw), mode="bilinear", align_corners=False)
        chunks.append(out.permute(0, 2, 3, 1).to(torch_dtype).numpy())
    return np.concatenate(chunks)


def _to_patches(arr: np.ndarray, patch: int) -> np.ndarray:
    """F x H x W x ... -> F x h x w x (p*p) x ..."""
    num_frames, height, width = arr.shape[:3]
    rest = arr.shape[3:]
    h, w = height // patch, width // patch
    out = arr.reshape(num_frames, h, patch, w, patch, *rest)
    out = np.moveaxis(out, 3, 2)  # F h w p p ...
    return out.reshape(num_frames, h, w, patch * patch, *rest)


def _largest_area(label_FHW: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels uniq_L, compact ids F x H x W, winning compact id of each patch P = F*h*w)."""
    num_frames, height, width = label_FHW.shape
    if height % patch or width % patch:
        raise ValueError(f"patchify: image {height}x{width} is not a multiple of the patch size {patch}")
    h, w = height // patch, width // patch
    # Compact label ids 0..L-1 (sorted, so argmax ties resolve to the smaller original label).
    uniq_L, compact_FHW = np.unique(label_FHW, return_inverse=True)
    compact_FHW = compact_FHW.reshape(label_FHW.shape)
    num_labels = len(uniq_L)
    compact_PQ = _to_patches(compact_FHW, patch).reshape(num_frames * h * w, patch * patch)
    num_patches = compact_PQ.shape[0]
    flat = (np.arange(num_patches)[:, None] * num_labels + compact_PQ).ravel()
    counts_PL = np.bincount(flat, minlength=num_patches * num_labels).reshape(num_patches, num_labels)
    return uniq_L, compact_FHW, counts_PL.argmax(axis=1)


def patchify_labels(label_FHW: np.ndarray, patch: int) -> np.ndarray:
    """Labels alone (int32 F x h x w) by the same largest-area rule: ground-truth instances go onto
    the token grid exactly as the segmenter's labels do."""
    if label_FHW.ndim != 3:
        raise ValueError(f"patchify: labels must be F x H x W, got shape {label_FHW.shape}")
    num_frames, height, width = label_FHW.shape
    uniq_L, _, winner_P = _largest_area(label_FHW, patch)
    return uniq_L[winner_P].reshape(num_frames, height // patch, width // patch).astype(np.int32)


def patchify(label_FHW: np.ndarray, xyz_FHW3: np.ndarray, conf_FHW: np.ndarray,
             patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (label_Fhw int32, xyz_Fhw3 float32, conf_Fhw float32) on the h x w patch grid."""
    if label_FHW.ndim != 3 or xyz_FHW3.shape != (*label_FHW.shape, 3) or conf_FHW.shape != label_FHW.shape:
        raise ValueError(f"patchify: mismatched shapes label {label_FHW.shape}, xyz {xyz_FHW3.shape}, "
                         f"conf {conf_FHW.shape}")
    num_frames, height, width = label_FHW.shape
    uniq_L, compact_FHW, winner_P = _largest_area(label_FHW, patch)
    h, w = height // patch, width // patch

    # Sums over each patch's member pixels, on the F x h x p x w x p view (no copies of the point map).
    winner_Fhw = winner_P.reshape(num_frames, h, w)
    winner_FHW = np.repeat(np.repeat(winner_Fhw, patch, axis=1), patch, axis=2)
    xyz_view = xyz_FHW3.reshape(num_frames, h, patch, w, patch, 3)
    member_FHW = (compact_FHW == winner_FHW) & np.isfinite(xyz_FHW3).all(axis=-1)
    member_view = member_FHW.reshape(num_frames, h, patch, w, patch)
    num_members_Fhw = member_view.sum(axis=(2, 4))
    safe_Fhw = np.maximum(num_members_Fhw, 1)
    xyz_sum_Fhw3 = np.where(member_view[..., None], xyz_view, 0).sum(axis=(2, 4), dtype=np.float64)
    xyz_Fhw3 = xyz_sum_Fhw3 / safe_Fhw[..., None]
    xyz_Fhw3[num_members_Fhw == 0] = np.nan
    conf_view = conf_FHW.reshape(num_frames, h, patch, w, patch)
    conf_Fhw = np.where(member_view, conf_view, 0).sum(axis=(2, 4), dtype=np.float64) / safe_Fhw

    label_Fhw = uniq_L[winner_P].reshape(num_frames, h, w).astype(np.int32)
    return label_Fhw, xyz_Fhw3.astype(np.float32), conf_Fhw.astype(np.float32)
