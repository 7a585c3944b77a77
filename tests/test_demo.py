"""A shortened `p3d demo`: the whole chain through the user commands on a tiny toy world (the CI
smoke test of issue 7). Checks the artifacts every step must leave, not the learning (that needs
the full demo's data and minutes of training)."""

import json
import os
import sys
from pathlib import Path

import pytest

from schemas import load_records, load_workflow


@pytest.mark.slow
def test_demo_chain_writes_report_with_tables(tmp_path):
    """The README's CI smoke door, `make smoke`, with its outputs moved under tmp by SET."""
    import subprocess

    root = Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("P3D_WORKFLOW", "WORKFLOW", "SET", "MAKEFLAGS", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                        "MASTER_PORT", "MASTER_ADDR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    moved = (f"out={tmp_path / 'data'} source.path={tmp_path / 'data' / 'scenes'} train.out={tmp_path / 'train'} "
             f"demo.runs={tmp_path / 'runs'}")
    proc = subprocess.run(["make", "smoke", f"SET={moved}"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resolved = load_workflow(tmp_path / "runs" / "smoke" / "resolved_workflow.yaml")
    assert resolved.source.toy.num_scenes == 4 and resolved.out == str(tmp_path / "data")
    report = tmp_path / "runs" / "smoke" / "report.md"

    text = report.read_text()
    assert "## Held-out metrics after stage 4" in text and "## Ablations in miniature" in text
    for variant in ("grouping-k32", "no-grouping-k32", "grouping-k16"):
        assert f"| {variant} |" in text
    assert "| chance |" in text
    val_ids = {r.id for r in load_records(tmp_path / "data" / "annotations.jsonl") if r.split == "val"}
    preds = [json.loads(line) for line in (tmp_path / "runs" / "smoke" / "main" / "predictions.jsonl").open()]
    assert preds and {p["id"] for p in preds} <= val_ids
    scores = json.loads((tmp_path / "runs" / "smoke" / "main" / "eval.json").read_text())
    tasks = {r["name"].split("/")[-1] for r in scores["results"]}
    assert {"object_name", "grounding", "counting"} <= tasks
    pictures = list((tmp_path / "runs" / "smoke" / "viz").glob("*.png"))
    assert len(pictures) == 1 and pictures[0].stat().st_size > 10_000
    # p3d view beside each picture, and p3d ask on the held-out scene filmed into a video (p3d/demo/ask.py),
    # with the answers beside the truth.
    views = sorted(p.name for p in (tmp_path / "runs" / "smoke" / "view").glob("*.html"))
    assert views == [f"{pictures[0].stem}-ask.html", f"{pictures[0].stem}.html"]
    asked = json.loads((tmp_path / "runs" / "smoke" / "ask" / f"{pictures[0].stem}.json").read_text())
    assert asked["kind"] == "video" and asked["answers"] and asked["frame"]["method"] == "sensor_poses"
    assert f"## Asking a held-out scene (`p3d ask`): {pictures[0].stem}" in text and "| ground truth |" in text
    for stage in (1, 2, 3, 4):
        assert (tmp_path / "train" / f"stage{stage}" / "model" / "p3d_config.json").exists()


def test_only_the_variant_identical_to_the_main_run_reuses_its_scores():
    from p3d.demo.ablations import ablation_variants, repeats_main_run

    wf = load_workflow(Path(__file__).parents[1] / "workflows" / "toy-ablations.yaml")
    k = wf.cluster.proxies
    reused = [name for name, change in ablation_variants(wf) if repeats_main_run(wf, change)]
    assert reused == [f"grouping-k{k}"]
    # Anything that makes the variant's stage 4 differ from the main one means training it.
    ab = wf.demo.ablations
    for changed in (wf.model_copy(update={"demo": wf.demo.model_copy(update={
                        "ablations": ab.model_copy(update={"epochs": ab.epochs + 1})})}),
                    wf.model_copy(update={"demo": wf.demo.model_copy(update={
                        "ablations": ab.model_copy(update={"tasks": ab.tasks[:-1]})})}),
                    wf.model_copy(update={"cluster": wf.cluster.model_copy(update={"grouping": False})})):
        assert not repeats_main_run(changed, {"proxies": k, "grouping": True})
    shuffled = wf.model_copy(update={"demo": wf.demo.model_copy(update={
        "ablations": ab.model_copy(update={"tasks": list(reversed(ab.tasks))})})})
    assert repeats_main_run(shuffled, {"proxies": k, "grouping": True})


def test_without_the_grouping_pair_only_the_budgets_and_the_position_ids_remain():
    from p3d.demo.ablations import ablation_variants, repeats_main_run

    wf = load_workflow(Path(__file__).parents[1] / "workflows" / "toy-ablations.yaml")
    k, ab = wf.cluster.proxies, wf.demo.ablations

    def variants(**update):
        changed = wf.model_copy(update={"demo": wf.demo.model_copy(update={
            "ablations": ab.model_copy(update={"grouping_pair": False, **update})})})
        return changed, [name for name, _ in ablation_variants(changed)]

    other = "positions-bfs" if wf.train.rope_positions == "height" else "positions-height"
    assert variants(budgets=[])[1] == [f"{other}-k{k}"]
    assert variants(budgets=[2 * k])[1] == [f"grouping-k{2 * k}", f"{other}-k{k}"]
    # A budget at the main run's own clustering stays a row, and takes the main run's scores.
    changed, names = variants(budgets=[k])
    assert names == [f"grouping-k{k}", f"{other}-k{k}"]
    assert repeats_main_run(changed, {"proxies": k, "grouping": True})
    # With the pair (the default), its ungrouped side is a variant.
    assert f"no-grouping-k{k}" in [name for name, _ in ablation_variants(wf)]


def test_the_default_demo_compares_the_position_ids_and_the_ablation_demo_every_variant_on_its_data():
    """`make demo` (toy.yaml) expects every task above chance and trains one variant, the rotary
    position ids; toy-ablations.yaml runs the paper's other ablations on the same toy store, in runs
    of its own, so the two demos share the expensive steps and never overwrite each other."""
    from p3d.demo.ablations import ablation_variants, runs_oracle

    root = Path(__file__).parents[1] / "workflows"
    toy, ablations = load_workflow(root / "toy.yaml"), load_workflow(root / "toy-ablations.yaml")
    k = toy.cluster.proxies
    assert [name for name, _ in ablation_variants(toy)] == [f"positions-bfs-k{k}"]
    assert toy.demo.beyond_budget == {}
    spatial = {"distance", "room_size", "relative_direction", "object_size"}
    trained = {t for s in toy.train.stages
               for t in (*(s.tasks or ()), *(s.record_tasks or ()), *(s.replay_tasks or ()), *(s.layout_tasks or ()))}
    assert spatial <= trained
    assert (ablations.out, ablations.source, ablations.features, ablations.cluster) == \
        (toy.out, toy.source, toy.features, toy.cluster)
    assert ablations.name != toy.name and ablations.train.out != toy.train.out
    names = [name for name, _ in ablation_variants(ablations)]
    assert {f"no-grouping-k{k}", f"grouping-k{k // 2}", f"positions-bfs-k{k}"} <= set(names)
    assert runs_oracle(ablations) and not runs_oracle(toy)
    # what the shorter recipe does not teach, the report names beside its scores
    assert set(ablations.demo.beyond_budget) == spatial - {"object_size"}


def _demo_run(tmp_path):
    from p3d.demo.steps import DemoRun

    wf_path = Path(__file__).parents[1] / "workflows" / "toy.yaml"
    return DemoRun(wf_path, load_workflow(wf_path), tmp_path / "run")


def _timed_child(out: Path, seconds: float) -> list[str]:
    code = ("import os, sys, time; t0 = time.time(); time.sleep(float(sys.argv[2])); "
            "open(sys.argv[1], 'w').write(f\"{t0} {time.time()} {os.environ.get('OMP_NUM_THREADS')}\"); "
            "print('slept')")
    return [sys.executable, "-c", code, str(out), str(seconds)]


@pytest.mark.parametrize("workers", [1, 2])
def test_side_by_side_jobs_overlap_only_when_asked_and_split_the_cores(tmp_path, capsys, workers):
    from p3d.demo.steps import run_side_by_side

    demo = _demo_run(tmp_path)

    def job(name):
        def run(label, threads):
            demo.run(f"sleep {name}", _timed_child(tmp_path / name, 1.0), label, threads)
            return name.upper()
        return run

    results = run_side_by_side(demo, {"a": job("a"), "b": job("b")}, workers=workers)
    assert results == {"a": "A", "b": "B"}
    (a0, a1, a_threads), (b0, b1, b_threads) = [(tmp_path / n).read_text().split() for n in "ab"]
    overlap = min(float(a1), float(b1)) - max(float(a0), float(b0))
    assert (overlap > 0) == (workers == 2)
    expected = str(max(1, (os.cpu_count() or 1) // 2)) if workers == 2 else os.environ.get("OMP_NUM_THREADS", "None")
    assert a_threads == b_threads == expected
    out = capsys.readouterr().out
    assert ("[a] slept" in out and "[b] slept" in out) == (workers == 2)
    assert sorted(s.name for s in demo.steps) == ["sleep a", "sleep b"]
    assert len(list((tmp_path / "run" / "logs").glob("*.log"))) == 2


def test_a_failing_side_job_lets_the_others_finish_then_fails_the_demo(tmp_path):
    from p3d.demo.steps import run_side_by_side

    demo = _demo_run(tmp_path)

    def fails(label, threads):
        # more lines than the failure repeats: only the last ones, the cause among them, come back
        code = "for i in range(100): print('line', i)\nraise SystemExit('the cause')"
        demo.run("broken", [sys.executable, "-c", code], label, threads)

    def slow(label, threads):
        demo.run("slow", _timed_child(tmp_path / "slow", 1.0), label, threads)

    with pytest.raises(SystemExit, match=r"broken.*exit 1") as failure:
        run_side_by_side(demo, {"broken": fails, "slow": slow}, workers=2)
    assert (tmp_path / "slow").exists()
    message = str(failure.value)
    assert "| the cause" in message and "| line 99" in message and "| line 1\n" not in message


def test_position_variant_trains_stage_4_alone_on_the_main_proxy_set(tmp_path):
    """The position-id variant changes `train.rope_positions` and nothing else: no clustering of its
    own, stage 4 from the main stage-3 model; a clustering variant keeps the main layout."""
    from p3d.demo.ablations import _variant_workflow, positions_variant

    wf = load_workflow(Path(__file__).parents[1] / "workflows" / "toy.yaml")
    name, change = positions_variant(wf)
    assert name == f"positions-bfs-k{wf.cluster.proxies}" and wf.train.rope_positions == "height"
    stage3, records = tmp_path / "stage3", tmp_path / "records.jsonl"
    variant = _variant_workflow(wf, name, change, stage3, records, tmp_path)
    assert variant.train.rope_positions == "bfs"
    assert variant.cluster == wf.cluster and variant.train.proxies == wf.train.proxies
    stage4 = variant.train.stage(4)
    assert stage4.init_from == str(stage3) and stage4.tasks == wf.demo.ablations.tasks
    assert stage4.replay_tasks == wf.train.stage(4).replay_tasks
    other = _variant_workflow(wf, "no-grouping", {"proxies": wf.cluster.proxies, "grouping": False}, stage3,
                              records, tmp_path)
    assert other.train.rope_positions == "height" and other.train.proxies == "ablation-no-grouping"
    assert other.cluster.grouping is False


def test_report_has_the_position_table_with_chance(tmp_path):
    from p3d.demo.result import DemoResult
    from p3d.report import write_report

    def scores(distance, grounding):
        return {"results": [
            {"name": "toy/distance", "metrics": {"MRA": distance}, "chance": {"MRA": 37.9}, "num_samples": 9},
            {"name": "toy/grounding", "metrics": {"Acc@0.25": grounding, "Acc@0.5": 1.0},
             "chance": {"Acc@0.25": 17.2, "Acc@0.5": 5.0}, "num_samples": 9}]}

    demo = _demo_run(tmp_path)
    demo.run_dir.mkdir(parents=True)
    result = DemoResult(demo.workflow_path, demo.workflow, demo.run_dir, scores(41.0, 30.0), [], 1.0,
                        positions={"height (main)": scores(41.0, 30.0), "bfs": scores(44.5, 28.0)})
    text = write_report(result).read_text()
    # the held-out section says what stage 4 replays, and how many of each, as the workflow sets it
    stage4 = demo.workflow.train.stage(4)
    assert stage4.replay_tasks, "the toy workflow's stage 4 replays the spatial tasks"
    assert (f"and replayed {', '.join(stage4.replay_tasks)} ({stage4.replay_per_task} record(s) of each per "
            "scene and epoch") in text
    table = text.split("## Rotary position ids")[1]
    assert "| toy/distance | toy/grounding |" in table
    assert "| height (main) | 41.0 (MRA) | 30.0 (Acc@0.25) |" in table
    assert "| bfs | 44.5 (MRA) | 28.0 (Acc@0.25) |" in table
    assert "| chance | 37.9 (MRA) | 17.2 (Acc@0.25) |" in table


def test_report_says_which_model_ids_have_random_weights():
    from p3d.report import _weights_note

    assert "toy models" in _weights_note("toy:qwen2_5_vl")
    assert "real architecture with random weights" in _weights_note("random:qwen2_5_vl_3b@layers=1")
    assert _weights_note("Qwen/Qwen2.5-VL-7B-Instruct") == "."


def test_report_reads_the_ablation_rows_and_findings_from_the_result(tmp_path):
    """The ablation section comes from the DemoResult alone: its rows, whether a variant reused the
    main run, and the oracle finding only when the result names an oracle variant."""
    from p3d.demo.result import DemoResult, Step
    from p3d.report import write_report

    def grounding(acc):
        return {"results": [{"name": "toy/grounding", "metrics": {"Acc@0.25": acc}, "chance": {"Acc@0.25": 17.2},
                             "num_samples": 9}]}

    demo = _demo_run(tmp_path)
    demo.run_dir.mkdir(parents=True)
    rows = {"grouping-k64": grounding(40.0), "no-grouping-k64": grounding(25.0), "oracle": grounding(80.0)}
    steps = [Step("cluster", ["p3d", "cluster"], 2.0, 0.0), Step("features", ["p3d", "features"], 3.0, 5.0)]
    result = DemoResult(demo.workflow_path, demo.workflow, demo.run_dir, grounding(40.0), steps, 9.0,
                        ablations=rows, main_clustering_variant="grouping-k64", oracle_variant="oracle",
                        reuses_main_run=True)
    text = write_report(result).read_text()
    assert "| grouping-k64 | 40.0 (Acc@0.25) |" in text and "| no-grouping-k64 | 25.0 (Acc@0.25) |" in text
    assert "(the variant with the main run's clustering is the main run)." in text
    assert "Acc@0.25 40.0 with grouping versus 25.0 without (+15.0 points" in text
    assert "grounds with Acc@0.25 40.0 (50 % of the oracle's)" in text  # 100 * 40 / 80
    assert "| cluster | 0 | 2.0 |\n| features | 5 | 3.0 |\n| **total** | | 9.0 |" in text
    no_oracle = DemoResult(demo.workflow_path, demo.workflow, demo.run_dir, grounding(40.0), steps, 9.0,
                           ablations=rows, main_clustering_variant="grouping-k64")
    text = write_report(no_oracle).read_text()
    assert "of the oracle's" not in text and "is the main run)." not in text


def test_report_names_every_task_at_or_under_chance_and_whether_the_workflow_expects_it():
    """A task at or under chance on its headline metric is said in words: with where it is measured
    when the workflow names it in `demo.beyond_budget`, as not expected otherwise; a task above
    chance is not named, whether listed or not."""
    from p3d.report import under_chance_lines

    def row(task, metrics, chance):
        return {"name": f"toy/{task}", "metrics": metrics, "chance": chance, "num_samples": 9}

    scores = {"results": [
        row("distance", {"MRA": 27.2}, {"MRA": 45.9}),
        row("room_size", {"MRA": 73.1}, {"MRA": 73.1}),  # equal to chance counts as at chance
        row("object_size", {"MRA": 81.6}, {"MRA": 46.5}),  # listed, but above chance
        # the headline is Acc@0.25 (above chance); Acc@0.5 under chance is no headline
        row("grounding", {"Acc@0.25": 31.4, "Acc@0.5": 11.9}, {"Acc@0.25": 17.2, "Acc@0.5": 17.2}),
        row("counting", {"EM": 50.0}, {"EM": 58.8}),
        row("caption", {"CIDEr": 0.5}, {}),  # no chance: never named
    ]}
    where = "docs/RESULTS.md#spatial-probe"
    text = "\n".join(under_chance_lines(scores, {"distance": where, "room_size": where, "object_size": where}))
    assert ("do not train toy/distance 27.2 (MRA; chance 45.9), toy/room_size 73.1 (MRA; chance 73.1) "
            f"above chance (measured: {where};") in text
    assert "not expected (not in `demo.beyond_budget`): toy/counting 50.0 (EM; chance 58.8)." in text
    assert "object_size" not in text and "grounding" not in text and "caption" not in text
    assert under_chance_lines({"results": [scores["results"][2]]}, {}) == []


def test_report_says_which_answers_ran_into_the_generation_limit():
    from p3d.report import cut_lines

    scores = {"results": [
        {"name": "toy/distance", "num_cut": 3, "num_samples": 115},
        {"name": "toy/room_size", "num_cut": 0, "num_samples": 48},
        {"name": "toy/counting", "num_samples": 9},  # an eval.json from before num_cut
        {"name": "toy/relative_direction", "num_cut": 1, "num_samples": 119},
    ]}
    text = "\n".join(cut_lines(scores, 48))
    assert "(48 tokens)" in text and "toy/distance 3 of 115, toy/relative_direction 1 of 119." in text
    assert "room_size" not in text and "counting" not in text
    assert cut_lines({"results": scores["results"][1:3]}, 48) == []
