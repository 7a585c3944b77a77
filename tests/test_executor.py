"""The shared executor (pipeline/executor.py): bounded work in flight, a crashed worker becomes its
unit's failure, the run report writes itself atomically; one `--scenes` spelling for every stage."""

from __future__ import annotations

import json
import os

from schemas.cli_workflow import scene_list
from pipeline.executor import LeastLoaded, RunReport, run_local, run_ray


def _square(x: int) -> int:
    return x * x


def _die_on_three(x: int) -> int:
    if x == 3:
        os._exit(1)  # the worker process dies, as an out-of-memory kill would end it
    return x * x


def test_ray_keeps_at_most_limit_units_in_flight_and_returns_every_result(ray_runtime):
    remote = ray_runtime.remote(num_cpus=1)(_square)
    in_flight, most = set(), [0]

    def submit(unit):
        ref = remote.remote(unit)
        in_flight.add(ref)
        most[0] = max(most[0], len(in_flight))
        return ref

    results = list(run_ray(range(9), submit, 2, lambda unit, e: None, finished=in_flight.discard))
    assert sorted(results) == [x * x for x in range(9)]
    assert most[0] == 2 and not in_flight


def test_a_crashed_ray_worker_is_its_units_failure_and_the_run_goes_on(ray_runtime):
    remote = ray_runtime.remote(num_cpus=1, max_retries=0)(_die_on_three)
    results = list(run_ray(range(6), remote.remote, 2, lambda unit, e: ("crashed", unit, type(e).__name__)))
    crashed = [r for r in results if isinstance(r, tuple)]
    assert len(crashed) == 1 and crashed[0][:2] == ("crashed", 3) and "Error" in crashed[0][2]
    assert sorted(r for r in results if not isinstance(r, tuple)) == [0, 1, 4, 16, 25]


def test_least_loaded_spreads_calls_over_actors_and_frees_slots(ray_runtime):
    @ray_runtime.remote(num_cpus=0)
    class Echo:
        def call(self, x):
            return x

    pool = LeastLoaded([Echo.remote(), Echo.remote()], "call")
    refs = [pool.submit(i) for i in range(4)]
    assert pool.load == [2, 2]
    for ref in refs:
        pool.finished(ref)
    assert pool.load == [0, 0] and ray_runtime.get(refs) == [0, 1, 2, 3]


def test_local_runs_in_order():
    assert list(run_local([3, 1, 2], _square)) == [9, 1, 4]


def test_report_writes_the_stages_layout_atomically(tmp_path):
    report = RunReport(executor="local", done=["a"], failed={"b": "ValueError: x"})
    path = report.write(tmp_path / "_runs" / "run.json",
                        lambda r: {"done": r.done, "failed": r.failed, "path": str(r.path)})
    written = json.loads(path.read_text())
    assert written == {"done": ["a"], "failed": {"b": "ValueError: x"}, "path": str(path)}
    assert report.wall_seconds >= 0 and not report.ok
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary left beside it


def test_scenes_flag_takes_commas_and_repeats():
    assert scene_list(None) is None and scene_list([]) is None
    assert scene_list(["a,b", " c ", "d,,"]) == ["a", "b", "c", "d"]
