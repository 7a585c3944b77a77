"""`p3d ask SOURCE "question" --checkpoint DIR` and `p3d view SCENE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from schemas.cli_workflow import SET_OPTION

_FRAME_WORDS = {"sensor_poses": "the scene's world frame, fitted to the sensor's camera poses",
                "gravity": "gravity-aligned (z up, from the {up})", "identity": "the geometry backend's own world frame",
                "none": "the source's own frame"}
_SCALE_WORDS = {"metric": "metric geometry", "camera_centres": "the sensor's camera centres",
                "median_depth_ratio": "sensor depth (median depth ratio)",
                "depth_model": "a metric depth model (geometry.depth_model)",
                "prior": "the workflow's scale prior (geometry.scale_prior; the true scale is unknown)"}


def frame_description(alignment: dict) -> str:
    """One line: the frame the boxes are in and where their metres come from."""
    method = alignment.get("method", "none")
    frame = _FRAME_WORDS.get(method, method).format(up=alignment.get("up_method") or "cameras")
    scale = _SCALE_WORDS.get(alignment.get("scale_method"), alignment.get("scale_method"))
    return f"{frame}; metres from {scale} ({alignment.get('scale_method')}, scale {alignment.get('scale', 1.0):.4g})"


def read_questions(path: Path) -> list[str]:
    """One question per line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise ValueError(f"--questions {path}: file not found")
    questions = [q.strip() for q in path.read_text().splitlines() if q.strip() and not q.lstrip().startswith("#")]
    if not questions:
        raise ValueError(f"--questions {path}: no questions in it (one per line)")
    return questions


def _fmt3(values) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def ask(
    source: Path = typer.Argument(..., help="a video, a folder of frames, a ScanNet or toy scene folder, or a "
                                            "triplet-store scene (<out>/features/<scene_id>)"),
    question: Optional[str] = typer.Argument(None, help="the question (or --questions FILE)"),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="exported model folder (<train.out>/stage<N>/model)"),
    questions: Optional[Path] = typer.Option(None, "--questions", help="a file of questions, one per line, answered "
                                                                       "from one encoding of the scene"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document instead of text"),
    workflow: Optional[Path] = typer.Option(None, "--workflow", "-w", help="default: the checkpoint's own "
                                                                           "resolved_workflow.yaml"),
    sets: Optional[list[str]] = SET_OPTION,
    cache: Optional[Path] = typer.Option(None, "--cache", help="cache root (default $P3D_CACHE/ask, else "
                                                               "~/.cache/p3d/ask)"),
    save: Optional[Path] = typer.Option(None, "--save", help="also write the JSON document to this file"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write the 3D viewer with the answers here"),
    max_new_tokens: int = typer.Option(32, min=1),
    kv_cache: bool = typer.Option(True, "--kv-cache/--no-kv-cache", help="encode the scene once for all questions"),
) -> None:
    """Answer questions about one scene of your own with a trained checkpoint; objects come back with
    their category and box in metres."""
    from p3d.ask.answer import answer_questions, load_model
    from p3d.ask.inputs import open_input
    from p3d.ask.prepare import checkpoint_workflow, default_cache_root, prepare_scene, sensor_backends
    from pipeline.sources.base import SceneReadError
    from schemas.cli_workflow import fail

    say = (lambda line: typer.echo(line, err=True)) if as_json else typer.echo
    try:
        if (question is None) == (questions is None):
            raise ValueError("give one question, or --questions FILE")
        asked = read_questions(questions) if questions is not None else [question]
        run = checkpoint_workflow(checkpoint, workflow, sets or [])
        origin = "the checkpoint's own" if workflow is None else "--workflow"
        say(f"workflow: {run.path} ({origin})" + "".join(f" --set {s}" for s in run.sets))
        ask_input = open_input(source, run.workflow.features.num_frames, ground_truth=bool(sensor_backends(run)))
        scene = prepare_scene(run, ask_input, cache or default_cache_root(), echo=say)
        model, collate, mode = load_model(checkpoint)
        answers = answer_questions(model, collate, mode, scene.sample, asked, max_new_tokens, kv_cache=kv_cache)
    except (ValueError, SceneReadError) as e:
        fail(str(e))
    doc = {"scene_id": scene.scene_id, "source": str(source), "kind": ask_input.kind, "checkpoint": str(checkpoint),
           "cache": str(scene.cache_dir), "cached": scene.cached,
           "frame": dict(scene.alignment, description=frame_description(scene.alignment)),
           "answers": [{"question": a.question, "text": a.text, "objects": a.objects,
                        "boxes": [o["box"] for o in a.objects]} for a in answers]}
    if save is not None:
        from schemas.io import write_json_atomic

        write_json_atomic(save, doc)
    if html is not None:
        from p3d.view import write_scene_html

        write_scene_html(scene.sample, html, f"{scene.scene_id}: {source}", doc["answers"])
        say(f"viewer: {html}")
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    _print_answers(answers, doc["frame"]["description"])


def _print_answers(answers, frame_description: str) -> None:
    typer.echo(f"boxes in {frame_description}")
    for a in answers:
        typer.echo(f"Q: {a.question}\nA: {a.text}")
        for o in a.objects:
            box = o["box"]
            typer.echo(f"   {o['identifier']} {o['category']} ({o['category_from']}): box centre {_fmt3(box['center'])} m, "
                       f"size {_fmt3(box['size'])} m")


def view(
    scene: str = typer.Argument(..., help="scene id (of the workflow's proxy set, or --out/--name)"),
    workflow: Optional[Path] = typer.Option(None, "--workflow", "-w", help="workflow YAML (default: $P3D_WORKFLOW, "
                                                                           "else the embedded workflows/toy.yaml)"),
    sets: Optional[list[str]] = SET_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="data root; overrides the workflow's out"),
    name: Optional[str] = typer.Option(None, "--name", help="proxy set under <out>/proxies/"),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="a predictions file (p3d predict) or a "
                                                                           "`p3d ask --json` output: its boxes and "
                                                                           "answers for this scene are drawn"),
    html: Optional[Path] = typer.Option(None, "--html", help="default <out>/proxies/<name>/view/<scene>.html"),
) -> None:
    """Write one scene's proxies as a self-contained 3D HTML page (opens offline): points by segment, the
    BFS path, segment names and boxes, and a predictions file's boxes and answers."""
    from p3d.view import load_scene_predictions, write_scene_html
    from pipeline.cluster.cli import _missing_set, _resolve
    from pipeline.cluster.shards import load_scene_proxies, proxies_dir
    from schemas.cli_workflow import fail
    from schemas.layout import scene_page

    root, config, _ = _resolve(workflow, out, sets, name=name)
    _missing_set(root, config.name)
    try:
        sample = load_scene_proxies(root, config.name, scene)
        preds = load_scene_predictions(predictions, scene) if predictions is not None else None
    except ValueError as e:
        fail(str(e))
    dest = html or scene_page(proxies_dir(root, config.name), scene)
    title = f"{scene}: {sample['meta'].num_proxies} proxies, {len(sample['segments'])} segments ({config.name})"
    typer.echo(str(write_scene_html(sample, dest, title, preds)))


def register(app: typer.Typer) -> None:
    app.command()(ask)
    app.command()(view)
