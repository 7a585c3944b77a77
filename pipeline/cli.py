"""The `p3d` command line. Each stage registers its verbs from its own `cli.py`; heavy libraries
are imported inside the commands so `p3d --help` stays fast."""

from __future__ import annotations

import json
import logging

import typer

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
    workflow: str = typer.Option("workflows/toy.yaml", help="workflow YAML"),
    skip_ablations: bool = typer.Option(False, help="only the main chain, no ablation variants"),
) -> None:
    """The whole chain (toy world -> features -> cluster -> train 1-4 -> predict -> eval), then the
    ablations; writes <runs>/<name>/report.md."""
    from pipeline.demo import run_demo

    run_demo(workflow, skip_ablations=skip_ablations)


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
