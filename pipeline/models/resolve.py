"""A model id -> what `from_pretrained` loads.

A hub id (`Qwen/Qwen2.5-VL-7B-Instruct`) or a local folder stays as it is. An id `<scheme>:<name>`
goes to the scheme's plugin (schemas/plugins.py, group `p3d.model_ids`), which returns the folder of
the model, built on first use under `<data root>/models`: `random:` the real architectures with random
weights (real_configs.py), `toy:` the toy world's tiny models (pipeline/toy/models.py).
"""

from __future__ import annotations

import re
from pathlib import Path

# The file a builder leaves in a model folder whose weights are random: loaders report "untrained".
UNTRAINED_MARKER = "p3d_toy.json"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):(?!//)")


def id_scheme(model: str) -> str | None:
    """`random` for `random:qwen2_5_vl_7b`; None for a hub id or a folder."""
    match = _SCHEME.match(model)
    return None if match is None or Path(model).exists() else match.group(1)


def resolve_model(model: str, data_root: str | Path, family: str = "qwen2_5_vl") -> str:
    """The hub id or folder `model` names; `family` is what the caller can load (qwen2_5_vl, sam2, ...)."""
    from schemas.plugins import MODEL_IDS, load

    scheme = id_scheme(model)
    if scheme is None:
        return model
    return str(load(MODEL_IDS, scheme)(model, data_root, family))


def is_untrained(folder: str | Path) -> bool:
    """True for a folder p3d built with random weights (`random:` and `toy:` ids)."""
    return (Path(folder) / UNTRAINED_MARKER).exists()
