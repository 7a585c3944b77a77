"""What a demo run leaves for its report: the scores, the pictures, the answers and the timed steps.

The demo fills one `DemoResult` (p3d/demo/run.py); the report (p3d/report.py) reads it and nothing
else of the demo, so the report never imports the code that runs the chain."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from schemas.workflow import Workflow


@dataclass
class Step:
    """One command the demo ran, and when: `started` is seconds into the demo."""
    name: str
    argv: list[str]
    seconds: float = 0.0
    started: float = 0.0


@dataclass
class DemoResult:
    """`main` and each table entry are eval.json documents (`p3d eval --json`)."""
    workflow_path: Path
    workflow: Workflow
    run_dir: Path
    main: dict
    steps: list[Step]
    wall_seconds: float
    ablations: dict[str, dict] = field(default_factory=dict)  # variant name -> its scores
    positions: dict[str, dict] = field(default_factory=dict)  # rotary layout -> scores on its tasks
    pictures: list[Path] = field(default_factory=list)  # `p3d viz` PNGs of held-out scenes
    asked: dict | None = None  # the `p3d ask` step's rows (p3d/demo/ask.py)
    main_clustering_variant: str = ""  # the ablation variant that clusters as the main run does
    oracle_variant: str | None = None  # the variant on the oracle backends, when the demo ran it
    reuses_main_run: bool = False  # a variant would have repeated the main run and took its scores
