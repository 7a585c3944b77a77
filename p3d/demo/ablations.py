"""The paper's ablations in miniature: semantic grouping versus `--no-grouping`, proxy budgets, the
layout of the proxies' rotary position ids (`train.rope_positions`: the main run's proxy set, stage 4
with the other layout, scored also on the tasks stage 4 replays), and the oracle backends.

Each variant is a derived workflow file (`<runs>/<name>/ablations/<variant>.yaml`): its own proxy set,
and a stage-4 run from the main stage-3 model on the same tasks and epochs, so the variants differ only
in the clustering. A variant that would repeat the main run exactly (same clustering, and the main
stage 4 has the ablation's tasks and epochs) takes the main run's scores instead of training the same
thing twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from p3d.demo.steps import DemoRun, p3d_command, records_path
from schemas import layout
from schemas.config_train import ROPE_POSITIONS
from schemas.workflow import Workflow, load_workflow


def positions_variant(wf: Workflow) -> tuple[str, dict]:
    """The main run's clustering with the other rotary position layout (trainer/positions.py)."""
    other = next(p for p in ROPE_POSITIONS if p != wf.train.rope_positions)
    return (f"positions-{other}-k{wf.cluster.proxies}",
            {"proxies": wf.cluster.proxies, "grouping": wf.cluster.grouping, "rope_positions": other})


def ablation_variants(wf: Workflow) -> list[tuple[str, dict]]:
    ab = wf.demo.ablations
    variants: list[tuple[str, dict]] = []
    if ab.grouping_pair:
        pair_budget = ab.grouping_budget or wf.cluster.proxies
        variants = [(f"grouping-k{pair_budget}", {"proxies": pair_budget, "grouping": True}),
                    (f"no-grouping-k{pair_budget}", {"proxies": pair_budget, "grouping": False})]
    for k in ab.budgets:
        if f"grouping-k{k}" not in dict(variants):
            variants.append((f"grouping-k{k}", {"proxies": k, "grouping": True}))
    return [*variants, positions_variant(wf)]


def main_clustering(wf: Workflow, change: dict) -> bool:
    return change["proxies"] == wf.cluster.proxies and change["grouping"] == wf.cluster.grouping


def repeats_main_run(wf: Workflow, change: dict) -> bool:
    """Would this variant train exactly what the main chain trained (module docstring)?"""
    ab, main4 = wf.demo.ablations, wf.train.stage(4)
    return (main_clustering(wf, change)
            and change.get("rope_positions", wf.train.rope_positions) == wf.train.rope_positions
            and main4 is not None and main4.init_from is None and main4.records is None
            and main4.epochs == ab.epochs and main4.tasks is not None
            and sorted(main4.tasks) == sorted(ab.tasks))


@dataclass
class Variant:
    """One ablation variant, clustered and ready for its stage 4."""
    name: str
    workflow_path: Path
    workflow: Workflow
    records: Path
    out_dir: Path


ORACLE_BACKENDS = {"geometry": {"kind": "rgbd"}, "segmenter": {"kind": "instances"}}

ORACLE_VARIANT = "oracle-rgbd+instances"


def runs_oracle(wf: Workflow) -> bool:
    """Does the demo add the oracle variant? Only when asked and when the main run is not already
    on the oracle backends (sensor depth and poses, ground-truth instance masks)."""
    return wf.demo.ablations.oracle and not (wf.features.geometry.kind == "rgbd"
                                             and wf.features.segmenter.kind == "instances")


def _oracle_changes(wf: Workflow) -> dict:
    """The oracle variant's own data root and features: the same scenes through `rgbd` + `instances`.
    A `toy:` model id resolves against the data root, so it is pinned to the main run's folder:
    the oracle's features then come from the same vision tower as the main run's."""
    from pipeline.toy.models import is_toy_id, toy_model_dir

    def pinned(model: str) -> str:
        return str(toy_model_dir(model, wf.out)) if is_toy_id(model) else model

    features = wf.features.model_dump(mode="json")
    features["encoder"]["model"] = pinned(wf.features.encoder.model)
    for section, backend in ORACLE_BACKENDS.items():
        features[section] = {**features[section], **backend}
    return {"out": str(Path(wf.out) / "oracle"), "features": features, "model": pinned(wf.train.model)}


