"""`p3d predict` killed by SIGKILL at random points (while starting, while generating), several
times, over an older predictions file: after each kill `--out` is the old file or a whole new one,
never a part, and the rerun writes exactly what an uninterrupted run writes, with no temporary left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.kill_helpers import alive

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An exported Proxy3D folder (untrained: what predict reads is the export format, not skill)
    and synthetic shards + records."""
    from tests.synthetic_shards import untrained_model

    folder, _, shards, records = untrained_model(tmp_path_factory.mktemp("predict_kill"),
                                                 ["What is a chair?", "How many lamps are in the room?"])
    return folder, shards, records


def _args(exported, out: Path, *extra: str) -> list[str]:
    folder, shards, records = exported
    return ["predict", "--checkpoint", str(folder), "--shards", str(shards), "--records", str(records),
            "--out", str(out), "--split", "all", "--max-new-tokens", "6", *(extra or ("--limit", "40"))]


def _generating(pid: int) -> bool:
    """The process has a proxy shard open: it is answering that shard's scenes."""
    try:
        return any("shard-" in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _kill_run(args: list[str], rng: random.Random, while_generating: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != "P3D_WORKFLOW"}
    proc = subprocess.Popen([sys.executable, "-m", "p3d.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    if while_generating:
        while proc.poll() is None and not _generating(proc.pid):
            assert time.monotonic() < deadline, "predict never opened a shard"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        time.sleep(rng.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not alive(proc.pid)
    return proc.returncode


@pytest.mark.slow
def test_predict_killed_at_random_points_then_rerun_equals_uninterrupted(exported, tmp_path):
    from p3d.cli import app

    reference = tmp_path / "reference" / "preds.jsonl"
    result = CliRunner().invoke(app, _args(exported, reference))
    assert result.exit_code == 0, result.output

    out = tmp_path / "killed" / "preds.jsonl"
    result = CliRunner().invoke(app, _args(exported, out, "--limit", "5"))  # an older file at --out
    assert result.exit_code == 0, result.output
    old = out.read_bytes()
    assert old != reference.read_bytes()

    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    codes = [_kill_run(_args(exported, out), rng, while_generating=i > 0) for i in range(KILLS)]
    assert -signal.SIGKILL in codes, f"every run finished before its kill: {codes}"
    assert out.read_bytes() in (old, reference.read_bytes()), "a kill left a partial predictions file"

    result = CliRunner().invoke(app, _args(exported, out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.jsonl"], "a temporary was left behind"


def test_a_killed_writers_temporary_goes_with_the_next_write(tmp_path):
    """What a SIGKILL inside `write_jsonl_atomic` leaves (its `.name.tmp-<pid>`) is removed by the
    next write of that file; a temporary whose writer still runs is left alone."""
    from schemas.io import write_json_atomic

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".preds.jsonl.tmp-{dead.pid}"
    stale.write_text('{"id": "r1", "sce')
    running = tmp_path / f".preds.jsonl.tmp-{os.getppid()}"
    running.write_text("being written")
    other = tmp_path / f".other.json.tmp-{dead.pid}"
    other.write_text("{")
    write_json_atomic(tmp_path / "preds.jsonl", {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["preds.jsonl", running.name, other.name])
