"""BFS serialization of segments (paper sec. 3.1, "Proxy3D sequence serialization").

Segment centers form a symmetric k-nearest-neighbour graph. BFS starts at the segment nearest the
origin and enqueues each segment's neighbours nearest first, so spatially close segments end up
close in the sequence. When the graph falls apart into components, the next root is the
unvisited segment nearest to any visited one, which keeps the jump between components short.

Legend: S segments.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def bfs_order(centers_S3: np.ndarray, num_neighbors: int = 6) -> np.ndarray:
    """Segment indices (int64 S) in BFS visiting order."""
    centers = np.asarray(centers_S3, dtype=np.float64)
    num = len(centers)
    if num == 0:
        return np.zeros(0, dtype=np.int64)
    if num_neighbors < 1:
        raise ValueError(f"num_neighbors must be >= 1, got {num_neighbors}")
    dist_SS = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1))
    k = min(num_neighbors, num - 1)
    adjacency = np.zeros((num, num), dtype=bool)
    if k:
        # Stable sort: equal distances keep index order, so the graph is deterministic.
        by_dist = np.argsort(dist_SS, axis=1, kind="stable")
        for i in range(num):
            nearest = [j for j in by_dist[i] if j != i][:k]
            adjacency[i, nearest] = True
        adjacency |= adjacency.T
    visited = np.zeros(num, dtype=bool)
    order: list[int] = []
    root = int(np.argmin(np.linalg.norm(centers, axis=1)))
    while True:
        visited[root] = True
        queue = deque([root])
        while queue:
            node = queue.popleft()
            order.append(node)
            nbrs = np.flatnonzero(adjacency[node] & ~visited)
            nbrs = nbrs[np.argsort(dist_SS[node, nbrs], kind="stable")]
            visited[nbrs] = True
            queue.extend(int(j) for j in nbrs)
        if len(order) == num:
            break
        gap = dist_SS[np.ix_(visited, ~visited)].min(axis=0)
        root = int(np.flatnonzero(~visited)[np.argmin(gap)])
    return np.asarray(order, dtype=np.int64)
