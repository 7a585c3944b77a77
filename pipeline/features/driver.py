"""The feature-stage driver: scenes -> workers (models loaded once each) -> triplet store.

Both executors of pipeline/executor.py run the same `FeatureWorker`:
  local  one worker in this process, scenes in order (tests, the benchmark baseline, debugging);
  ray    `num_actors` Ray actors, each loading its model set once in its constructor, with GPUs
         through Ray resources when CUDA exists and CPUs otherwise (the cores split evenly between
         actors, torch threads to match), spread over the cluster's nodes. At most `num_actors *
         max_in_flight` scene ids are queued; a worker loads its scene itself and returns only a
         small status, so memory stays bounded however many scenes there are.

Pipelining: an actor runs up to `max_in_flight` scenes at once in threads, but only one of them on
the models at a time (a lock): while one scene computes, the next is read and decoded and the last
is compressed and written. The local executor keeps the naive order (the benchmark's baseline).

Resume: a group is skipped only when it is complete (marker and every chunk), made with the same
feature config and from the same input (the source's `fingerprint`: its path and the scene's input
files' sizes and mtimes, or the toy config); temporary and unfinished groups are removed first and
their scenes redone, as is a scene made from other input. A failing scene (unreadable frame, no mask, all-NaN geometry, a crashed
worker, a failed world alignment) is recorded with its reason and the run goes on. Every run writes
`<out>/features/_runs/<UTC time>.json` (done / skipped / failed, warnings per scene, how each scene
was aligned to the world, which node did each scene, config, seconds per model).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

from pipeline.executor import (
    Executor, LeastLoaded, RunReport, node_name, progress, ray_runtime, run_local, run_ray,
)
from pipeline.features import store
from pipeline.features.stage import config_hash
from pipeline.sources.base import Scene
from schemas.config_features import FeaturesConfig
from schemas.store import RUNS_DIR

log = logging.getLogger(__name__)


class SceneProvider(Protocol):
    """Lists scene ids in the driver; loads one scene inside a worker (so scenes never travel).
    `pipeline.sources.source.SceneSource` is one."""

    def scene_ids(self) -> list[str]: ...

    def load_scene(self, scene_id: str) -> Scene: ...

    # Optional: `fingerprint(scene_id) -> str`, a cheap identity of the scene's input (source_fingerprint).


def source_fingerprint(provider: SceneProvider, scene_id: str) -> str | None:
    fingerprint = getattr(provider, "fingerprint", None)
    return None if fingerprint is None else fingerprint(scene_id)


@dataclass
class SceneOutcome:
    scene_id: str
    status: Literal["done", "failed"]
    reason: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    alignment: dict | None = None  # method, scale_method, scale, residuals (StoreAttrs.alignment)
    node: str | None = None  # where it ran: the Ray node id, else the host name


class FeatureWorker:
    """One model set; `process(scene_id)` loads, processes and writes one scene, never raising.
    Safe to call from several threads: reading and writing overlap, the models run one scene at a time."""

    def __init__(self, cfg: FeaturesConfig, out: str, data_root: str, provider: SceneProvider,
                 device: str | None = None, num_threads: int | None = None):
        import torch

        from pipeline.features.stage import load_models

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        start = time.perf_counter()
        self.cfg, self.out, self.provider = cfg, out, provider
        self.models = load_models(cfg, data_root, device)
        self.compute_lock = threading.Lock()
        self.node = node_name()
        self.setup_seconds = time.perf_counter() - start

    def ready(self) -> float:
        return self.setup_seconds

    def process(self, scene_id: str) -> SceneOutcome:
        from pipeline.features.stage import process_scene

        seconds: dict[str, float] = {}
        scene_warnings: list[str] = []  # kept for the report even when the scene then fails
        try:
            start = time.perf_counter()
            fingerprint = source_fingerprint(self.provider, scene_id)  # before reading: what was read is no newer
            scene = self.provider.load_scene(scene_id)
            seconds["load"] = time.perf_counter() - start
            scene_warnings = list(scene.warnings)
            if scene.scene_id != scene_id:
                raise ValueError(f"scene {scene_id}: the source returned scene {scene.scene_id!r}")
            with self.compute_lock:
                result = process_scene(scene, self.models, self.cfg)
            result.attrs = result.attrs.model_copy(update={"source_fingerprint": fingerprint})
            seconds.update(result.seconds)
            start = time.perf_counter()
            store.write_scene(self.out, result.attrs, result.arrays)
            seconds["write"] = time.perf_counter() - start
            alignment = result.attrs.alignment
            return SceneOutcome(scene_id, "done", seconds=seconds, warnings=result.warnings,
                                alignment=None if alignment is None else alignment.model_dump(
                                    mode="json", exclude={"similarity"}), node=self.node)
        except Exception as e:  # one bad scene must not stop the run; the report keeps the reason
            log.debug("scene %s failed:\n%s", scene_id, traceback.format_exc())
            return SceneOutcome(scene_id, "failed", reason=f"{type(e).__name__}: {e}", seconds=seconds,
                                warnings=scene_warnings, node=self.node)


def _run_local(todo: list[str], cfg, out, data_root, provider, report: RunReport) -> Iterator[SceneOutcome]:
    worker = FeatureWorker(cfg, str(out), str(data_root), provider)
    report.setup_seconds = worker.setup_seconds
    yield from run_local(todo, worker.process)


def cpus_per_actor(node_cpus: list[float], num_actors: int) -> int:
    """The cluster's cores split evenly between actors, at most what the largest node has, at least 1."""
    if not node_cpus:
        return 1
    return max(1, min(int(sum(node_cpus) // num_actors), int(max(node_cpus))))


def _run_ray(todo: list[str], cfg: FeaturesConfig, out, data_root, provider,
             report: RunReport) -> Iterator[SceneOutcome]:
    # A local runtime gets every core: the actors split them (one torch thread per core each).
    with ray_runtime(os.cpu_count() or 1, report) as ray:
        gpus = cfg.gpus_per_actor if ray.cluster_resources().get("GPU", 0) > 0 else 0
        num_actors = max(1, min(cfg.num_actors, len(todo)))
        cpus = cpus_per_actor([n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]], num_actors)
        # SPREAD: one model set per node first (each node's GPUs and disks are used), then packing.
        remote_cls = ray.remote(FeatureWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=1,
                                                       max_task_retries=0, max_concurrency=cfg.max_in_flight,
                                                       scheduling_strategy="SPREAD")
        actors = [remote_cls.remote(cfg, str(out), str(data_root), provider, num_threads=cpus)
                  for _ in range(num_actors)]
        try:
            report.setup_seconds = max(ray.get([a.ready.remote() for a in actors]))
            pool = LeastLoaded(actors, "process")
            yield from run_ray(todo, pool.submit, num_actors * cfg.max_in_flight, _crashed, pool.finished)
        finally:
            for actor in actors:
                ray.kill(actor)


def _crashed(scene_id: str, error: Exception) -> SceneOutcome:
    return SceneOutcome(scene_id, "failed", reason=f"worker crashed: {type(error).__name__}")


def _report_layout(cfg: FeaturesConfig) -> Callable[[RunReport], dict]:
    """The fields of `<out>/features/_runs/<time>.json`."""
    def layout(report: RunReport) -> dict:
        return {
            "started": report.started.isoformat(),
            "finished": datetime.now(timezone.utc).isoformat(),
            "executor": report.executor,
            "done": report.done,
            "skipped": report.skipped,
            "failed": [{"scene_id": s, "reason": r} for s, r in report.failed.items()],
            "warnings": report.warnings,
            "alignment": report.details.get("alignment", {}),
            "nodes": report.nodes,
            "wall_seconds": report.wall_seconds,
            "setup_seconds": report.setup_seconds,
            "startup_seconds": report.startup_seconds,
            "seconds_per_step": report.seconds_per_step,
            "config": cfg.model_dump(mode="json"),
        }
    return layout


def _is_current(cfg: FeaturesConfig, out, provider: SceneProvider, scene_id: str) -> bool:
    """A complete group with every chunk, made with this feature config from the same input."""
    if not store.is_complete(out, scene_id):
        return False
    attrs = store.open_group(out, scene_id).attrs
    made_with, made_from = attrs.get("config_hash"), attrs.get("source_fingerprint")
    missing = store.missing_chunks(out, scene_id)
    if missing:
        log.warning("scene %s: %s; redoing", scene_id, "; ".join(missing))
    elif made_with != config_hash(cfg):
        log.info("scene %s: made with another feature config (%s), redoing", scene_id, made_with)
    elif made_from != source_fingerprint(provider, scene_id):
        log.info("scene %s: made from other input (source fingerprint %s), redoing", scene_id, made_from)
    else:
        return True
    return False


def _record(report: RunReport, outcome: SceneOutcome) -> None:
    if outcome.status == "done":
        report.done.append(outcome.scene_id)
    else:
        report.failed[outcome.scene_id] = outcome.reason or "unknown"
    if outcome.warnings:
        report.warnings[outcome.scene_id] = list(outcome.warnings)
        for line in outcome.warnings:
            log.warning("scene %s: %s", outcome.scene_id, line)
    if outcome.alignment is not None:
        report.details.setdefault("alignment", {})[outcome.scene_id] = outcome.alignment
    if outcome.node is not None:
        report.nodes[outcome.scene_id] = outcome.node
    report.add_seconds(outcome.seconds)


def run_features(cfg: FeaturesConfig, out: str | Path, data_root: str | Path, provider: SceneProvider,
                 scene_ids: list[str] | None = None, executor: Executor | None = None,
                 overwrite: bool = False) -> RunReport:
    """Process every scene (or `scene_ids`) that is not complete yet; returns the run report.
    `executor` overrides `cfg.executor`."""
    report = RunReport(executor=executor or cfg.executor)
    ids = list(scene_ids) if scene_ids is not None else provider.scene_ids()
    if len(set(ids)) != len(ids):
        raise ValueError("scene ids must be unique")
    removed = store.clean_partial(out)
    if removed:
        log.info("removed %d unfinished groups: %s", len(removed), ", ".join(sorted(removed)[:10]))
    todo = []
    for scene_id in ids:
        if not overwrite and _is_current(cfg, out, provider, scene_id):
            report.skipped.append(scene_id)
        else:
            todo.append(scene_id)
    if todo:
        runner = {"local": _run_local, "ray": _run_ray}[report.executor]
        with progress(len(todo), "features" if report.executor == "local" else "features (ray)") as bar:
            for outcome in runner(todo, cfg, out, data_root, provider, report):
                _record(report, outcome)
                bar.update(1)
    path = store.features_root(out) / RUNS_DIR / f"{report.started.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
    report.write(path, _report_layout(cfg))
    return report
