"""Kill-safe training checkpoints: save, choose, check and load them without executing a pickle.

Layout under `stage<N>/checkpoints/`:
    <tag>/            DeepSpeed's files (`mp_rank_*_model_states.pt`, `*_optim_states.pt`) and p3d's
                      resume state per rank (`p3d_state_rank<r>.json` + `.safetensors`: RNGs, data position)
    p3d_latest.json   {"tag", "step", "config_hash", "config"}: the one file resume reads to pick a tag

A save writes a fresh `<tag>/` (every rank: DeepSpeed's files, then p3d's state), waits for all ranks,
then rank 0 moves `p3d_latest.json` to it (temporary file, fsync, rename) and only then deletes the
other tag folders. A kill at any moment therefore leaves the marker on a complete checkpoint: before
the rename the previous one, which is still there; after it the new one. DeepSpeed's own `latest`
file (written before p3d's state, so a kill in between used to break `--resume`) is neither written
(`save_latest=False`) nor read.

The marker records the run's identity (the stage's config, the train settings that change what is
learned, the data root and the world size); `--resume` refuses a checkpoint made under another one
and names the fields, unless told (`allow_changed`).

No pickle is executed: DeepSpeed's `.pt` files are `torch.save` archives, and p3d installs a
checkpoint engine that reads them with `torch.load(weights_only=True)` (torch's restricted
unpickler: tensors, containers, numbers, strings, and the few DeepSpeed/torch classes listed in
`_allowed_globals`, nothing else). p3d's own state is safetensors and JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from schemas.io import atomic_open, write_json_atomic
from trainer import env

log = logging.getLogger("p3d.train")
MARKER = "p3d_latest.json"
# Settings that decide where checkpoints and logs go or how often, not what is learned.
_NOT_IDENTITY = ("stages", "out", "save_every", "log_every")


class ResumeConfigError(ValueError):
    """`--resume` met a checkpoint made under another configuration."""


# ------------------------------------------------------------------ identity of a run
def run_identity(data_root: str, cfg, scfg, world_size: int) -> dict[str, Any]:
    """Flat `field -> value` (JSON values) of everything a resumed run must share with the saved one."""
    ident: dict[str, Any] = {"out": str(data_root), "world_size": world_size}
    train = json.loads(cfg.model_dump_json())
    ident.update({f"train.{k}": v for k, v in train.items() if k not in _NOT_IDENTITY})
    stage = json.loads(scfg.model_dump_json())
    ident.update({f"train.stages[stage={scfg.stage}].{k}": v for k, v in stage.items()})
    return ident


def identity_defaults(cfg, scfg) -> dict[str, Any]:
    """`run_identity`'s keys that have a default, with it (JSON values): what a setting added to p3d
    after a checkpoint was made means when that checkpoint does not record it."""
    from pydantic_core import to_jsonable_python

    def defaults(model, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        return {f"{prefix}.{k}": to_jsonable_python(f.get_default(call_default_factory=True))
                for k, f in type(model).model_fields.items() if k not in skip and not f.is_required()}

    return {**defaults(cfg, "train", _NOT_IDENTITY), **defaults(scfg, f"train.stages[stage={scfg.stage}]")}


def identity_hash(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def config_changes(saved: dict[str, Any], now: dict[str, Any],
                   defaults: dict[str, Any] | None = None) -> list[str]:
    """`field: saved -> now` for each field that differs (added and removed fields included).

    A field the saved identity lacks counts as unchanged when it is now at its default (`defaults`):
    p3d gives a new setting the default that keeps the former behaviour (e.g. `replay_per_task: 1`,
    one replayed record as before the field existed), so a run interrupted before the update resumes
    without --allow-changed-config."""
    missing = object()
    defaults = defaults or {}
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, missing), now.get(key, missing)
        if a is missing and key in defaults and b == defaults[key]:
            continue
        if a != b:
            fmt = lambda v: "(absent)" if v is missing else json.dumps(v)  # noqa: E731
            out.append(f"{key}: {fmt(a)} -> {fmt(b)}")
    return out


# ------------------------------------------------------------------ the marker
def read_marker(ckpt_dir: Path) -> dict | None:
    path = ckpt_dir / MARKER
    if not path.exists():
        return None
    return json.loads(path.read_text())


def check_resume(ckpt_dir: Path, data_root: str, cfg, scfg, world_size: int, allow_changed: bool) -> dict | None:
    """The marker to resume from (None: no complete checkpoint), refusing a run whose identity
    (`run_identity`) changed (`config_changes`, with `identity_defaults`)."""
    marker = read_marker(ckpt_dir)
    if marker is None:
        return None
    changes = config_changes(marker["config"], run_identity(data_root, cfg, scfg, world_size),
                             identity_defaults(cfg, scfg))
    if changes and not allow_changed:
        raise ResumeConfigError(
            f"{ckpt_dir / marker['tag']}: the checkpoint was made with another configuration ("
            + "; ".join(changes) + "); resume with the same settings, or pass --allow-changed-config "
            "to continue from it anyway")
    if changes:
        log.warning("resuming %s under a changed configuration: %s", marker["tag"], "; ".join(changes))
    return marker


def forget(ckpt_dir: Path) -> None:
    """A fresh (not resumed) run: no earlier checkpoint may be resumed from any more."""
    (ckpt_dir / MARKER).unlink(missing_ok=True)


# ------------------------------------------------------------------ save
def save(engine, ckpt_dir: Path, step: int, state: dict, ident: dict[str, Any]) -> None:
    """Write checkpoint `step<step>` on every rank, then point the marker at it and prune the others."""
    import torch.distributed as dist

    tag = f"step{step:07d}"
    marker = read_marker(ckpt_dir)
    assert marker is None or marker["tag"] != tag, f"checkpoint {tag} is already the resume point"
    if env.rank() == 0:
        shutil.rmtree(ckpt_dir / tag, ignore_errors=True)  # a folder left by a save that was killed
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, save_latest=False)
    _save_state(ckpt_dir / tag, state)
    dist.barrier()  # every rank's files are in place before the marker names them
    if env.rank() == 0:
        write_json_atomic(ckpt_dir / MARKER, {"tag": tag, "step": step, "config_hash": identity_hash(ident),
                                              "config": ident})
        for old in ckpt_dir.iterdir():
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
        (ckpt_dir / "latest").unlink(missing_ok=True)  # DeepSpeed's, from checkpoints before p3d's marker
    dist.barrier()


def _save_state(tag_dir: Path, state: dict) -> None:
    import torch
    from safetensors.torch import save

    r = env.rank()
    np_state = np.random.get_state()
    tensors = {"torch_rng": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    meta = dict(state, python_rng=repr(random.getstate()), numpy_pos=int(np_state[2]),
                numpy_gauss=[int(np_state[3]), float(np_state[4])])
    with atomic_open(tag_dir / f"p3d_state_rank{r}.safetensors", "wb") as f:
        f.write(save(tensors))
    write_json_atomic(tag_dir / f"p3d_state_rank{r}.json", meta)


# ------------------------------------------------------------------ load
def load(engine, ckpt_dir: Path, tag: str) -> dict:
    """Load DeepSpeed's state (weights-only) and p3d's (safetensors/JSON) from `tag`; returns p3d's."""
    use_weights_only_loading(engine)
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if load_path is None:
        raise ValueError(f"{ckpt_dir / tag}: DeepSpeed could not load this checkpoint")
    return _load_state(ckpt_dir / tag)


