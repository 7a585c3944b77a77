"""How every `p3d` command finds its workflow and reports a first-run problem.

The resolution itself (`--workflow`, else $P3D_WORKFLOW, else the embedded `workflows/toy.yaml`;
then `--set` overrides) is `schemas.workflow.resolve_workflow`, shared with `trainer/run.py`; this
module adds the typer options and turns a problem into one line on stderr and a non-zero exit."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer

from schemas.workflow import WORKFLOW_ENV, ResolvedWorkflow, shown_path

WORKFLOW_OPTION = typer.Option(
    None, "--workflow", "-w",
    help=f"workflow YAML (default: ${WORKFLOW_ENV}, else the embedded workflows/toy.yaml)")
SET_OPTION = typer.Option(
    None, "--set", metavar="SECTION.KEY=VALUE",
    help="change one workflow field, e.g. cluster.proxies=700 or features.geometry.kind=rgbd (repeatable; "
         "the value is YAML)")
SCENES_OPTION = typer.Option(
    None, "--scenes", metavar="A,B",
    help="only these scene ids, comma-separated (repeatable; default: every scene)")


def scene_list(scenes: Optional[list[str]]) -> list[str] | None:
    """`--scenes a,b --scenes c` -> ["a", "b", "c"]; None when the flag is absent."""
    if not scenes:
        return None
    return [s.strip() for given in scenes for s in given.split(",") if s.strip()] or None


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr, no traceback, exit `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_workflow(workflow: Optional[Path], sets: Optional[list[str]]) -> ResolvedWorkflow:
    """The command's workflow; its first printed line says which file and why."""
    from schemas.errors import SchemaError
    from schemas.workflow import resolve_workflow

    try:
        return resolve_workflow(workflow, sets or [], echo=typer.echo)
    except SchemaError as e:
        fail(str(e))


def missing_source(run: ResolvedWorkflow, what: str) -> str:
    """A scene source that is not there: the path looked at and the two ways to point elsewhere."""
    src = run.workflow.source
    origin = ("--set source.path" if any(s.split("=", 1)[0].strip() == "source.path" for s in run.sets)
              else f"source.path in {shown_path(run.path)}")
    return (f"no {src.kind} scenes: {what} {src.path} (from {origin}). Put the dataset there, or point to it: "
            f"edit source.path in {shown_path(run.path)}, or add --set source.path=/path/to/scans "
            f"(make: SET=source.path=/path/to/scans)")
