"""Axis-aligned 3D box overlap and one-to-one matching (pure numpy + scipy).

Boxes are arrays of (center xyz, size xyz): `box_B6`. IoU is volume-based; touching boxes have IoU 0.
"""

from __future__ import annotations

import numpy as np

from schemas.manifest import Box3D


def boxes_to_array(boxes: list[Box3D]) -> np.ndarray:
    """(B, 6) float64 array of center + size; (0, 6) when empty."""
    if not boxes:
        return np.zeros((0, 6))
    return np.array([[*b.center, *b.size] for b in boxes], dtype=np.float64)


def pairwise_iou(a_A6: np.ndarray, b_B6: np.ndarray) -> np.ndarray:
    """IoU matrix (A, B) of axis-aligned boxes given as center + size."""
    a_A6 = np.asarray(a_A6, dtype=np.float64).reshape(-1, 6)
    b_B6 = np.asarray(b_B6, dtype=np.float64).reshape(-1, 6)
    if np.any(a_A6[:, 3:] < 0) or np.any(b_B6[:, 3:] < 0):
        raise ValueError("box sizes must be non-negative")
    a_lo, a_hi = a_A6[:, :3] - a_A6[:, 3:] / 2, a_A6[:, :3] + a_A6[:, 3:] / 2
    b_lo, b_hi = b_B6[:, :3] - b_B6[:, 3:] / 2, b_B6[:, :3] + b_B6[:, 3:] / 2
    inter_AB3 = np.clip(
        np.minimum(a_hi[:, None], b_hi[None]) - np.maximum(a_lo[:, None], b_lo[None]), 0.0, None
    )
    inter_AB = inter_AB3.prod(-1)
    vol_a, vol_b = a_A6[:, 3:].prod(-1), b_B6[:, 3:].prod(-1)
    union_AB = vol_a[:, None] + vol_b[None] - inter_AB
    # Degenerate (zero-volume) boxes overlap nothing; avoid 0/0.
    return np.where(union_AB > 0, inter_AB / np.where(union_AB > 0, union_AB, 1.0), 0.0)


def matched_f1(iou_PG: np.ndarray, threshold: float) -> float:
    """Multi3DRefer F1 of one query: Hungarian matching on IoU, a pair counts if IoU >= threshold.

    F1 = 2 TP / (P + G). With no GT boxes, predicting nothing scores 1 and anything else 0.
    """
    from scipy.optimize import linear_sum_assignment

    num_pred, num_gt = iou_PG.shape
    if num_gt == 0:
        return 1.0 if num_pred == 0 else 0.0
    if num_pred == 0:
        return 0.0
    rows, cols = linear_sum_assignment(-iou_PG)
    num_tp = int((iou_PG[rows, cols] >= threshold).sum())
    return 2.0 * num_tp / (num_pred + num_gt)
