"""CLI verbs of this stage (placeholder until the stage lands)."""

import typer


def register(app: typer.Typer) -> None:
    pass
