"""Proxy allocation: how many proxies each group gets.

Every non-empty group gets `min_per_group` (or all its triplets when it has fewer), the rest of
the budget goes proportionally to group size by the largest-remainder method, and no group gets
more proxies than it has triplets (capped groups give their share back to the others). The
total is exactly the budget whenever there are at least that many triplets. Integer arithmetic
throughout, so the result does not depend on floating-point rounding.

Legend: G groups.
"""

from __future__ import annotations

import numpy as np


def allocate_proxies(sizes_G: np.ndarray, budget: int, min_per_group: int = 1) -> np.ndarray:
    """Proxies per group (int64 G). Raises ValueError if the minimums alone exceed the budget."""
    sizes_G = np.asarray(sizes_G, dtype=np.int64)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if min_per_group < 0:
        raise ValueError(f"min_per_group must be >= 0, got {min_per_group}")
    if (sizes_G < 0).any():
        raise ValueError("group sizes must be >= 0")
    if sizes_G.sum() <= budget:  # fewer triplets than proxies: every triplet is its own proxy
        return sizes_G.copy()
    base_G = np.minimum(sizes_G, min_per_group)
    if base_G.sum() > budget:
        raise ValueError(
            f"{int((sizes_G > 0).sum())} groups x min_per_group {min_per_group} exceed the budget "
            f"{budget}; merge groups first"
        )
    cap_G = sizes_G - base_G
    extra_G = np.zeros_like(sizes_G)
    remaining = int(budget - base_G.sum())
    active = cap_G > 0
    # Water-filling: a group whose proportional share reaches its cap takes the cap and leaves
    # the pool; the others then share what is left, proportional to their sizes.
    while True:
        pool = int(sizes_G[active].sum())
        if pool == 0 or remaining == 0:
            break
        over = active & (remaining * sizes_G >= cap_G * pool)
        if not over.any():
            break
        extra_G[over] = cap_G[over]
        remaining -= int(cap_G[over].sum())
        active &= ~over
    pool = int(sizes_G[active].sum())
    if pool and remaining:
        quota = remaining * sizes_G[active]
        floor = quota // pool
        extra_G[active] = floor
        leftover = remaining - int(floor.sum())
        remainder = quota - floor * pool
        idx = np.flatnonzero(active)
        # Largest remainder first; ties go to the larger group, then the lower index.
        rank = np.lexsort((idx, -sizes_G[active], -remainder))
        extra_G[idx[rank[:leftover]]] += 1
    alloc_G = base_G + extra_G
    assert alloc_G.sum() == budget and (alloc_G <= sizes_G).all()
    return alloc_G
