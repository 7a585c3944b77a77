"""CLI verbs of the evaluation stage: `convert`, `eval`, and `dataset stats`.

Exit codes. `p3d convert`: 0 written; 1 `--strict` and some entry failed; 2 nothing written (no
entry converted, e.g. a file of another dataset, or an unreadable file). `p3d eval`: 0 every
record scored with its prediction (a `not_asked` prediction counts as given: it is scored as a
miss and noted); 3 scored, but some records had no prediction line (each counts as a wrong answer,
see the `missing` column); 2 nothing scored (unreadable or invalid records or
predictions, duplicate ids, an empty predictions file). Every non-zero code but 3 comes with the
first problem in one line on standard error, and no output file is written or changed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import typer

dataset_app = typer.Typer(help="Inspect annotation record files.", no_args_is_help=True)


EXIT_INVALID = 2  # nothing scored or written: the first problem is printed
EXIT_MISSING = 3  # eval: scored, with records that had no prediction


def register(app: typer.Typer) -> None:
    app.command("convert")(_one_line_errors(convert))
    app.command("eval")(_one_line_errors(evaluate_cmd))
    app.add_typer(dataset_app, name="dataset")


def _one_line_errors(command):
    """A missing Java ends the command with one line on stderr and exit 2. Bad input files
    (ValueError, OSError) do too, through the CLI's one error path (schemas/cli_errors.py), which
    also shows the traceback under -v."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        from pipeline.eval.captions import JavaMissingError

        try:
            return command(*args, **kwargs)
        except JavaMissingError as e:
            typer.echo(f"error: {' '.join(str(e).split())}", err=True)
            raise typer.Exit(EXIT_INVALID) from e

    return run


def convert(
    dataset: str = typer.Argument(..., help="scanqa | sqa3d | scanrefer | scan2cap | multi3drefer | mmscan | sr91k | vsibench"),
    files: list[Path] = typer.Argument(..., help="the dataset's own files (SQA3D: questions and annotations)"),
    out: Path = typer.Option(..., "--out", "-o", help="records JSONL to write"),
    boxes: Path | None = typer.Option(None, "--boxes", help="scene objects JSON (scene_id -> [ObjectInfo]) or scenes folder"),
    strict: bool = typer.Option(False, "--strict", help="exit 1, writing nothing, if any entry could not be converted"),
    label_map: Path | None = typer.Option(None, "--label-map", help="scanrefer: ScanNet's scannetv2-labels.combined.tsv, for the official unique/multiple split"),
    slice_name: str | None = typer.Option(None, "--slice", help="mmscan: keep one slice of the samples by their sub_class: object-object (QA_Inter_Space_OO, QA_Inter_Attribute_OO: the paper's stage-3 data) or comma-separated sub_class names"),
) -> None:
    """Convert a public dataset's files into p3d annotation records."""
    from pipeline.eval.convert import CONVERTERS
    from pipeline.eval.predictions import load_scene_objects
    from schemas.record import write_records

    if dataset not in CONVERTERS:
        raise typer.BadParameter(f"unknown dataset {dataset!r}; choose from {', '.join(CONVERTERS)}")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise typer.BadParameter(f"files not found: {', '.join(missing)}")
    scene_objects = load_scene_objects(boxes) if boxes else None
    converter_kwargs = {}
    if label_map is not None and dataset != "scanrefer":
        raise typer.BadParameter("only scanrefer uses it (Multi3DRefer's files carry their own eval_type)",
                                 param_hint="--label-map")
    if slice_name is not None:
        if dataset != "mmscan":
            raise typer.BadParameter("only mmscan has slices", param_hint="--slice")
        from pipeline.eval.convert.mmscan import slice_sub_classes

        try:
            slice_sub_classes(slice_name)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--slice") from e
        converter_kwargs["slice_name"] = slice_name
    if dataset == "scanrefer":
        if label_map is None:
            typer.echo("warning: no --label-map: unique/multiple will not be ScanRefer's official split "
                       "(give ScanNet's scannetv2-labels.combined.tsv)", err=True)
        else:
            from pipeline.eval.convert.referring import read_label_map

            try:
                converter_kwargs["label_map"] = read_label_map(label_map)
            except (OSError, ValueError) as e:
                raise typer.BadParameter(str(e), param_hint="--label-map") from e
    result = CONVERTERS[dataset](list(files), scene_objects, **converter_kwargs)
    typer.echo(result.summary())
    refused = result.refusal(strict)
    if refused:
        code, why = refused
        typer.echo(f"error: {why}; {out} not written", err=True)
        raise typer.Exit(code)
    n = write_records(result.records, out)  # atomic: an existing --out is replaced only now
    typer.echo(f"wrote {n} records to {out}")


