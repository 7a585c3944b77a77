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


def _kill_run(args: list[str], rng: random.Random, while_writing: bool) -> int:
    """SIGKILL `p3d convert` a random moment after its start, or after it has converted every entry
    and prints its summary (it writes --out next)."""
    env = {k: v for k, v in os.environ.items() if k != "P3D_WORKFLOW"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if while_writing:
        for line in proc.stdout:
            if " records, " in line:  # the summary: "scanqa: N records, M problems"
                break
        time.sleep(rng.uniform(0.0, 0.2))
    else:
        time.sleep(rng.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    return proc.returncode


@pytest.mark.slow
def test_convert_killed_at_random_points_then_rerun_equals_uninterrupted(tmp_path):
    from pipeline.cli import app

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
    codes = []
    for i in range(KILLS):
        codes.append(_kill_run(args, rng, while_writing=i > 0))
        assert out.read_bytes() in (old, reference.read_bytes()), "a kill left a partial records file"
    assert -signal.SIGKILL in codes, f"every run finished before its kill: {codes}"

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["scanqa.jsonl"], "a temporary was left behind"