def _write_workflow(wf: Workflow, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(wf.model_dump(mode="json"), sort_keys=False))
    load_workflow(path)  # the derived file must validate like a hand-written one
    return path


def _filtered_records(wf: Workflow, tasks: list[str], path: Path) -> Path:
    lines = [ln for ln in records_path(wf).read_text().splitlines() if json.loads(ln)["task"] in tasks]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _variant_workflow(wf: Workflow, name: str, change: dict, stage3_model: Path, records: Path,
                      ab_dir: Path, oracle: dict | None = None) -> Workflow:
    ab = wf.demo.ablations
    change = dict(change)
    rope_positions = change.pop("rope_positions", wf.train.rope_positions)
    # A variant of training alone reads the main run's proxy set; one of the clustering its own.
    own_set = oracle is not None or not main_clustering(wf, change)
    cluster = wf.cluster.model_copy(update={"name": f"ablation-{name}", **change}) if own_set else wf.cluster
    stage4 = {"stage": 4, "trainable": ["projector", "position", "identifiers", "language_model"],
              "epochs": ab.epochs, "init_from": str(stage3_model), "records": str(records),
              "tasks": list(ab.tasks)}
    listed = wf.train.stage(4)
    if listed is not None:
        stage4 = listed.model_copy(update={k: stage4[k] for k in ("epochs", "init_from", "records", "tasks")}
                                   ).model_dump()
    train = {**wf.train.model_dump(), "proxies": cluster.name, "out": str(ab_dir / name / "train"),
             "records": str(records), "rope_positions": rope_positions,
             "stages": [s.model_dump() for s in wf.train.stages if s.stage != 4] + [stage4]}
    data = {**wf.model_dump(), "name": f"{wf.name}-{name}", "cluster": cluster.model_dump(), "train": train}
    if oracle is not None:
        data.update(out=oracle["out"], features=oracle["features"])
        train["model"] = oracle["model"]
    return Workflow.model_validate(data)


def prepare_ablations(demo: DemoRun, stage3_model: Path, job: str | None = None,
                      threads: int | None = None) -> tuple[list[Variant], list[str]]:
    """Write each variant's workflow and cluster it (one at a time); the oracle variant first
    computes its own features. `stage3_model` is only named (the demo prepares the variants while
    stages 1-3 train); `job` and `threads` as in `DemoRun.run`. Returns the variants to train and
    the names of those that repeat the main run."""
    wf = demo.workflow
    ab = wf.demo.ablations
    ab_dir = demo.run_dir / layout.DEMO_ABLATIONS
    # Every variant trains what the main stage 4 replays beside the ablation's tasks; only the
    # position-id variant is also scored on them (the spatial tasks, where positions should count).
    main4 = wf.train.stage(4)
    replayed = [t for t in (main4.replay_tasks if main4 else []) if t not in ab.tasks]
    records = _filtered_records(wf, [*ab.tasks, *replayed], ab_dir / "records.jsonl")
    scored = _filtered_records(wf, ab.tasks, ab_dir / "scored_records.jsonl") if replayed else records
    positions_name = positions_variant(wf)[0]
    variants: list[Variant] = []
    repeats: list[str] = []
    planned = [(name, change, None) for name, change in ablation_variants(wf)]
    if runs_oracle(wf):
        main_clustering = {"proxies": wf.cluster.proxies, "grouping": wf.cluster.grouping}
        planned.append((ORACLE_VARIANT, main_clustering, _oracle_changes(wf)))
    for name, change, oracle in planned:
        if oracle is None and repeats_main_run(wf, change):
            repeats.append(name)
            continue
        variant = _variant_workflow(wf, name, change, stage3_model, records, ab_dir, oracle)
        path = _write_workflow(variant, ab_dir / f"{name}.yaml")
        if oracle is not None:
            demo.run(f"features {name}", p3d_command("features", "--workflow", str(path)), job, threads)
        if variant.train.proxies != wf.train.proxies:
            demo.run(f"cluster {name}", p3d_command("cluster", "--workflow", str(path)), job, threads)
        variants.append(Variant(name, path, variant, records if name == positions_name else scored,
                                ab_dir / name))
    return variants, repeats

