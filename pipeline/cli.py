"""The `p3d` command line. Each stage registers its verbs from its own `cli.py`; heavy libraries
are imported inside the commands so `p3d --help` stays fast."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli_workflow import SET_OPTION, WORKFLOW_OPTION

app = typer.Typer(
    name="p3d",
    help="Proxy3D: scenes -> features -> proxies -> training -> evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def schema(name: str = typer.Argument(..., help="manifest | object | store | proxy-meta | segment | record | workflow")) -> None:
    """Print the JSON Schema of one p3d format."""
    from schemas import SCHEMAS

    if name not in SCHEMAS:
        raise typer.BadParameter(f"unknown schema {name!r}; choose from {', '.join(SCHEMAS)}")
    typer.echo(json.dumps(SCHEMAS[name].model_json_schema(), indent=2))


@app.command()
def demo(
    workflow: Optional[Path] = WORKFLOW_OPTION,
    sets: Optional[list[str]] = SET_OPTION,
    skip_ablations: bool = typer.Option(False, help="only the main chain, no ablation variants"),
) -> None:
    """The whole chain (toy world -> features -> cluster -> train 1-4 -> predict -> eval), then the
    ablations; writes <runs>/<name>/report.md and the resolved workflow beside it. With `--set`, every
    step reads that resolved file."""
    from pipeline.cli_workflow import open_workflow
    from pipeline.demo import run_demo

    run = open_workflow(workflow, sets)
    resolved = run.save(Path(run.workflow.demo.runs) / run.workflow.name / "resolved_workflow.yaml")
    run_demo(resolved if run.sets else run.path, skip_ablations=skip_ablations)


def _register_all() -> None:
    from pipeline.cluster import cli as cluster_cli
    from pipeline.eval import cli as eval_cli
    from pipeline.features import cli as features_cli
    from pipeline.sources import cli as sources_cli
    from trainer import cli as trainer_cli

    for module in (sources_cli, features_cli, cluster_cli, trainer_cli, eval_cli):
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
