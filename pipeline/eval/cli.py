"""CLI verbs of the evaluation stage: `convert`, `eval`, and `dataset stats`."""

from __future__ import annotations

from pathlib import Path

import typer

dataset_app = typer.Typer(help="Inspect annotation record files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
    app.command("eval")(evaluate_cmd)
    app.add_typer(dataset_app, name="dataset")


def convert(
    dataset: str = typer.Argument(..., help="scanqa | sqa3d | scanrefer | scan2cap | multi3drefer | mmscan | sr91k | vsibench"),
    files: list[Path] = typer.Argument(..., help="the dataset's own files (SQA3D: questions and annotations)"),
    out: Path = typer.Option(..., "--out", "-o", help="records JSONL to write"),
    boxes: Path | None = typer.Option(None, "--boxes", help="scene objects JSON (scene_id -> [ObjectInfo]) or scenes folder"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 if any entry could not be converted"),
    label_map: Path | None = typer.Option(None, "--label-map", help="scanrefer: ScanNet's scannetv2-labels.combined.tsv, for the official unique/multiple split"),
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
    n = write_records(result.records, out)
    typer.echo(result.summary())
    typer.echo(f"wrote {n} records to {out}")
    if strict and result.problems:
        raise typer.Exit(1)


def evaluate_cmd(
    task: str = typer.Option("all", "--task", help="a task name, a benchmark/source name, or 'all'"),
    pred: Path = typer.Option(..., "--pred", help="predictions JSONL (pipeline.eval.predictions.Prediction)"),
    records: Path = typer.Option(..., "--records", help="annotation records JSONL"),
    json_out: Path | None = typer.Option(None, "--json", help="write every number and per-sample scores here"),
    boxes: Path | None = typer.Option(None, "--boxes", help="scene objects (for id -> box lookup and grounding chance)"),
    split: str | None = typer.Option(None, "--split", help="score only records of this split (default: all)"),
    caption_convention: str = typer.Option("scan2cap", "--caption-convention", help="Scan2Cap m@kIoU: scan2cap (official, IoU > k) | chatscene (IoU >= k, PTB-tokenized)"),
) -> None:
    """Score predictions against records; prints one table with chance levels beside each number."""
    from pipeline.eval.evaluate import evaluate, format_table, write_json
    from pipeline.eval.predictions import load_predictions, load_scene_objects
    from schemas.record import load_records

    scene_objects = load_scene_objects(boxes) if boxes else None
    chosen = [r for r in load_records(records) if split is None or r.split == split]
    if not chosen:
        raise typer.BadParameter(f"{records}: no records of split {split!r}", param_hint="--split")
    from pipeline.eval.captions import CAPTION_CONVENTIONS

    if caption_convention not in CAPTION_CONVENTIONS:
        raise typer.BadParameter(f"{caption_convention!r}; choose from {', '.join(CAPTION_CONVENTIONS)}",
                                 param_hint="--caption-convention")
    results = evaluate(chosen, load_predictions(pred), task, scene_objects, caption_convention)
    typer.echo(format_table(results))
    if json_out:
        write_json(results, json_out)
        typer.echo(f"wrote {json_out}")


@dataset_app.command("stats")
def stats(records: Path = typer.Argument(..., help="annotation records JSONL")) -> None:
    """Counts of records by source and task."""
    from pipeline.eval.stats import format_stats, record_stats
    from schemas.record import iter_records

    typer.echo(format_stats(record_stats(iter_records(records))))
