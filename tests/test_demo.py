"""A shortened `p3d demo`: the whole chain through the user commands on a tiny toy world (the CI
smoke test of issue 7). Checks the artifacts every step must leave, not the learning (that needs
the full demo's data and minutes of training)."""

import json
from pathlib import Path

import pytest
import yaml

from schemas import load_records, load_workflow


@pytest.mark.slow
def test_demo_chain_writes_report_with_tables(tmp_path):
    from pipeline.demo import run_demo

    base = load_workflow(Path(__file__).parents[1] / "workflows" / "toy.yaml").model_dump(mode="json")
    base.update(name="smoke", out=str(tmp_path / "data"))
    base["source"].update(path=str(tmp_path / "data" / "scenes"), toy={"num_scenes": 4, "frames": 12, "seed": 3})
    base["features"].update(num_frames=6, image_size=[112, 140])
    base["cluster"].update(proxies=32, scenes_per_shard=2)
    base["train"].update(out=str(tmp_path / "train"),
                         stages=[dict(s, epochs=1, max_steps=2) for s in base["train"]["stages"]])
    base["demo"] = {"runs": str(tmp_path / "runs"), "viz_scenes": 1,
                    "ablations": {"budgets": [16, 32], "tasks": ["object_name", "grounding"], "epochs": 1}}
    wf_path = tmp_path / "smoke.yaml"
    wf_path.write_text(yaml.safe_dump(base))

    report = run_demo(wf_path)

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
    for stage in (1, 2, 3, 4):
        assert (tmp_path / "train" / f"stage{stage}" / "model" / "p3d_config.json").exists()


def test_only_the_variant_identical_to_the_main_run_reuses_its_scores():
    from pipeline.demo import ablation_variants, repeats_main_run

    wf = load_workflow(Path(__file__).parents[1] / "workflows" / "toy.yaml")
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