def evaluate_cmd(
    task: str = typer.Option("all", "--task", help="a task name, a benchmark/source name, or 'all'"),
    pred: Path = typer.Option(..., "--pred", help="predictions JSONL (pipeline.eval.predictions.Prediction)"),
    records: Path = typer.Option(..., "--records", help="annotation records JSONL"),
    json_out: Path | None = typer.Option(None, "--json", help="write every number and per-sample scores here"),
    boxes: Path | None = typer.Option(None, "--boxes", help="scene objects (for id -> box lookup and grounding chance)"),
    split: str | None = typer.Option(None, "--split", help="score only records of this split (default: all)"),
    caption_convention: str = typer.Option("scan2cap", "--caption-convention", help="Scan2Cap m@kIoU: scan2cap (official, IoU > k) | chatscene (IoU >= k, PTB-tokenized)"),
    qa_convention: str = typer.Option(
        "scanqa", "--qa-convention",
        help="ScanQA/SQA3D EM and EM-R: scanqa (official scorer: the cleaned answer is among the answers) | "
             "leo (LEO's order-dependent refined match) | chatscene (cleaned prediction against raw references)"),
) -> None:
    """Score predictions against records; prints one table with chance levels beside each number.
    Exit 0: all scored; 3: scored, some records had no prediction (wrong answers); 2: invalid input."""
    from pipeline.eval.evaluate import evaluate, format_table, write_json
    from pipeline.eval.predictions import load_predictions, load_scene_objects
    from pipeline.eval.text import QA_CONVENTIONS
    from schemas.record import load_records

    if qa_convention not in QA_CONVENTIONS:
        raise typer.BadParameter(f"{qa_convention!r}; choose from {', '.join(QA_CONVENTIONS)}",
                                 param_hint="--qa-convention")
    predictions = load_predictions(pred)
    if not predictions:
        raise ValueError(f"{pred}: no predictions in this file (is it what `p3d predict` wrote?)")

    scene_objects = load_scene_objects(boxes) if boxes else None
    chosen = [r for r in load_records(records) if split is None or r.split == split]
    if not chosen:
        raise typer.BadParameter(f"{records}: no records of split {split!r}", param_hint="--split")
    from pipeline.eval.captions import CAPTION_CONVENTIONS

    if caption_convention not in CAPTION_CONVENTIONS:
        raise typer.BadParameter(f"{caption_convention!r}; choose from {', '.join(CAPTION_CONVENTIONS)}",
                                 param_hint="--caption-convention")
    results = evaluate(chosen, predictions, task, scene_objects, caption_convention, qa_convention=qa_convention)
    typer.echo(format_table(results))
    if json_out:
        write_json(results, json_out)
        typer.echo(f"wrote {json_out}")
    # Exit 3 is for records with no prediction line at all. A `not_asked` line is p3d predict's own
    # answer for a record it could not ask (its object matches no segment): scored as a miss and
    # noted per task, but the predictions file is complete.
    from pipeline.eval.evaluate import select_records

    num_missing = sum(1 for r in select_records(chosen, task) if predictions.get(r.id) is None)
    if num_missing:
        typer.echo(f"{num_missing} records had no prediction and were scored as wrong (exit {EXIT_MISSING})",
                   err=True)
        raise typer.Exit(EXIT_MISSING)


@dataset_app.command("stats")
def stats(records: Path = typer.Argument(..., help="annotation records JSONL")) -> None:
    """Counts of records by source and task."""
    from pipeline.eval.stats import format_stats, record_stats
    from schemas.record import iter_records

    if not records.is_file():
        typer.echo(f"error: {records}: records file not found", err=True)
        raise typer.Exit(2)
    typer.echo(format_stats(record_stats(iter_records(records))))
