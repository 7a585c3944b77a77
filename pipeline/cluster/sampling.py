"""Farthest point sampling, FAISS nearest-center assignment and per-proxy means (paper eq. 2-3).

FPS is seeded (the first center) and otherwise deterministic: argmax takes the lowest index on
ties. FAISS runs on the GPU when faiss sees one and the problem is large enough to pay for the
transfer; `assign_nearest_numpy` is the reference both are tested against.

Legend: N points, C distance-space dims, K centers, D feature dims.
"""

from __future__ import annotations

import functools

import numpy as np

# Below this many point-center pairs a GPU round trip costs more than the search itself.
_GPU_MIN_PAIRS = 50_000_000


def _sq_dist_to(points_NC: np.ndarray, sqnorm_N: np.ndarray | None, center_C: np.ndarray) -> np.ndarray:
    if sqnorm_N is None:  # low dims: exact differences, column by column (contiguous, cheap)
        d = (points_NC[:, 0] - center_C[0]) ** 2
        for c in range(1, points_NC.shape[1]):
            d += (points_NC[:, c] - center_C[c]) ** 2
        return d
    # High dims: |p|^2 - 2 p.c + |c|^2 is one BLAS matvec instead of an N x C temporary.
    d = sqnorm_N - 2.0 * (points_NC @ center_C) + float(center_C @ center_C)
    return np.maximum(d, 0.0, out=d)


def farthest_point_sampling(points_NC: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices (int64 K) of `k` points, each the farthest from those chosen before it."""
    num = len(points_NC)
    if not 1 <= k <= num:
        raise ValueError(f"k must be in [1, {num}], got {k}")
    points_NC = np.asarray(points_NC, dtype=np.float32)
    sqnorm_N = None if points_NC.shape[1] <= 8 else np.einsum("nc,nc->n", points_NC, points_NC)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = np.random.default_rng(seed).integers(num)
    if k == 1:
        return chosen
    min_dist_N = _sq_dist_to(points_NC, sqnorm_N, points_NC[chosen[0]])
    # Chosen points sit below every distance, so coincident points are picked before a center
    # repeats: the k centers are always k distinct triplets.
    min_dist_N[chosen[0]] = -1.0
    for i in range(1, k):
        nxt = int(np.argmax(min_dist_N))
        chosen[i] = nxt
        np.minimum(min_dist_N, _sq_dist_to(points_NC, sqnorm_N, points_NC[nxt]), out=min_dist_N)
        min_dist_N[nxt] = -1.0
    return chosen


@functools.cache
def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a declared dependency
        raise ImportError("the cluster stage needs FAISS: pip install faiss-cpu (or faiss-gpu-cu12)") from e
    return faiss


@functools.cache
def _gpu_resources():
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    return faiss.StandardGpuResources()


def faiss_device() -> str:
    return "gpu" if _gpu_resources() is not None else "cpu"


def assign_nearest(points_NC: np.ndarray, centers_KC: np.ndarray) -> np.ndarray:
    """Index (int64 N) of each point's nearest center, by exact L2 search in FAISS."""
    faiss = _faiss()
    points = np.ascontiguousarray(points_NC, dtype=np.float32)
    centers = np.ascontiguousarray(centers_KC, dtype=np.float32)
    dim = points.shape[1]
    res = _gpu_resources()
    if res is not None and len(points) * len(centers) >= _GPU_MIN_PAIRS:
        index = faiss.GpuIndexFlatL2(res, dim)
    else:
        index = faiss.IndexFlatL2(dim)
    index.add(centers)
    _, nearest = index.search(points, 1)
    return nearest[:, 0].astype(np.int64)


def assign_nearest_numpy(points_NC: np.ndarray, centers_KC: np.ndarray) -> np.ndarray:
    """Brute-force reference for `assign_nearest`."""
    diff = points_NC[:, None, :].astype(np.float64) - centers_KC[None, :, :].astype(np.float64)
    return np.argmin((diff ** 2).sum(-1), axis=1).astype(np.int64)


def cluster_group(points_NC: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FPS centers + nearest-center assignment: (center indices K, proxy index N in 0..K-1).

    Each center is forced into its own cluster so that no proxy is empty even when points
    coincide (FAISS may give a duplicate point's tie to the other center)."""
    centers = farthest_point_sampling(points_NC, k, seed)
    proxy_N = assign_nearest(points_NC, points_NC[centers]) if k > 1 else np.zeros(len(points_NC), np.int64)
    proxy_N[centers] = np.arange(k)
    return centers, proxy_N


def _half_to_float_blocks(values_NX: np.ndarray, block: int):
    """Yield (column offset, float32 block) with one reused buffer.

    numpy's float16 -> float32 cast is scalar code and a fresh float32 copy page-faults on every use;
    torch's `copy_` into a resident buffer is vectorized (F16C) and much faster.
    measured: docs/RESULTS.md#half-precision-cast"""
    num_rows, num_cols = values_NX.shape
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a declared dependency
        torch = None
    if torch is None or values_NX.dtype != np.float16:
        for lo in range(0, num_cols, block):
            yield lo, values_NX[:, lo:lo + block].astype(np.float32)
        return
    source = torch.from_numpy(np.ascontiguousarray(values_NX))
    buffer = torch.empty((num_rows, min(block, num_cols)), dtype=torch.float32)
    for lo in range(0, num_cols, block):
        width = min(block, num_cols - lo)
        view = buffer[:, :width]
        view.copy_(source[:, lo:lo + width])
        yield lo, view.numpy()


def segment_mean(values_NX: np.ndarray, index_N: np.ndarray, num: int,
                 rows_N: np.ndarray | None = None) -> np.ndarray:
    """Mean (float32 num x X) of the rows sharing each index; every index must occur.

    `rows_N` names the rows of `values_NX` that `index_N` refers to (default: all, in order), so
    the caller never gathers a large feature map. A sparse (num x rows) averaging matrix is applied
    to float32 column blocks, so a half-precision 43k x 3584 map never exists in float32 at once."""
    from scipy import sparse

    rows = np.arange(len(index_N)) if rows_N is None else rows_N
    counts = np.bincount(index_N, minlength=num)
    assert len(counts) == num and (counts > 0).all(), "every proxy must have at least one member"
    weights = (1.0 / counts[index_N]).astype(np.float32)
    average = sparse.csr_matrix((weights, (index_N, rows)), shape=(num, len(values_NX)))
    num_cols = values_NX.shape[1]
    block = max(64, (1 << 22) // max(len(values_NX), 1))  # ~16 MB float32 buffer, stays in cache/RAM
    out = np.empty((num, num_cols), dtype=np.float32)
    for lo, block_f32 in _half_to_float_blocks(values_NX, block):
        out[:, lo:lo + block_f32.shape[1]] = average @ block_f32
    return out
