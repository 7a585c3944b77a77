"""The cluster driver: every complete scene of the triplet store -> proxy shards.

Scenes (sorted) are cut into shards of `scenes_per_shard`. A shard whose tar already holds exactly
its planned scenes, made with the same parameters, is kept (resume); the others are recomputed, one
Ray task per scene (or in-process for tests and small runs; pipeline/executor.py), and each tar is
written to a temporary name and renamed once all its scenes are done. A run removes the set's `index.json` before it writes
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
import itertools
import json
import logging
import os
import traceback
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np

from pipeline.cluster.shards import (
    encode_sample, first_member, proxies_dir, shard_keys, shard_name, write_shard,
)
from pipeline.executor import RunReport, node_name, ray_runtime, run_local, run_ray
from schemas.config_cluster import RUN_FIELDS, ClusterConfig
from schemas.io import write_json_atomic
from schemas.proxy import INDEX_FILE, ProxyMeta, index_payload
from schemas.store import RUNS_DIR

log = logging.getLogger(__name__)
CLUSTER_VERSION = "2"  # 2: segments matched to ground-truth instances
CONFIG_FILE = "config.json"
Outcome = tuple[str, "dict[str, bytes] | None", "str | None"]  # (scene id, sample, error)


def _params_record(config: ClusterConfig, stats: dict | None) -> dict:
    """The parameters that shape the proxies, as every shard's meta.json and the index record them
    (`budget` is the config's `proxies`); a shard made with another record is redone."""
    record = {"budget" if key == "proxies" else key: value
              for key, value in config.model_dump(mode="json", exclude=RUN_FIELDS | {"stats"}).items()}
    record["version"] = CLUSTER_VERSION
    if config.caption_proxies is None:  # absent, so sets made before the option stay current
        del record["caption_proxies"]
    if not config.grouping:  # changed in place: shards made before, one whole-scene segment, are stale
        record["segments_from"] = "proxy majority labels"
    if stats is not None:  # whitening stats change the output, so they are part of its identity
        digest = hashlib.sha256(json.dumps([stats["feat_mean"], stats["feat_std"]]).encode()).hexdigest()
        record["whitening_stats_sha256"] = digest[:16]
    return record


def cluster_one(out: str, scene_id: str, config: ClusterConfig, params_record: dict,
                stats: dict | None) -> Outcome:
    """Read, cluster and encode one scene: (scene id, sample, None) or (scene id, None, error)."""
    try:
        from pipeline.cluster.core import cluster_scene
        from pipeline.cluster.matching import match_segments, no_ground_truth
        from pipeline.features.store import read_scene

        scene = read_scene(out, scene_id)
        whitening = {} if stats is None else {"feat_mean_D": np.asarray(stats["feat_mean"], np.float32),
                                              "feat_std_D": np.asarray(stats["feat_std"], np.float32)}
        proxies = cluster_scene(scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw, config=config,
                                scene_id=scene_id, **whitening)
        focus = None
        if config.caption_proxies is not None:  # from the arrays already read: no second store read
            from pipeline.cluster.caption import focus_proxies

            focus = focus_proxies(scene.feat_FhwD, scene.xyz_Fhw3, proxies, config.caption_proxies, config,
                                  **whitening)
        num_segments = len(proxies.segments)
        if scene.gt_label_Fhw is None:
            matching = no_ground_truth(num_segments)
        else:
            valid_N = np.isfinite(scene.xyz_Fhw3.reshape(-1, 3)).all(axis=1)
            # Only instance segments (label >= 0) can stand for an object: unlabeled spatial groups
            # get no identifier, so a record could not name them anyway.
            matching = match_segments(
                proxies.segment_N[valid_N], scene.gt_label_Fhw.reshape(-1)[valid_N], num_segments,
                config.match_iou, matchable_S=np.array([s.label >= 0 for s in proxies.segments], bool))
        attrs = scene.attrs
        meta = ProxyMeta(
            scene_id=scene_id, num_proxies=proxies.num_proxies, budget=config.proxies,
            dim=int(proxies.feat_KD.shape[1]), num_valid_triplets=proxies.num_valid,
            params=params_record, source=attrs.source, notes=proxies.notes,
            num_triplets=proxies.num_triplets, num_segments=len(proxies.segments),
            num_groups_initial=proxies.num_groups_initial, merges=proxies.merges,
            matching=None if scene.gt_label_Fhw is None else matching.summary(config.match_iou),
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


def _cluster_task(out, scene_id, config, params_record, stats) -> tuple[Outcome, str]:
    """`cluster_one` where it ran: one FAISS thread, as the Ray tasks and the local executor both
    use, since BLAS blocking can differ with the thread count and a near-tie could then flip;
    so both executors give byte-identical shards."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return cluster_one(out, scene_id, config, params_record, stats), node_name()
    finally:
        faiss.omp_set_num_threads(threads)


def _crashed(scene_id: str, error: Exception) -> tuple[Outcome, None]:
    return (scene_id, None, f"worker crashed: {type(error).__name__}"), None


def _iter_results(out, scene_ids, config, params_record, stats,
                  executor: str) -> Iterator[tuple[Outcome, str | None]]:
    """Yields ((scene id, sample, error), node) as scenes finish."""
    if executor == "local" or not scene_ids:
        yield from run_local(scene_ids, lambda s: _cluster_task(out, s, config, params_record, stats))
        return
    with ray_runtime(config.num_workers) as ray:
        remote = ray.remote(num_cpus=1)(_cluster_task)  # one core per task; Ray provides the parallelism
        stats_ref = ray.put(stats)
        yield from run_ray(scene_ids, lambda s: remote.remote(out, s, config, params_record, stats_ref),
                           2 * config.num_workers, _crashed)


def _scenes_to_cluster(out: str, scenes: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(sorted scene ids, unreadable scene -> reason): the complete groups and the unreadable ones."""
    from pipeline.features.store import list_scenes, unreadable_reason

    # A group whose metadata cannot be read is not unfinished work to skip: it fails, named.
    unreadable = {s: r for s in list_scenes(out, complete_only=False)
                  if (r := unreadable_reason(out, s)) is not None}
    scene_ids = sorted([*list_scenes(out, complete_only=True), *unreadable])
    if scenes is not None:
        unknown = sorted(set(scenes) - set(scene_ids))
        if unknown:
            raise ValueError(f"scenes without a complete triplet group in {out}/features: {unknown}")
        scene_ids = [s for s in scene_ids if s in set(scenes)]
        unreadable = {s: r for s, r in unreadable.items() if s in set(scenes)}
    if not scene_ids:
        raise ValueError(f"{out}/features: no complete scenes to cluster (run `p3d features` first)")
    return scene_ids, unreadable


def _plan_shards(root: Path, scene_ids: list[str], unreadable: dict[str, str], per: int,
                 params_record: dict, report: RunReport) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(every shard -> its scenes, the shards to redo); current shards are kept, stale files removed."""
    plan = {shard_name(i): scene_ids[lo:lo + per] for i, lo in enumerate(range(0, len(scene_ids), per))}
    todo: dict[str, list[str]] = {}
    for shard, planned in plan.items():
        if not set(planned) & set(unreadable) and _shard_is_current(root / shard, planned, params_record):
            report.details["shards_kept"].append(shard)
            report.skipped += planned
        else:
            todo[shard] = planned
    for stale in root.glob("shard-*.tar") if root.exists() else []:
        if stale.name not in plan:  # left by an earlier run over more scenes
            stale.unlink()
    for partial in root.glob(".shard-*.tar.tmp-*") if root.exists() else []:
        partial.unlink()  # a killed run's unfinished tar; never a valid shard
    return plan, todo


def _count_matching(report: RunReport, sample: dict[str, bytes]) -> None:
    summary = json.loads(sample["meta.json"]).get("matching") or {}
    matching = report.details["matching"]
    for key in ("instances", "matched", "unmatched"):
        matching[key] = matching.get(key, 0) + int(summary.get(key, 0))


def _write_shards(root: Path, todo: dict[str, list[str]], unreadable: dict[str, str],
                  results: Iterator[tuple[Outcome, str | None]], report: RunReport) -> None:
    """Each shard of `todo` written once all its scenes are in, as they finish; failures recorded."""
    shard_of = {s: shard for shard, planned in todo.items() for s in planned}
    done: dict[str, dict[str, dict[str, bytes] | None]] = {shard: {} for shard in todo}
    outcomes = (((s, None, reason), None) for s, reason in unreadable.items() if s in shard_of)
    total = sum(len(planned) for planned in todo.values())
    for num_done, ((scene_id, sample, error), node) in enumerate(itertools.chain(outcomes, results), 1):
        if node is not None:
            report.nodes[scene_id] = node
        shard = shard_of[scene_id]
        done[shard][scene_id] = sample
        if error:
            report.failed[scene_id] = error
            log.error("scene %s failed: %s", scene_id, error)
        else:
            report.done.append(scene_id)
            _count_matching(report, sample)
            log.info("[%d/%d] %s ok", num_done, total, scene_id)
        if len(done[shard]) == len(todo[shard]):
            write_shard(root / shard, [done[shard][s] for s in todo[shard] if done[shard][s] is not None])
            report.details["shards_written"].append(shard)
            done[shard] = {s: None for s in todo[shard]}  # free the bytes; keep the count


def _report_layout(report: RunReport) -> dict:
    """The fields of `<out>/proxies/<name>/_runs/cluster-<time>-<pid>.json`."""
    details = report.details
    return {"out": details["out"], "name": details["name"], "scenes": details["scenes"],
            "written": report.done, "resumed": report.skipped, "failed": report.failed,
            "matching": details["matching"], "shards_written": details["shards_written"],
            "shards_kept": details["shards_kept"], "executor": report.executor, "nodes": report.nodes,
            "seconds": round(report.wall_seconds, 3), "report_path": str(report.path)}


def _write_set(root: Path, out: str, config: ClusterConfig, params_record: dict,
               plan: dict[str, list[str]], report: RunReport) -> None:
    """config.json, then index.json (scene -> shard, failed scenes left out) last: the set's mark of
    completeness, which a set of no scene does not get."""
    index = {scene_id: shard for shard, planned in plan.items() for scene_id in planned
             if scene_id not in report.failed}
    write_json_atomic(root / CONFIG_FILE, {"config": config.model_dump(mode="json"),
                                           "params": params_record, "out": out}, sort_keys=True)
    if index:
        write_json_atomic(root / INDEX_FILE, index_payload(params_record, index), sort_keys=True)


def run_cluster(out: str | Path, config: ClusterConfig, scenes: list[str] | None = None) -> RunReport:
    """Cluster every complete scene of `<out>/features` (or `scenes`) into `<out>/proxies/<config.name>`.
    The report's `done` are the scenes clustered now, `skipped` those kept in current shards."""
    out = str(out)
    root = proxies_dir(out, config.name)
    report = RunReport(details={"out": out, "name": config.name, "matching": {}, "shards_written": [],
                                "shards_kept": []})
    scene_ids, unreadable = _scenes_to_cluster(out, scenes)
    report.details["scenes"] = len(scene_ids)
    stats = _load_stats(out, config)
    params_record = _params_record(config, stats)
    # First write of the run: the set stops being complete until its new index is written.
    (root / INDEX_FILE).unlink(missing_ok=True)
    plan, todo = _plan_shards(root, scene_ids, unreadable, config.scenes_per_shard, params_record, report)

    pending = [s for planned in todo.values() for s in planned if s not in unreadable]
    executor = config.executor
    if executor == "auto":
        executor = "ray" if len(pending) > 1 and config.num_workers > 1 else "local"
    report.executor = executor
    with closing(_iter_results(out, pending, config, params_record, stats, executor)) as results:
        _write_shards(root, todo, unreadable, results, report)
    _write_set(root, out, config, params_record, plan, report)
    matching = report.details["matching"]
    if matching.get("instances"):
        log.info("matching: %d of %d ground-truth instances matched to a segment, %d unmatched",
                 matching["matched"], matching["instances"], matching["unmatched"])
    stamp = report.started.strftime("%Y%m%d-%H%M%S")
    report.write(root / RUNS_DIR / f"cluster-{stamp}-{os.getpid()}.json", _report_layout)
    return report
