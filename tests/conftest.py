"""Shared fixtures. The VGGT reference bundle is read from ../shared (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("P3D_SHARED", ROOT.parent / "shared"))
VGGT_REFERENCE = SHARED / "reference" / "vggt"


@pytest.fixture(scope="module", autouse=True)
def _module_environment():
    """Each test module sees the environment it started with. In-process training sets DeepSpeed's
    rendezvous variables (trainer.env) and keeps its store listening on MASTER_PORT; a later
    module's subprocesses must not inherit that port (EADDRINUSE)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def vggt_reference() -> Path:
    if not (VGGT_REFERENCE / "config_A.json").exists():
        pytest.skip(f"VGGT reference bundle not found at {VGGT_REFERENCE}")
    return VGGT_REFERENCE


@pytest.fixture(scope="session")
def ray_runtime():
    """One local Ray runtime per test session (start-up costs seconds)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
