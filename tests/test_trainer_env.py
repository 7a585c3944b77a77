"""trainer/env.py's rendezvous: a lone rank's own port is picked again when another program holds it;
a launcher's port is never changed. Each case runs in a fresh interpreter: a process group, once
started, stays for the life of the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Another program listens on a port; the OS's first two picks for this process are that port (the
# race: a pick is free when made, taken by the time of the bind), so two binds in a row collide.
# Later picks are the OS's own.
CHILD = """
import json, os, socket, sys
import torch.distributed as dist
from trainer import env

held = socket.socket()
held.bind(("127.0.0.1", 0))
held.listen()
port = held.getsockname()[1]
picks = [port] * (env.PORT_ATTEMPTS if sys.argv[1] == "exhausted" else 2)
os_pick = env.free_port
env.free_port = lambda: picks.pop(0) if picks else os_pick()
if sys.argv[1] == "launcher":
    os.environ["MASTER_PORT"] = str(port)
env.setup_environment()
try:
    env.join_process_group("gloo")
    error = None
except dist.DistNetworkError as e:
    error = str(e)
left_set = os.environ.get("MASTER_PORT")
if sys.argv[1] == "exhausted":
    env.join_process_group("gloo")  # a later call picks again (the OS's own pick now)
print(json.dumps({"held": port, "port": int(os.environ["MASTER_PORT"]), "group": dist.is_initialized(),
                  "picks_left": len(picks), "error": error, "left_set": left_set}))
"""


def _run(case: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", CHILD, case], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_lone_rank_picks_its_port_again_while_another_program_holds_it():
    out = _run("lone")
    assert out["error"] is None and out["group"]
    assert out["picks_left"] == 0, "every colliding pick was tried"
    assert out["port"] != out["held"], "the group listens on a port of its own, named in MASTER_PORT"


def test_a_launchers_port_is_never_changed():
    """Every rank meets on the launcher's port, so a held one is an error for DeepSpeed to raise,
    not a reason to move this rank elsewhere."""
    out = _run("launcher")
    assert not out["group"] and out["error"] is None, "the group is left for DeepSpeed to start"
    assert out["port"] == out["held"] and out["picks_left"] == 2


def test_a_lone_rank_that_runs_out_of_attempts_leaves_no_port_behind():
    """Every attempt collides: the error is raised, and MASTER_PORT (this function's own pick) is
    removed with it, so a later call picks a port again instead of leaving a stale one to DeepSpeed."""
    out = _run("exhausted")
    assert out["error"] is not None and "EADDRINUSE" in out["error"]
    assert out["left_set"] is None, "the failed pick must not stay in MASTER_PORT"
    assert out["group"] and out["port"] != out["held"] and out["picks_left"] == 0
