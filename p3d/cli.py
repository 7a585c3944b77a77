"""The `p3d` command line. Each stage registers its verbs from its own `cli.py`; heavy libraries
are imported inside the commands so `p3d --help` stays fast."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from schemas.cli_workflow import SET_OPTION, WORKFLOW_OPTION

VERBOSE = "p3d.verbose"  # ctx.meta key: -v was given
VERBOSE_FLAGS = ("-v", "--verbose")


class _OneLineErrors(TyperGroup):
    """Every subcommand ends an error the same way (schemas/cli_errors.py): bad input is one line
    and exit 2, the traceback only under -v; a bug prints its traceback. `-v` may come anywhere
    before a `--` (`p3d cluster ... -v` as well as `p3d -v cluster ...`)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        flags = [a for a in args[:end] if a in VERBOSE_FLAGS]
        rest = [a for a in args[:end] if a not in VERBOSE_FLAGS]
        return super().parse_args(ctx, flags[:1] + rest + args[end:])

    def invoke(self, ctx):
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
        from typer.exceptions import Abort, Exit, TyperException

        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:  # shows the help
            raise
        except UsageError as e:  # a flag or argument: one line too, not typer's framed box
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            typer.echo(f"error: {' '.join(e.format_message().split())} (see `{where} --help`)", err=True)
            raise Exit(e.exit_code) from e
        except (TyperException, Exit, Abort):  # exits and other errors typer already reports
            raise
        except Exception as e:
            from schemas.cli_errors import report

            code = report(e, bool(ctx.meta.get(VERBOSE)), echo=lambda line: typer.echo(line, err=True))
            raise Exit(code) from e


app = typer.Typer(
    name="p3d",
    cls=_OneLineErrors,
    help="Proxy3D: scenes -> features -> proxies -> training -> evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context,
          verbose: bool = typer.Option(False, *VERBOSE_FLAGS, help="debug logging, and an error's traceback")
          ) -> None:
    ctx.meta[VERBOSE] = verbose
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
    from p3d.demo.run import run_demo
    from p3d.report import write_report
    from schemas.cli_workflow import open_workflow
    from schemas.layout import RESOLVED_WORKFLOW, Layout

    run = open_workflow(workflow, sets)
    resolved = run.save(Layout.of(run.workflow).run_dir / RESOLVED_WORKFLOW)
    result = run_demo(resolved if run.sets else run.path, skip_ablations=skip_ablations)
    report = write_report(result)
    typer.echo(f"\nreport: {report}  (whole demo {result.wall_seconds:.0f}s)")


@app.command()
def plan(
    workflow: Optional[Path] = WORKFLOW_OPTION,
    sets: Optional[list[str]] = SET_OPTION,
    gpus: int = typer.Option(1, "--gpus", help="GPUs the ZeRO states are partitioned over"),
    gpu_memory: float = typer.Option(80.0, "--gpu-memory", help="memory of one GPU, GiB"),
    stage: int = typer.Option(3, "--stage", help="the training stage whose recipe is planned"),
) -> None:
    """Predict feature-actor and per-GPU training memory, and say which ZeRO stage / offload / LoRA fits."""
    from p3d.plan import plan_workflow, render
    from schemas.cli_workflow import open_workflow

    run = open_workflow(workflow, sets)
    typer.echo("\n".join(render(plan_workflow(run.workflow, gpus, gpu_memory, stage))))


def _register_all() -> None:
    from p3d.ask import cli as ask_cli
    from pipeline.cluster import cli as cluster_cli
    from pipeline.eval import cli as eval_cli
    from pipeline.features import cli as features_cli
    from pipeline.toy import cli as toy_cli
    from trainer import cli as trainer_cli

    for module in (toy_cli, features_cli, cluster_cli, trainer_cli, eval_cli, ask_cli):
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
