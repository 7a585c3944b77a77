"""The demo's `report.md`: metric tables with chance beside each number, the ablations, the pictures.

It reads the demo's result (p3d/demo/result.py) and never the code that ran the chain."""

from __future__ import annotations

import math
import os
from pathlib import Path

from p3d.demo.ask import report_lines
from p3d.demo.result import DemoResult
from schemas.layout import REPORT_FILE, scene_page

# The headline metric of each toy task in the ablation table.
HEADLINE = {
    "grounding": "Acc@0.25",
    "multi_grounding": "F1@0.25",
    "object_name": "EM",
    "object_id": "EM",
    "counting": "EM",
    "relative_direction": "Acc",
    "distance": "MRA",
    "object_size": "MRA",
    "room_size": "MRA",
}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}"


def metric_table(scores: dict) -> list[str]:
    lines = ["| task | metric | score | chance | n |", "|---|---|---:|---:|---:|"]
    for res in scores["results"]:
        for metric, value in res["metrics"].items():
            lines.append(f"| {res['name']} | {metric} | {_fmt(value)} | {_fmt(res['chance'].get(metric))} "
                         f"| {res['num_samples']} |")
    return lines


def _headline(res: dict) -> tuple[str, float | None, float | None]:
    task = res["name"].split("/")[-1]
    metric = HEADLINE.get(task) or next(iter(res["metrics"]), "")
    if metric not in res["metrics"]:
        metric = next(iter(res["metrics"]), "")
    return metric, res["metrics"].get(metric), res["chance"].get(metric)


def under_chance_lines(scores: dict, beyond_budget: dict[str, str]) -> list[str]:
    """The tasks whose headline score is at or under chance, in words: those the workflow names in
    `demo.beyond_budget` with where that is measured, any other as not expected."""
    known: dict[str, list[str]] = {}
    unexpected: list[str] = []
    for res in scores["results"]:
        metric, value, chance = _headline(res)
        if value is None or chance is None or value > chance:
            continue
        task = res["name"].split("/")[-1]
        said = f"{res['name']} {_fmt(value)} ({metric}; chance {_fmt(chance)})"
        if task in beyond_budget:
            known.setdefault(beyond_budget[task], []).append(said)
        else:
            unexpected.append(said)
    lines = [f"At or under chance, as measured: the demo's minutes do not train {', '.join(said)} "
             f"above chance (measured: {where}; `demo.beyond_budget`)." for where, said in known.items()]
    if unexpected:
        lines.append(f"At or under chance, not expected (not in `demo.beyond_budget`): {', '.join(unexpected)}.")
    return [line for text in lines for line in ("", text)]


def cut_lines(scores: dict, max_new_tokens: int) -> list[str]:
    """The tasks with answers that ran into the generation limit before their end (eval's `num_cut`):
    an answer cut inside its steps reads as a wrong one, and the score alone cannot say why
    (the spatial recipe's left/right at 7.6 with 16 tokens). measured: docs/RESULTS.md#left-right-signs"""
    cut = [f"{res['name']} {res['num_cut']} of {res['num_samples']}" for res in scores["results"]
           if res.get("num_cut")]
    if not cut:
        return []
    return ["", f"Answers that ran into `eval.max_new_tokens` ({max_new_tokens} tokens) before their end, "
                f"scored as written: {', '.join(cut)}."]


def ablation_table(ablations: dict[str, dict]) -> list[str]:
    tasks: list[str] = []
    for scores in ablations.values():
        for res in scores["results"]:
            if res["name"] not in tasks:
                tasks.append(res["name"])
    header = "| variant | " + " | ".join(tasks) + " |"
    lines = [header, "|---|" + "---:|" * len(tasks)]
    chance_row: dict[str, str] = {}
    for variant, scores in ablations.items():
        by_name = {r["name"]: r for r in scores["results"]}
        cells = []
        for t in tasks:
            if t in by_name:
                metric, value, chance = _headline(by_name[t])
                cells.append(f"{_fmt(value)} ({metric})")
                chance_row.setdefault(t, f"{_fmt(chance)} ({metric})")
            else:
                cells.append("-")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("| chance | " + " | ".join(chance_row.get(t, "-") for t in tasks) + " |")
    return lines


def grouping_finding(ablations: dict[str, dict]) -> str:
    grouped = next((v for k, v in ablations.items() if k.startswith("grouping-")
                    and k.replace("grouping-", "no-grouping-") in ablations), None)
    if grouped is None:
        return ""
    name = next(k for k, v in ablations.items() if v is grouped)
    ungrouped = ablations[name.replace("grouping-", "no-grouping-")]

    def acc(scores):
        for r in scores["results"]:
            if r["name"].endswith("/grounding"):
                return r["metrics"].get("Acc@0.25")
        return None

    a, b = acc(grouped), acc(ungrouped)
    if a is None or b is None:
        return ""
    verdict = "helps" if a > b else "does not help"
    return (f"Semantic grouping {verdict} grounding here: Acc@0.25 {a:.1f} with grouping versus {b:.1f} "
            f"without ({a - b:+.1f} points; the paper reports more than +20).")


def _grounding_acc(scores: dict) -> float | None:
    for r in scores["results"]:
        if r["name"].endswith("/grounding"):
            return r["metrics"].get("Acc@0.25")
    return None


