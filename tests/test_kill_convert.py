"""`p3d convert` killed by SIGKILL at random points (while reading, while writing), several times,
over an older records file: after each kill `--out` is the old file or a whole new one, never a part,
and the rerun writes exactly what an uninterrupted run writes, with no temporary left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/datasets/ScanQA_v1.0_val.json"
NUM_QUESTIONS = 30_000  # a file big enough that reading and writing take a while to kill inside
KILLS = 3


def _scanqa_file(path: Path, copies: int) -> Path:
    """The fixture's questions repeated under new ids, as ScanQA's own val file lists them."""
    entries = json.loads(FIXTURE.read_text())
    rows = [dict(e, question_id=f"{e['question_id']}-{i}") for i in range(copies // len(entries) + 1)
            for e in entries][:copies]
    path.write_text(json.dumps(rows))
    return path


def _start(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "P3D_WORKFLOW"}
    return subprocess.Popen([sys.executable, "-m", "p3d.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _wait_for_summary(proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        if " records, " in line:  # the summary: "scanqa: N records, M problems"; it writes --out next
            return


def _phase_seconds(args: list[str]) -> tuple[float, float]:
    """An uninterrupted run's seconds to its summary and from there to its exit, on this machine
    now: kill delays are drawn inside them, so the kills land inside the run however fast it is."""
    start = time.monotonic()
    proc = _start(args)
    _wait_for_summary(proc)
    summary = time.monotonic()
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == 0
    return summary - start, time.monotonic() - summary


def _kill_run(args: list[str], rng: random.Random, while_writing: bool, phases: tuple[float, float]) -> int:
    """SIGKILL `p3d convert` at a random moment while it reads, or after it has converted every entry
    and prints its summary (while it writes --out)."""
    proc = _start(args)
    if while_writing:
        _wait_for_summary(proc)
        time.sleep(rng.uniform(0.0, 0.8) * phases[1])
    else:
        time.sleep(rng.uniform(0.3, 0.9) * phases[0])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    return proc.returncode


@pytest.mark.slow
def test_convert_killed_at_random_points_then_rerun_equals_uninterrupted(tmp_path):
    from p3d.cli import app

    source = _scanqa_file(tmp_path / "ScanQA_v1.0_val.json", NUM_QUESTIONS)
    reference = tmp_path / "reference" / "scanqa.jsonl"
    result = CliRunner().invoke(app, ["convert", "scanqa", str(source), "--out", str(reference)])
    assert result.exit_code == 0, result.output

    out = tmp_path / "killed" / "scanqa.jsonl"
    (tmp_path / "small").mkdir()
    small = _scanqa_file(tmp_path / "small" / "ScanQA_v1.0_val.json", 10)
    result = CliRunner().invoke(app, ["convert", "scanqa", str(small), "--out", str(out)])  # an older file
    assert result.exit_code == 0, result.output
    old = out.read_bytes()

    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    args = ["convert", "scanqa", str(source), "--out", str(out)]
    phases = _phase_seconds(["convert", "scanqa", str(source), "--out", str(tmp_path / "timed" / "scanqa.jsonl")])
    codes = []
    for i in range(KILLS):
        codes.append(_kill_run(args, rng, while_writing=i > 0, phases=phases))
        assert out.read_bytes() in (old, reference.read_bytes()), "a kill left a partial records file"
    assert -signal.SIGKILL in codes, f"every run finished before its kill: {codes}"

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["scanqa.jsonl"], "a temporary was left behind"
