"""Low-rank adapters on the language model's attention projections, merged back on export.

Our own small implementation (no peft dependency): the exported folder is a plain Hugging Face
checkpoint with the adapters folded into the weights, so nothing downstream needs to know about them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        # B starts at zero so the adapted model equals the base model at step 0.
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = (alpha if alpha is not None else 2.0 * rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scaling


def add_lora(language_model: nn.Module, rank: int) -> list[nn.Parameter]:
    """Wrap every target projection in place; returns the new trainable parameters."""
    params: list[nn.Parameter] = []
    for name, module in list(language_model.named_modules()):
        for child_name in TARGETS:
            child = getattr(module, child_name, None)
            if isinstance(child, nn.Linear):
                wrapped = LoRALinear(child, rank)
                setattr(module, child_name, wrapped)
                params += [wrapped.lora_a, wrapped.lora_b]
    if not params:
        raise ValueError("LoRA found no attention projections (q_proj/k_proj/v_proj/o_proj) to adapt")
    return params


def merge_lora_state_dict(state: dict[str, torch.Tensor], scaling_by_prefix: dict[str, float]) -> dict:
    """Fold `<p>.lora_a/.lora_b` into `<p>.base.weight` and rename `<p>.base.*` back to `<p>.*`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith((".lora_a", ".lora_b")):
            continue
        if ".base." in key:
            prefix, _, rest = key.rpartition(".base.")
            if rest == "weight" and f"{prefix}.lora_a" in state:
                a, b = state[f"{prefix}.lora_a"].float(), state[f"{prefix}.lora_b"].float()
                value = (value.float() + scaling_by_prefix[prefix] * (b @ a)).to(value.dtype)
            key = f"{prefix}.{rest}"
        out[key] = value
    return out


def lora_scalings(module: nn.Module, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{name}": m.scaling for name, m in module.named_modules() if isinstance(m, LoRALinear)}
