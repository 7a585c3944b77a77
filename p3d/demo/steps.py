"""Running the demo's steps: each is the command a user would type (`p3d ...`, `python
trainer/run.py`), run as a child process whose output streams to the console and to
`<runs>/<name>/logs/<step>.log`, so the demo proves the commands, not a private shortcut.

Independent jobs run side by side (`demo.jobs` at a time, the cores split among them; each console
line then starts with its job's name). A tiny model gains little from a second intra-op thread
(measured: docs/RESULTS.md#demo-parallel-jobs), so two 1-thread jobs finish sooner than the same two in turn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from p3d.demo.result import Step
from schemas import layout
from schemas.workflow import Workflow

ROOT = Path(__file__).resolve().parents[2]
FAILED_TAIL_LINES = 25


@dataclass
class DemoRun:
    """The demo in progress: its workflow, run folder and the steps run so far."""
    workflow_path: Path
    workflow: Workflow
    run_dir: Path
    steps: list[Step] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _numbered: int = 0

    @property
    def log_dir(self) -> Path:
        return self.run_dir / layout.DEMO_LOGS

    @property
    def wall_seconds(self) -> float:
        return time.time() - self.started

    def _say(self, text: str, job: str | None) -> None:
        with self._lock:
            if job is None:
                sys.stdout.write(text)
            else:
                sys.stdout.write("".join(f"[{job}] {line}" for line in text.splitlines(keepends=True)))
            sys.stdout.flush()

    def run(self, name: str, argv: list[str], job: str | None = None, threads: int | None = None) -> None:
        """Run one step as a child process, streaming its output; stop the demo if it fails.
        A step of a job that runs beside others (`job`) prefixes its console lines with the job's
        name, and its child uses `threads` intra-op threads."""
        with self._lock:
            self._numbered += 1
            number = self._numbered
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{number - 1:02d}-{name.replace(' ', '_').replace('/', '_')}.log"
        t0 = time.time()
        self._say(f"\n=== [{number}] {name}  (demo at {t0 - self.started:.0f}s)\n$ {' '.join(argv)}\n", job)
        with log_path.open("w") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    cwd=ROOT, env=_child_env(threads), bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                self._say(line, job)
                log.write(line)
            code = proc.wait()
        step = Step(name, argv, time.time() - t0, t0 - self.started)
        with self._lock:
            self.steps.append(step)
        if code != 0:
            # The step's lines interleave with a side job's on the console; repeat its end so the
            # cause sits next to the failure (CI keeps only the console's last lines).
            last = log_path.read_text(errors="replace").splitlines(keepends=True)[-FAILED_TAIL_LINES:]
            tail = "".join(f"  | {line}" for line in last)
            raise SystemExit(f"demo step '{name}' failed (exit {code}); log: {log_path}; "
                             f"its last lines:\n{tail}")
        self._say(f"=== {name}: done in {step.seconds:.1f}s\n", job)


def _child_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env


def run_side_by_side(demo: DemoRun, jobs: dict[str, Callable[[str | None, int | None], object]],
                     workers: int | None = None) -> dict[str, object]:
    """Run independent jobs `workers` at a time (default: one per core), the cores split among
    them; each job is called with its console label and thread count. A failing job does not stop
    the others; once all have ended, the failures are raised together."""
    cores = os.cpu_count() or 1
    workers = max(1, min(workers or cores, len(jobs)))
    threads = max(1, cores // workers) if workers > 1 else None
    results: dict[str, object] = {}
    failures: list[str] = []
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(job, name if workers > 1 else None, threads): name for name, job in jobs.items()}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except (Exception, SystemExit) as e:
                failures.append(f"{futures[future]}: {e}")
    if failures:
        raise SystemExit("; ".join(failures))
    return results


def p3d_command(*args: str) -> list[str]:
    """`p3d ARGS` as the demo runs it: the same command, through this interpreter."""
    return [sys.executable, "-m", "p3d.cli", *args]


def train_command(stage: int, workflow: Path) -> list[str]:
    """`python trainer/run.py`, the entry the deepspeed launcher starts too."""
    return [sys.executable, str(ROOT / "trainer" / "run.py"), "--stage", str(stage), "--workflow", str(workflow)]


def records_path(wf: Workflow) -> Path:
    """The records scored by the demo: eval's own, else the workflow's (schemas/layout.py's order)."""
    return layout.records_path(wf, wf.eval.records)


def val_scenes(wf: Workflow, limit: int) -> list[str]:
    """The first `limit` scenes of the held-out split, in the records' order."""
    scenes: list[str] = []
    for line in records_path(wf).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split") == wf.eval.split and rec["scene_id"] not in scenes:
            scenes.append(rec["scene_id"])
    return scenes[:limit]

