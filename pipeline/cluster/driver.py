"""The cluster driver: every complete scene of the triplet store -> proxy shards.

Scenes (sorted) are cut into shards of `scenes_per_shard`. A shard whose tar already holds exactly
its planned scenes, made with the same parameters, is kept (resume); the others are recomputed, one
Ray task per scene (or in-process for tests and small runs), and each tar is written to a temporary
name and renamed once all its scenes are done. A run removes the set's `index.json` before it writes
anything, so a killed run leaves a set that readers refuse, never a mix of old and new shards that
looks complete; `config.json` records the resolved configuration, `index.json` (the parameters and
scene id -> shard file, schemas.proxy.index_payload) is written last, and a run report goes to
`_runs/`. A scene that fails (an unreadable group named with its file, a damaged array) is reported
and left out of its shard and the index; the run then fails naming it. With no scene left, no index
is written.

Segments are matched to the store's ground-truth instances (`gt_label`, where the source has them)
by triplet overlap (matching.py); a segment's category is its matched instance's, never the object
whose id equals the segmenter's label. The run report sums the matched and unmatched instances and
names the node that clustered each scene (`RAY_ADDRESS` points a run at a cluster).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.cluster.core import ClusterParams
from pipeline.cluster.shards import (
    encode_sample, first_member, proxies_dir, shard_keys, shard_name, write_json_atomic, write_shard,
)
from schemas.config_cluster import ClusterConfig
from schemas.proxy import INDEX_FILE, ProxyMeta, index_payload
from schemas.store import RUNS_DIR

log = logging.getLogger(__name__)
CLUSTER_VERSION = "2"  # 2: segments matched to ground-truth instances
CONFIG_FILE = "config.json"


@dataclass
class RunReport:
    out: str
    name: str
    scenes: int = 0
    written: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    matching: dict[str, int] = field(default_factory=dict)  # instances / matched / unmatched, summed
    shards_written: list[str] = field(default_factory=list)
    shards_kept: list[str] = field(default_factory=list)
    executor: str = "local"
    nodes: dict[str, str] = field(default_factory=dict)  # scene -> Ray node id (or host name) that clustered it
    seconds: float = 0.0
    report_path: str = ""


def params_from_config(config: ClusterConfig) -> ClusterParams:
    return ClusterParams(
        budget=config.proxies, min_per_group=config.min_per_group, grouping=config.grouping,
        space=config.space, feat_weight=config.feat_weight, per_object=config.per_object,
        caption_proxies=config.caption_proxies,
        unlabeled_cell=config.unlabeled_cell, unlabeled_min_size=config.unlabeled_min_size,
        bfs_neighbors=config.bfs_neighbors, seed=config.seed,
    )


def _params_record(params: ClusterParams, stats: dict | None) -> dict:
    record = {**asdict(params), "version": CLUSTER_VERSION}
    if params.caption_proxies is None:  # absent, so sets made before the option stay current
        del record["caption_proxies"]
    if not params.grouping:  # changed in place: shards made before, one whole-scene segment, are stale
        record["segments_from"] = "proxy majority labels"
    if stats is not None:  # whitening stats change the output, so they are part of its identity
        digest = hashlib.sha256(json.dumps([stats["feat_mean"], stats["feat_std"]]).encode()).hexdigest()
        record["whitening_stats_sha256"] = digest[:16]
    return record


def cluster_one(out: str, scene_id: str, params: ClusterParams, params_record: dict,
                stats: dict | None) -> tuple[str, dict[str, bytes] | None, str | None]:
    """Read, cluster and encode one scene: (scene id, sample, None) or (scene id, None, error)."""
    try:
        from pipeline.cluster.core import cluster_scene
        from pipeline.cluster.matching import match_segments, no_ground_truth
        from pipeline.features.store import read_scene

        scene = read_scene(out, scene_id)
        proxies = cluster_scene(
            scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw, params=params, scene_id=scene_id,
            feat_mean_D=None if stats is None else np.asarray(stats["feat_mean"], np.float32),
            feat_std_D=None if stats is None else np.asarray(stats["feat_std"], np.float32),
        )
        focus = None
        if params.caption_proxies is not None:  # from the arrays already read: no second store read
            from pipeline.cluster.caption import focus_proxies

            focus = focus_proxies(
                scene.feat_FhwD, scene.xyz_Fhw3, proxies, params.caption_proxies, params,
                feat_mean_D=None if stats is None else np.asarray(stats["feat_mean"], np.float32),
                feat_std_D=None if stats is None else np.asarray(stats["feat_std"], np.float32))
        num_segments = len(proxies.segments)
        if scene.gt_label_Fhw is None:
            matching = no_ground_truth(num_segments)
        else:
            valid_N = np.isfinite(scene.xyz_Fhw3.reshape(-1, 3)).all(axis=1)
            # Only instance segments (label >= 0) can stand for an object: unlabeled spatial groups
            # get no identifier, so a record could not name them anyway.
            matching = match_segments(
                proxies.segment_N[valid_N], scene.gt_label_Fhw.reshape(-1)[valid_N], num_segments,
                params.match_iou, matchable_S=np.array([s.label >= 0 for s in proxies.segments], bool))
        attrs = scene.attrs
        meta = ProxyMeta(
            scene_id=scene_id, num_proxies=proxies.num_proxies, budget=params.budget,
            dim=int(proxies.feat_KD.shape[1]), num_valid_triplets=proxies.num_valid,
            params=params_record, source=attrs.source, notes=proxies.notes,
            num_triplets=proxies.num_triplets, num_segments=len(proxies.segments),
            num_groups_initial=proxies.num_groups_initial, merges=proxies.merges,
            matching=None if scene.gt_label_Fhw is None else matching.summary(params.match_iou),
            store={k: v for k, v in attrs.model_dump(mode="json").items()
                   if k in ("encoder", "geometry", "segmenter", "pipeline_version", "grid",
                            "patch_size", "image_size", "frame_indices", "scale", "scale_method")},
        )
        categories = {int(o["id"]): str(o["category"]) for o in attrs.objects if "id" in o and "category" in o}
        return scene_id, encode_sample(scene_id, proxies, meta, matching, categories, focus), None
    except Exception as e:  # reported per scene; the run goes on and fails at the end
        log.debug("scene %s failed:\n%s", scene_id, traceback.format_exc())
        return scene_id, None, f"{type(e).__name__}: {e}"


def _shard_is_current(path: Path, planned: list[str], params_record: dict) -> bool:
    if not path.exists():
        return False
    try:
        if shard_keys(path) != planned:
            return False
        meta = first_member(path, "meta.json")
        return meta is not None and json.loads(meta).get("params") == params_record
    except Exception:  # an unreadable tar is simply redone
        return False


def _load_stats(out: str, config: ClusterConfig) -> dict | None:
    if config.space != "xyz+feat":
        return None
    from pipeline.cluster.stats import compute_stats, default_stats_path, write_stats

    path = Path(config.stats) if config.stats else default_stats_path(out)
    if not path.exists():
        if config.stats:
            raise ValueError(f"{path}: feature stats file not found (field 'stats')")
        log.info("no feature stats at %s; computing them for whitening", path)
        write_stats(path, compute_stats(out))
    return json.loads(path.read_text())


def _iter_results(out, scene_ids, params, params_record, stats, executor: str, num_workers: int):
    """Yields ((scene id, sample, error), node) as scenes finish."""
    from pipeline.features.driver import node_name

    if executor == "local":
        import faiss

        # One FAISS thread here as in the Ray tasks: BLAS blocking can differ with the thread
        # count, and a near-tie could then flip, so both executors give byte-identical shards.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            node = node_name()
            for scene_id in scene_ids:
                yield cluster_one(out, scene_id, params, params_record, stats), node
        finally:
            faiss.omp_set_num_threads(threads)
        return
    import ray

    def task(*args):
        import faiss

        faiss.omp_set_num_threads(1)  # one core per task; Ray provides the parallelism
        return cluster_one(*args), node_name()

    remote = ray.remote(num_cpus=1)(task)
    stats_ref = ray.put(stats)
    pending, queue = [], list(scene_ids)
    while queue or pending:
        while queue and len(pending) < 2 * num_workers:
            pending.append(remote.remote(out, queue.pop(0), params, params_record, stats_ref))
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def _start_ray(num_workers: int) -> bool:
    """Connect to RAY_ADDRESS or start a local runtime; True if we started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=num_workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
    return True