def _load_state(tag_dir: Path) -> dict:
    import ast

    import torch
    from safetensors.torch import load_file

    r = env.rank()
    meta = json.loads((tag_dir / f"p3d_state_rank{r}.json").read_text())
    tensors = load_file(tag_dir / f"p3d_state_rank{r}.safetensors")
    torch.set_rng_state(tensors["torch_rng"])
    np.random.set_state(("MT19937", tensors["numpy_keys"].numpy().astype(np.uint32), meta["numpy_pos"],
                         meta["numpy_gauss"][0], meta["numpy_gauss"][1]))
    random.setstate(ast.literal_eval(meta["python_rng"]))  # a literal: no code runs
    return meta


def _allowed_globals() -> list:
    """The non-tensor classes inside DeepSpeed's checkpoint files (ZeRO 2 and 3): plain data holders.

    Found with `torch.serialization.get_unsafe_globals_in_checkpoint` on DeepSpeed 0.19.8's files; a
    new DeepSpeed that stores another class fails to load with an error naming it, never silently.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def use_weights_only_loading(engine) -> None:
    """Make `engine.load_checkpoint` read its `.pt` files with torch's weights-only unpickler.

    DeepSpeed 0.19.8's TorchCheckpointEngine.load calls `torch.load(..., weights_only=False)`, and
    every load of a regular (non-universal) checkpoint goes through `engine.checkpoint_engine.load`.
    """
    import torch
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    if type(engine.checkpoint_engine) is not TorchCheckpointEngine:
        raise ValueError(f"checkpoint engine {type(engine.checkpoint_engine).__name__}: p3d loads only "
                         "DeepSpeed's torch checkpoint engine, weights-only")

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(_allowed_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)

    safe = WeightsOnlyCheckpointEngine.__new__(WeightsOnlyCheckpointEngine)
    safe.__dict__.update(engine.checkpoint_engine.__dict__)
    engine.checkpoint_engine = safe


# ------------------------------------------------------------------ the log
def truncate_log(path: Path, step: int) -> None:
    """Keep the log's records up to `step` (the resumed checkpoint's), so no step is logged twice."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    with atomic_open(path) as f:
        f.write("".join(x + "\n" for x in kept))
