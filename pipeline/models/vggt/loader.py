"""Load and save VGGT weights under the official key names.

`load_vggt` takes a weights file (`.safetensors`, or `.pt`/`.pth` read with `weights_only=True`),
a folder holding one (`model.safetensors` / `model.pt`, optional `config.json`), or a hub id that is
already in the local Hugging Face cache. Without a config of ours the model is VGGT-1B. The
checkpoint's `track_head.*` weights are dropped: p3d needs cameras, depth and points only.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.models.vggt.config import VGGTConfig
from pipeline.models.vggt.model import VGGT

WEIGHT_NAMES = ("model.safetensors", "model.pt", "model.pth", "pytorch_model.bin")
IGNORED_PREFIXES = ("track_head.",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """'auto' is float32 on CPU and bf16 (fp16 where bf16 is unsupported) on CUDA."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if torch.device(device).type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {['auto', *DTYPES]}")
    return DTYPES[dtype]


def _read_config(folder: Path) -> VGGTConfig | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"cannot parse {path}: {err}") from err
    # the official hub config holds constructor kwargs of VGGT() only: that is VGGT-1B
    return VGGTConfig.from_json(path) if isinstance(data, dict) and "aggregator" in data else None


def resolve_weights(path_or_id: str | Path) -> Path:
    """The weights file for a file, a folder, or a hub id present in the local HF cache."""
    path = Path(path_or_id).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in WEIGHT_NAMES:
            if (path / name).is_file():
                return path / name
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        raise ValueError(f"no VGGT weights ({', '.join(WEIGHT_NAMES)}) in folder {path}")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_id)):
        from huggingface_hub import try_to_load_from_cache

        for name in WEIGHT_NAMES:
            cached = try_to_load_from_cache(str(path_or_id), name)
            if isinstance(cached, str):
                return Path(cached)
        raise ValueError(
            f"VGGT checkpoint {path_or_id} is not in the local Hugging Face cache; download it first "
            f"(`huggingface-cli download {path_or_id}`) or pass a local folder or file"
        )
    raise ValueError(f"VGGT weights not found: {path_or_id}")


def read_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(weights))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"cannot read safetensors file {weights}: {err}") from err
    try:
        try:
            data = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            data = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle-free loader: anything but tensors is refused
        raise ValueError(f"cannot read checkpoint {weights} with weights_only=True: {err}") from err
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict):
        raise ValueError(f"checkpoint {weights} does not hold a state dict")  # noqa: TRY004
    return data


def _dino_depth(state: dict[str, torch.Tensor]) -> int | None:
    ids = {int(m.group(1)) for k in state if (m := re.match(r"aggregator\.patch_embed\.blocks\.(\d+)\.", k))}
    return max(ids) + 1 if ids else None


def load_vggt(path_or_id: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
              config: VGGTConfig | None = None) -> VGGT:
    """VGGT in eval mode; the aggregator in `dtype`, the heads in float32."""
    weights = resolve_weights(path_or_id)
    cfg = config or _read_config(weights.parent) or VGGTConfig.vggt_1b()
    state = {k: v for k, v in read_state_dict(weights).items() if not k.startswith(IGNORED_PREFIXES)}
    depth = _dino_depth(state)
    if cfg.aggregator.patch_embed != "conv" and depth is not None and depth != cfg.aggregator.dino_num_blocks:
        cfg = replace(cfg, aggregator=replace(cfg.aggregator, dino_depth=depth))
    with torch.device("meta"):
        model = VGGT(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"{weights}: state dict does not fit the VGGT config: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shape {wrong[:5]} ({len(wrong)})"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    compute = resolve_dtype(dtype, device)
    model.aggregator.to(compute)
    return model.to(device).eval()


def random_vggt(cfg: VGGTConfig, seed: int = 0) -> VGGT:
    """Random weights that give finite, non-degenerate outputs (toy models and tests).

    Default inits leave LayerScale at 1 and the special tokens at 0; like the reference bundle,
    perturb them, and keep the predicted field of view near 1 rad so intrinsics stay finite.
    """
    torch.manual_seed(seed)
    model = VGGT(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".gamma"):
                param.uniform_(0.05, 0.5, generator=gen)
            elif name.endswith(("_token", "_tokens", "pos_embed")):
                param.normal_(0.0, 0.5, generator=gen)
        fc2 = model.camera_head.pose_branch.fc2
        fc2.weight[7:9] *= 0.05
        fc2.bias[7:9] = 1.0
    return model.eval()


def save_vggt(model: VGGT, folder: str | Path, toy: bool = False) -> Path:
    """`config.json` + `model.safetensors` (float32), each written to a temp file then renamed.

    `toy=True` marks random-weight models in the config, so artifacts can record it.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    config_text = json.dumps({**model.cfg.to_dict(), "toy": toy}, indent=2)
    for name, write in (
        ("model.safetensors", lambda p: save_file(state, p)),
        ("config.json", lambda p: Path(p).write_text(config_text)),
    ):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, folder / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return folder
