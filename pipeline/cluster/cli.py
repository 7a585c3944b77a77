"""CLI verbs of the cluster stage: `cluster`, `stats`, `inspect`, `viz`.

Each reads a workflow (`--workflow`, else $P3D_WORKFLOW, else the embedded workflows/toy.yaml;
`--set` changes any field), or, given `--out` and no workflow, a bare data root with the cluster
defaults. The flags override the workflow's `cluster:` section. A run whose clustering differs from
the workflow's, and that names no set (`--name` or `--set cluster.name=`), writes a set named after
the parameters that differ (`--proxies 700` -> `k700`; schemas/config_cluster.py: derived_name), so
the workflow's own set, the one its training reads, is never overwritten by an override."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from schemas.cli_workflow import SCENES_OPTION, SET_OPTION, WORKFLOW_OPTION, scene_list

_WORKFLOW = WORKFLOW_OPTION
_SET = SET_OPTION
_OUT = typer.Option(None, "--out", help="data root; overrides the workflow's out (alone: a bare data root)")
_NAME = typer.Option(None, "--name", help="proxy set under <out>/proxies/ (default: the workflow's cluster.name, "
                                          "or the changed parameters, e.g. k700)")


def _resolve(workflow: Optional[Path], out: Optional[Path], sets: Optional[list[str]] = None, **overrides):
    """(data root, cluster config, the resolved workflow or None for a bare data root)."""
    from pydantic import ValidationError

    from schemas.cli_workflow import fail, open_workflow
    from schemas.config_cluster import ClusterConfig, derived_name
    from schemas.workflow import WORKFLOW_ENV

    run = None
    if workflow is None and out is not None and not os.environ.get(WORKFLOW_ENV):
        typer.echo(f"workflow: none (a bare data root from --out; --workflow or {WORKFLOW_ENV} to read one)")
        if sets:
            fail("--set changes a workflow; give --workflow (or drop --out)")
        base = file_base = ClusterConfig()
        root = out
    else:
        run = open_workflow(workflow, sets)
        base, file_base, root = run.workflow.cluster, run.file_workflow.cluster, Path(run.workflow.out)
    if out is not None:
        root = out
    updates = {k: v for k, v in overrides.items() if v is not None}
    try:
        config = ClusterConfig.model_validate({**base.model_dump(), **updates})
    except ValidationError as e:
        err = e.errors()[0]
        fail(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg'].removeprefix('Value error, ')}")
    named = "name" in updates or any(s.split("=", 1)[0].strip() == "cluster.name" for s in sets or ())
    if not named:
        config = config.model_copy(update={"name": derived_name(file_base, config)})
    return root, config, run


def _missing_set(root: Path, name: str) -> None:
    from schemas.cli_workflow import fail
    from schemas.proxy import missing_set_error

    message = missing_set_error(root, name)
    if message is not None:
        fail(message)


def cluster(
    workflow: Optional[Path] = _WORKFLOW,
    sets: Optional[list[str]] = _SET,
    out: Optional[Path] = _OUT,
    name: Optional[str] = _NAME,
    proxies: Optional[int] = typer.Option(None, "--proxies", "-k", help="proxy budget K per scene"),
    min_per_group: Optional[int] = typer.Option(None, "--min-per-group"),
    grouping: Optional[bool] = typer.Option(None, "--grouping/--no-grouping",
                                            help="--no-grouping: clustering over the whole scene, ignoring "
                                                 "labels; segments from proxies' majority labels"),
    space: Optional[str] = typer.Option(None, "--space", help="xyz | xyz+feat"),
    per_object: Optional[int] = typer.Option(None, "--per-object", help="N proxies per object"),
    caption_proxies: Optional[int] = typer.Option(None, "--caption-proxies",
                                                  help="Scan2Cap: N proxies for the captioned object"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    scenes_per_shard: Optional[int] = typer.Option(None, "--scenes-per-shard"),
    workers: Optional[int] = typer.Option(None, "--workers", help="parallel scenes (Ray tasks)"),
    executor: Optional[str] = typer.Option(None, "--executor",
                                           help="auto | ray | local (default: cluster.executor)"),
    scenes: Optional[list[str]] = SCENES_OPTION,
) -> None:
    """Turn every complete scene of the triplet store into proxy shards."""
    from pipeline.cluster.driver import run_cluster
    from schemas.layout import RESOLVED_WORKFLOW, proxies_dir

    root, config, run = _resolve(workflow, out, sets, name=name, proxies=proxies, min_per_group=min_per_group,
                            grouping=grouping, space=space, per_object=per_object,
                            caption_proxies=caption_proxies, seed=seed,
                            scenes_per_shard=scenes_per_shard, num_workers=workers, executor=executor)
    try:
        report = run_cluster(root, config, scenes=scene_list(scenes))
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if run is not None:
        run.save(proxies_dir(root, config.name) / RESOLVED_WORKFLOW, cluster=config, out=str(root))
    shards = len(report.details["shards_written"])
    typer.echo(f"{config.name}: {len(report.done)} scenes clustered, {len(report.skipped)} kept from earlier "
               f"runs, {shards} shards written ({report.executor}), {report.wall_seconds:.1f} s; "
               f"report {report.path}")
    if report.failed:
        for scene_id, error in sorted(report.failed.items()):
            typer.echo(f"failed: {scene_id}: {error}", err=True)
        typer.echo(f"{len(report.failed)} scenes failed: {', '.join(sorted(report.failed))}", err=True)
        raise typer.Exit(1)


def stats(
    workflow: Optional[Path] = _WORKFLOW,
    sets: Optional[list[str]] = _SET,
    out: Optional[Path] = _OUT,
    dest: Optional[Path] = typer.Option(None, "--dest", help="JSON path (default <out>/stats/triplets.json)"),
) -> None:
    """Feature mean/std per dimension, triplet, label and NaN counts over all scenes (dask)."""
    from pipeline.cluster.stats import compute_stats, default_stats_path, write_stats

    root, _, run = _resolve(workflow, out, sets)
    try:
        result = compute_stats(root)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    path = write_stats(dest or default_stats_path(root), result)
    if run is not None:
        run.save(Path(path).with_suffix(".workflow.yaml"), out=str(root))
    typer.echo(f"{result['num_scenes']} scenes, {result['num_triplets']} triplets, "
               f"{result['num_valid']} valid ({result['nan_fraction']:.1%} NaN), "
               f"{result['num_labeled']} labeled, D={result['dim']} -> {path}")


def inspect(
    target: str = typer.Argument(..., help="a shard .tar, or a scene id (with --workflow/--out)"),
    workflow: Optional[Path] = _WORKFLOW,
    sets: Optional[list[str]] = _SET,
    out: Optional[Path] = _OUT,
    name: Optional[str] = _NAME,
) -> None:
    """Print a summary of a proxy shard or of one scene."""
    from pipeline.cluster.inspection import summarize_scene, summarize_shard

    try:
        if target.endswith(".tar"):
            if not Path(target).is_file():
                raise ValueError(f"{target}: no such shard file")
            lines = summarize_shard(target)
        else:
            root, config, _ = _resolve(workflow, out, sets, name=name)
            _missing_set(root, config.name)
            lines = summarize_scene(root, target, config.name)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo("\n".join(lines))


def viz(
    scene: str = typer.Argument(..., help="scene id"),
    workflow: Optional[Path] = _WORKFLOW,
    sets: Optional[list[str]] = _SET,
    out: Optional[Path] = _OUT,
    name: Optional[str] = _NAME,
    png: Optional[Path] = typer.Option(None, "--png", help="default <out>/proxies/<name>/viz/<scene>.png"),
) -> None:
    """Draw one scene's proxies (top and 3D views, coloured by segment, BFS path) to a PNG."""
    from pipeline.cluster.shards import load_scene_proxies, proxies_dir
    from pipeline.cluster.viz import draw_proxies
    from schemas.layout import scene_picture

    root, config, _ = _resolve(workflow, out, sets, name=name)
    _missing_set(root, config.name)
    try:
        sample = load_scene_proxies(root, config.name, scene)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    dest = png or scene_picture(proxies_dir(root, config.name), scene)
    meta = sample["meta"]
    title = (f"{scene}: {meta.num_proxies} proxies, {len(sample['segments'])} segments "
             f"({config.name}, space {meta.params.get('space')})")
    typer.echo(str(draw_proxies(sample, dest, title)))


def register(app: typer.Typer) -> None:
    app.command()(cluster)
    app.command()(stats)
    app.command()(inspect)
    app.command()(viz)