def run_cluster(out: str | Path, config: ClusterConfig, scenes: list[str] | None = None) -> RunReport:
    """Cluster every complete scene of `<out>/features` into `<out>/proxies/<config.name>`."""
    from pipeline.features.store import list_scenes, unreadable_reason

    started = time.time()
    out = str(out)
    root = proxies_dir(out, config.name)
    report = RunReport(out=out, name=config.name)
    # A group whose metadata cannot be read is not unfinished work to skip: it fails, named.
    unreadable = {s: r for s in list_scenes(out, complete_only=False)
                  if (r := unreadable_reason(out, s)) is not None}
    scene_ids = sorted([*list_scenes(out, complete_only=True), *unreadable])
    if scenes is not None:
        unknown = sorted(set(scenes) - set(scene_ids))
        if unknown:
            raise ValueError(f"scenes without a complete triplet group in {out}/features: {unknown}")
        scene_ids = [s for s in scene_ids if s in set(scenes)]
    if not scene_ids:
        raise ValueError(f"{out}/features: no complete scenes to cluster (run `p3d features` first)")
    report.scenes = len(scene_ids)
    params = params_from_config(config)
    stats = _load_stats(out, config)
    params_record = _params_record(params, stats)
    # First write of the run: the set stops being complete until its new index is written.
    (root / INDEX_FILE).unlink(missing_ok=True)

    per = config.scenes_per_shard
    plan = {shard_name(i): scene_ids[lo:lo + per] for i, lo in enumerate(range(0, len(scene_ids), per))}
    todo: dict[str, list[str]] = {}
    for shard, planned in plan.items():
        if not set(planned) & set(unreadable) and _shard_is_current(root / shard, planned, params_record):
            report.shards_kept.append(shard)
            report.resumed += planned
        else:
            todo[shard] = planned
    for stale in root.glob("shard-*.tar") if root.exists() else []:
        if stale.name not in plan:  # left by an earlier run over more scenes
            stale.unlink()
    for partial in root.glob(".shard-*.tar.tmp-*") if root.exists() else []:
        partial.unlink()  # a killed run's unfinished tar; never a valid shard

    pending_scenes = [s for planned in todo.values() for s in planned if s not in unreadable]
    executor = config.executor
    if executor == "auto":
        executor = "ray" if len(pending_scenes) > 1 and config.num_workers > 1 else "local"
    report.executor = executor
    started_ray = _start_ray(config.num_workers) if executor == "ray" and pending_scenes else False
    shard_of = {s: shard for shard, planned in todo.items() for s in planned}
    results: dict[str, dict[str, dict[str, bytes] | None]] = {shard: {} for shard in todo}
    for scene_id, reason in unreadable.items():
        if scene_id in shard_of:
            results[shard_of[scene_id]][scene_id] = None
            report.failed[scene_id] = reason
            log.error("scene %s failed: %s", scene_id, reason)
    for shard in todo:  # a shard of unreadable scenes alone has nothing left to wait for
        if todo[shard] and len(results[shard]) == len(todo[shard]):
            write_shard(root / shard, [])
            report.shards_written.append(shard)
    try:
        results_iter = _iter_results(out, pending_scenes, params, params_record, stats, executor,
                                     config.num_workers)
        for num_done, ((scene_id, sample, error), node) in enumerate(results_iter, 1):
            report.nodes[scene_id] = node
            shard = shard_of[scene_id]
            results[shard][scene_id] = sample
            if error:
                report.failed[scene_id] = error
                log.error("scene %s failed: %s", scene_id, error)
            else:
                report.written.append(scene_id)
                summary = json.loads(sample["meta.json"]).get("matching") or {}
                for key in ("instances", "matched", "unmatched"):
                    report.matching[key] = report.matching.get(key, 0) + int(summary.get(key, 0))
            log.info("[%d/%d] %s %s", num_done, len(pending_scenes), scene_id, "failed" if error else "ok")
            if len(results[shard]) == len(todo[shard]):
                samples = [results[shard][s] for s in todo[shard] if results[shard][s] is not None]
                write_shard(root / shard, samples)
                report.shards_written.append(shard)
                results[shard] = {s: None for s in todo[shard]}  # free the bytes; keep the count
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    index = {}
    for shard, planned in plan.items():
        for scene_id in planned:
            if scene_id not in report.failed:
                index[scene_id] = shard
    write_json_atomic(root / CONFIG_FILE, {"config": config.model_dump(mode="json"),
                                           "params": params_record, "out": out})
    if index:  # last: marks the shard set as complete (a set of no scene is not one)
        write_json_atomic(root / INDEX_FILE, index_payload(params_record, index))
    if report.matching.get("instances"):
        log.info("matching: %d of %d ground-truth instances matched to a segment, %d unmatched",
                 report.matching["matched"], report.matching["instances"], report.matching["unmatched"])
    report.seconds = round(time.time() - started, 3)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    report_path = root / RUNS_DIR / f"cluster-{stamp}-{os.getpid()}.json"
    report.report_path = str(report_path)
    write_json_atomic(report_path, asdict(report))
    return report