def oracle_finding(main_variant: str, ablations: dict[str, dict], oracle_variant: str, backends: str) -> str:
    """The main run (simulated networks' output contracts) against the oracle backends, on grounding."""
    if main_variant not in ablations or oracle_variant not in ablations:
        return ""
    ours, oracle = _grounding_acc(ablations[main_variant]), _grounding_acc(ablations[oracle_variant])
    if ours is None or oracle is None:
        return ""
    ratio = f" ({100 * ours / oracle:.0f} % of the oracle's)" if oracle > 0 else ""
    return (f"The main run ({backends}: camera-0 geometry at an unknown scale aligned to the poses, "
            f"per-frame masks merged and matched to the instances) grounds with Acc@0.25 {ours:.1f}"
            f"{ratio}; the oracle backends (sensor depth and poses, ground-truth masks) give {oracle:.1f}.")


def _weights_note(model: str) -> str:
    """What the report says of a model id's weights: `toy:` and `random:` ids have random weights
    that p3d built, and only this run trained."""
    from pipeline.models.real_configs import is_random_id
    from pipeline.toy.models import is_toy_id

    if is_toy_id(model):
        return " (random-weight toy models built by p3d, trained only here)."
    if is_random_id(model):
        return " (the real architecture with random weights, built by p3d, trained only here)."
    return "."


def write_report(result: DemoResult) -> Path:
    """`<run dir>/report.md`, written atomically."""
    wf, run_dir = result.workflow, result.run_dir
    path = run_dir / REPORT_FILE
    lines = [f"# p3d demo report: `{wf.name}`", "",
             f"Workflow `{result.workflow_path}`; {wf.cluster.proxies} proxies per scene; evaluated on the "
             f"`{wf.eval.split}` split (scenes never seen in training). Models: `{wf.train.model}`"
             + _weights_note(wf.train.model), "",
             "## Held-out metrics after stage 4", ""]
    stage4 = wf.train.stage(4)
    if stage4 is not None and stage4.tasks:
        replayed = ""
        if stage4.replay_tasks:
            replayed = (f" and replayed {', '.join(stage4.replay_tasks)} ({stage4.replay_per_task} record(s) of "
                        "each per scene and epoch, as stages 1-3 taught them)")
        lines += [f"Stage 4 trained on the tasks {', '.join(stage4.tasks)}{replayed}; the other tasks' rows "
                  "show what stages 1-3 and those tasks carry over (no training of their own).", ""]
    if wf.eval.mbr_tasks:
        lines += [f"Answers of {', '.join(wf.eval.mbr_tasks)} are decoded by minimum Bayes risk under MRA over "
                  f"{wf.eval.mbr_samples} sampled answers (`eval.mbr_tasks`, trainer/predict.py); every other "
                  "answer is greedy.", ""]
    lines += metric_table(result.main)
    lines += under_chance_lines(result.main, wf.demo.beyond_budget)
    lines += cut_lines(result.main, wf.eval.max_new_tokens)
    lines += _ablation_section(result)
    lines += _pictures_section(result)
    lines += report_lines(result.asked, run_dir)
    lines += _steps_section(result)
    from schemas.io import atomic_open

    with atomic_open(path) as f:
        f.write("\n".join(lines))
    return path


def _ablation_section(result: DemoResult) -> list[str]:
    wf, ablations, positions = result.workflow, result.ablations, result.positions
    lines: list[str] = []
    if ablations:
        lines += ["", "## Ablations in miniature", "",
                  f"Each variant re-clusters the same triplets and trains stage 4 from the same stage-3 "
                  f"model for {wf.demo.ablations.epochs:g} epochs on the tasks "
                  f"{', '.join(wf.demo.ablations.tasks)}; scores on the held-out split"
                  + (" (the variant with the main run's clustering is the main run)."
                     if result.reuses_main_run else "."), ""]
        lines += ablation_table(ablations)
        finding = grouping_finding(ablations)
        if finding:
            lines += ["", finding]
        backends = f"{wf.features.geometry.kind} + {wf.features.segmenter.kind}"
        finding = (oracle_finding(result.main_clustering_variant, ablations, result.oracle_variant, backends)
                   if result.oracle_variant else "")
        if finding:
            lines += ["", finding]
    if positions:
        lines += ["", "## Rotary position ids", "",
                  "The same stage-3 model, clustering, tasks and epochs; stage 4 with each layout of the "
                  "proxies' rotary position ids (`train.rope_positions`, trainer/positions.py): `height` "
                  "gives every proxy one time step and its height bin, `bfs` makes the time step the "
                  "proxy's BFS index. Held-out scores.", ""]
        lines += ablation_table(positions)
    return lines


def _pictures_section(result: DemoResult) -> list[str]:
    pictures, run_dir = result.pictures, result.run_dir
    lines: list[str] = []
    if pictures:
        lines += ["", "## Proxies of held-out scenes", "",
                  "Top and 3D views coloured by segment, with the BFS path (`p3d viz`).", ""]
        lines += [f"![{p.stem}]({os.path.relpath(p, run_dir)})" for p in pictures]
        views = [scene_page(run_dir, p.stem) for p in pictures]
        lines += ["", "3D viewers (`p3d view`, one self-contained HTML file each, with the main run's predictions): "
                  + ", ".join(f"[{v.stem}](view/{v.name})" for v in views if v.exists())]
    return lines


def _steps_section(result: DemoResult) -> list[str]:
    steps = sorted(result.steps, key=lambda s: s.started)
    overlap = any(a.started + a.seconds > b.started for a, b in zip(steps, steps[1:]))
    lines = ["", "## Steps", ""]
    if overlap:
        lines += ["Stage 4 and the ablation variants ran side by side (`demo.jobs`), so their seconds "
                  "overlap; the total is the wall clock.", ""]
    lines += ["| step | started at | seconds |", "|---|---:|---:|"]
    lines += [f"| {s.name} | {s.started:.0f} | {s.seconds:.1f} |" for s in steps]
    lines += [f"| **total** | | {result.wall_seconds:.1f} |", ""]
    return lines
