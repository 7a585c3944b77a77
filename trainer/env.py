"""Process environment for DeepSpeed, set before deepspeed is imported (see shared PITFALLS).

On a machine without CUDA DeepSpeed runs on its CPU accelerator over gloo; a single process still
needs the full rendezvous variables (else DeepSpeed falls back to MPI discovery; its MASTER_PORT is
picked when it binds, `join_process_group`), and compiled ops
are cached under TORCH_EXTENSIONS_DIR so the 25-60 s builds happen once.
"""

from __future__ import annotations

import glob
import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT_ATTEMPTS = 5


def free_port() -> int:
    """A TCP port free on this machine now (the OS picks it); tests start their own launchers on it too."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def setup_environment() -> None:
    """Fill in what DeepSpeed needs; values already set (by a launcher or the user) win. A lone rank's
    MASTER_PORT is picked later, when it binds (`join_process_group`)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if "DS_ACCELERATOR" not in os.environ and not cuda_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)


def join_process_group(backend: str) -> None:
    """Start torch.distributed for a lone rank that has no MASTER_PORT; DeepSpeed then adopts the
    group. The port is picked just before the bind, and again whenever another program holds it: a
    pick is only free at the moment it is made, and picked at start-up and left to DeepSpeed, the bind
    came after the imports and the build of its CPU comm op (25-60 s on a fresh checkout), time in
    which other programs (the demo's Ray nodes beside it) take ports. A port set by a launcher or the
    user is left to DeepSpeed, as every rank must meet on it."""
    import torch.distributed as dist

    if "MASTER_PORT" in os.environ or world_size() != 1 or dist.is_initialized():
        return
    for attempt in range(PORT_ATTEMPTS):
        os.environ["MASTER_PORT"] = str(free_port())
        try:
            dist.init_process_group(backend)
            return
        except Exception as e:
            held = isinstance(e, dist.DistNetworkError) and "EADDRINUSE" in str(e)
            if not held or attempt == PORT_ATTEMPTS - 1:
                # whatever ended the attempts, the port was this function's pick: a stale one would
                # pass for a launcher's later
                del os.environ["MASTER_PORT"]
                raise


def init_distributed(on_gpu: bool) -> None:
    """DeepSpeed's process group (nccl on GPUs, gloo on CPU), a lone rank's on a port of its own."""
    import deepspeed

    backend = "nccl" if on_gpu else "gloo"
    join_process_group(backend)
    deepspeed.init_distributed(dist_backend=backend)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def cleanup_shm() -> None:
    """Remove the CPU all-reduce buffers DeepSpeed leaves in /dev/shm for this job's port."""
    # Names are deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank> (deepspeed/ops/csrc/cpu/comm/shm.cpp).
    port = os.environ.get("MASTER_PORT", "")
    pattern = f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_{rank()}"
    for path in glob.glob(pattern):
        try:
            os.unlink(path)
        except OSError:
            pass
