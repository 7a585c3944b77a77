"""The executor every per-scene stage runs on (features, cluster): start Ray or stay local, run one
unit of work per scene with a bounded number in flight, and collect one `RunReport`.

A stage driver keeps only its planning (which scenes, what is already done) and its writing; the
units it hands over load their own input and return a small result, so memory stays bounded however
many scenes there are.

  local  every unit in this process, in order (tests, the benchmarks' baseline, debugging);
  ray    units as Ray tasks or actor calls, at most `limit` submitted and unfinished at a time.
         `RAY_ADDRESS` (read by `ray.init`) points the run at a running cluster, else a local
         runtime is started for the run and stopped after it.

A unit whose Ray worker dies is handed to the stage's `crashed(unit, error)`, which turns it into
that scene's failure: the run goes on.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from schemas.io import write_json_atomic

Executor = Literal["local", "ray"]
Unit = TypeVar("Unit")
Result = TypeVar("Result")


@dataclass
class RunReport:
    """What one run of a stage did, scene by scene; `write` puts it in the stage's run file."""

    executor: str = "local"
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete: kept from an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # scene -> reason
    warnings: dict[str, list[str]] = field(default_factory=dict)  # scene -> what the user should know
    nodes: dict[str, str] = field(default_factory=dict)  # scene -> node that processed it
    seconds_per_step: dict[str, float] = field(default_factory=dict)  # summed over scenes
    details: dict[str, Any] = field(default_factory=dict)  # the stage's own findings (alignment, shards)
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0  # model loading (the slowest actor's, under Ray)
    startup_seconds: float = 0.0  # executor start-up (ray.init), not model loading
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def add_seconds(self, seconds: dict[str, float]) -> None:
        for step, sec in seconds.items():
            self.seconds_per_step[step] = self.seconds_per_step.get(step, 0.0) + sec

    def write(self, path: str | Path, layout: Callable[[RunReport], dict]) -> Path:
        """Stop the clock and write `layout(self)` (the stage's published field names) atomically."""
        self.wall_seconds = (datetime.now(timezone.utc) - self.started).total_seconds()
        self.path = Path(path)
        return write_json_atomic(self.path, layout(self))


def node_name() -> str:
    """The Ray node id inside a Ray worker or a driver connected to Ray, else the host name."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:  # pragma: no cover - ray is a core dependency
        pass
    return socket.gethostname()


def start_ray(num_cpus: int | None) -> bool:
    """Join the cluster `RAY_ADDRESS` names, or start a local runtime of `num_cpus` cores; True if
    this call started it (and `ray_runtime` must stop it)."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a core dependency
        raise RuntimeError("the ray executor needs ray: pip install 'ray>=2.40'") from e
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
    return True


@contextmanager
def ray_runtime(num_cpus: int | None, report: RunReport | None = None):
    """Ray for the block (`start_ray`), stopped after it if the block's start-up started it; the
    start-up time goes to `report.startup_seconds`."""
    start = time.perf_counter()
    started = start_ray(num_cpus)
    if report is not None:
        report.startup_seconds = time.perf_counter() - start
    import ray

    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_local(units: Iterable[Unit], work: Callable[[Unit], Result]) -> Iterator[Result]:
    for unit in units:
        yield work(unit)


def run_ray(units: Iterable[Unit], submit: Callable[[Unit], Any], limit: int,
            crashed: Callable[[Unit, Exception], Result],
            finished: Callable[[Any], None] | None = None) -> Iterator[Result]:
    """Yield each unit's result as it finishes, in finishing order. `submit(unit)` returns the Ray
    object ref of its result; at most `limit` are unfinished at once. `finished(ref)` is told of each
    ref done (an actor pool frees the slot)."""
    import ray

    pending: dict = {}  # object ref -> unit
    queue = deque(units)
    while queue or pending:
        while queue and len(pending) < limit:
            unit = queue.popleft()
            pending[submit(unit)] = unit
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            unit = pending.pop(ref)
            if finished is not None:
                finished(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:  # the worker process died with this unit
                result = crashed(unit, e)
            yield result


class LeastLoaded:
    """Submits each unit to the actor with the fewest unfinished calls (`run_ray`'s submit/finished)."""

    def __init__(self, actors: list, method: str):
        self.actors, self.method = actors, method
        self.load = [0] * len(actors)
        self.owner: dict = {}  # object ref -> actor index

    def submit(self, *args) -> Any:
        idx = min(range(len(self.actors)), key=self.load.__getitem__)
        ref = getattr(self.actors[idx], self.method).remote(*args)
        self.owner[ref] = idx
        self.load[idx] += 1
        return ref

    def finished(self, ref) -> None:
        self.load[self.owner.pop(ref)] -= 1


def progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="scene", dynamic_ncols=True)
