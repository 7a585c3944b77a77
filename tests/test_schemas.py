import json

import pytest

from schemas import SCHEMAS, Record, SchemaError, load_records, load_workflow, write_records


def test_every_schema_exports_json_schema():
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        assert schema["type"] == "object", name
        assert schema["properties"], name


def test_record_roundtrip(tmp_path):
    recs = [
        Record(id="a", scene_id="s0", task="qa", source="toy", question="q?", answers=["x"]),
        Record(id="b", scene_id="s0", task="grounding", source="toy", question="the chair",
               target_ids=[3], target_boxes=[{"center": [0, 0, 0], "size": [1, 1, 1]}]),
    ]
    path = tmp_path / "r.jsonl"
    assert write_records(recs, path) == 2
    assert load_records(path) == recs


def test_invalid_record_names_file_line_and_field(tmp_path):
    path = tmp_path / "r.jsonl"
    good = {"id": "a", "scene_id": "s", "task": "qa", "source": "toy", "question": "q"}
    bad = dict(good, target_ids=["not-an-int"])
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(SchemaError, match=r"r\.jsonl:2: field 'target_ids\.0'"):
        load_records(path)


def test_unknown_task_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        Record(id="a", scene_id="s", task="dance", source="toy", question="q")


def test_invalid_workflow_names_line_and_field(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("name: x\nout: data\nsource:\n  kind: toy\n  path: p\ncluster:\n  proxies: -3\n")
    with pytest.raises(SchemaError, match=r"w\.yaml:7: field 'cluster\.proxies'"):
        load_workflow(path)


def test_shipped_workflows_validate():
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "workflows").glob("*.yaml"))
    assert files
    for f in files:
        wf = load_workflow(f)
        assert wf.name


def test_workflow_is_the_flag_else_the_environment_else_the_embedded_default(tmp_path, monkeypatch):
    from pathlib import Path

    from schemas.workflow import DEFAULT_WORKFLOW, WORKFLOW_ENV, resolve_workflow

    other = tmp_path / "other.yaml"
    other.write_text("name: other\nout: o\nsource:\n  kind: toy\n  path: p\n")
    monkeypatch.delenv(WORKFLOW_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # the default is the repository's file, wherever the command runs
    lines: list[str] = []
    run = resolve_workflow(None, echo=lines.append)
    assert run.path == DEFAULT_WORKFLOW == Path(__file__).resolve().parents[1] / "workflows" / "toy.yaml"
    assert run.workflow.name == "toy" and "embedded default" in lines[0] and WORKFLOW_ENV in lines[0]
    monkeypatch.setenv(WORKFLOW_ENV, str(other))
    run = resolve_workflow(None, echo=lines.append)
    assert run.workflow.name == "other" and f"from {WORKFLOW_ENV}" in lines[1]
    run = resolve_workflow(DEFAULT_WORKFLOW, echo=lines.append)
    assert run.workflow.name == "toy" and "(--workflow)" in lines[2]


def test_set_overrides_nested_fields_lists_and_name_themselves_in_errors(tmp_path):
    from schemas.workflow import resolve_workflow

    path = tmp_path / "w.yaml"
    path.write_text("name: x\nout: data\nsource:\n  kind: toy\n  path: p\n"
                    "train:\n  stages:\n    - {stage: 1, trainable: [projector], epochs: 2}\n")
    run = resolve_workflow(path, ["cluster.proxies=700", "features.geometry.kind=rgbd", "source.scenes=[a, b]",
                                  "source.toy.num_scenes=3", "train.stages.0.epochs=0.5", "cluster.proxies=64"])
    wf = run.workflow
    assert wf.cluster.proxies == 64  # the later --set wins
    assert wf.features.geometry.kind == "rgbd" and wf.source.scenes == ["a", "b"]
    assert wf.source.toy.num_scenes == 3 and wf.train.stages[0].epochs == 0.5
    assert run.file_workflow.cluster == load_workflow(path).cluster and run.file_workflow.source.toy is None
    # An override's error names the override; the file's keep naming the file and line.
    with pytest.raises(SchemaError, match=r"^--set cluster\.proxies: field 'cluster\.proxies'"):
        resolve_workflow(path, ["cluster.proxies=many"])
    with pytest.raises(SchemaError, match=r"^--set cluster\.proxy: field 'cluster\.proxy': Extra inputs"):
        resolve_workflow(path, ["cluster.proxy=3"])
    with pytest.raises(SchemaError, match=r"^--set train\.stages\.3\.epochs: train\.stages is a list of 1"):
        resolve_workflow(path, ["train.stages.3.epochs=1"])
    with pytest.raises(SchemaError, match=r"^--set cluster: expected section\.key=value"):
        resolve_workflow(path, ["cluster"])
    path.write_text(path.read_text() + "cluster:\n  proxies: -3\n")
    with pytest.raises(SchemaError, match=r"w\.yaml:10: field 'cluster\.proxies'"):
        resolve_workflow(path, ["cluster.seed=4"])


def test_resolved_workflow_is_saved_atomically_and_reloads_to_the_same(tmp_path):
    from schemas.workflow import resolve_workflow

    run = resolve_workflow(None, ["cluster.proxies=700", "features.num_frames=8"])
    saved = run.save(tmp_path / "out" / "resolved_workflow.yaml")
    assert saved.read_text().startswith("# resolved workflow: ") and "--set cluster.proxies=700" in saved.read_text()
    assert load_workflow(saved) == run.workflow and load_workflow(saved).cluster.proxies == 700
    assert [p.name for p in saved.parent.iterdir()] == ["resolved_workflow.yaml"]  # no temporary left


def test_a_clustering_override_names_its_own_proxy_set():
    from schemas.config_cluster import ClusterConfig, derived_name

    wf = ClusterConfig(name="default", proxies=128)
    assert derived_name(wf, wf) == "default"
    assert derived_name(wf, wf.model_copy(update={"proxies": 700})) == "k700"
    assert derived_name(wf, wf.model_copy(update={"proxies": 700, "grouping": False, "seed": 2})) == \
        "k700-no-grouping-seed2"
    assert derived_name(wf, wf.model_copy(update={"space": "xyz+feat"})) == "xyzfeat"
    # How the set is written (shards, workers, executor) does not change what is in it.
    assert derived_name(wf, wf.model_copy(update={"scenes_per_shard": 1, "num_workers": 1,
                                                  "executor": "local"})) == "default"
    # Every field of the config is either named or deliberately left out of set names.
    from schemas.config_cluster import _NAME_PARTS

    assert set(ClusterConfig.model_fields) - set(_NAME_PARTS) == {"name", "scenes_per_shard", "num_workers",
                                                                    "executor"}


def test_paper_workflows_carry_the_papers_numbers():
    """scannet: Table 4's main row (448 x 588 frames, maps upsampled to 32 x 42, 700 proxies) and
    Table 5's 5 Scan2Cap proxies; vsibench: the 450-token row on video, metres from a depth model."""
    from pathlib import Path

    root = Path(__file__).parents[1] / "workflows"
    scannet = load_workflow(root / "scannet.yaml")
    assert scannet.features.image_size == (448, 588) and scannet.features.latent_grid == (32, 42)
    assert scannet.cluster.proxies == 700 and scannet.cluster.caption_proxies == 5
    vsi = load_workflow(root / "vsibench.yaml")
    assert vsi.source.kind == "video" and vsi.features.latent_grid is None
    assert vsi.features.image_size == (448, 588) and vsi.cluster.proxies == 450
    assert vsi.features.geometry.kind == "vggt" and vsi.features.geometry.depth_model is not None
    assert "Metric-Indoor" in vsi.features.geometry.depth_model.model


def test_a_workflow_extends_another_merging_mappings_and_replacing_lists(tmp_path):
    """`extends:` reads the base file (relative to the extending one), merges mappings key by key,
    removes a key set to null and takes any other value, a list included, from the extending file;
    cycles and missing bases are errors that name the file."""
    from pathlib import Path

    toy_path = Path(__file__).resolve().parents[1] / "workflows" / "toy.yaml"
    (tmp_path / "base.yaml").write_text(toy_path.read_text())
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nname: child\ncluster: {proxies: 32}\ndemo: {ablations: {budgets: [16]}}\n"
        "train: {answer_steps: [relative_direction], fourier_sigma: null,\n"
        "        stages: [{stage: 1, trainable: [language_model], epochs: 2}]}\n")
    (tmp_path / "grandchild.yaml").write_text("extends: child.yaml\nname: grandchild\n")
    toy = load_workflow(toy_path)
    sigma_default = type(toy.train).model_fields["fourier_sigma"].default
    assert toy.train.fourier_sigma != sigma_default and toy.train.answer_steps != ["relative_direction"]
    for name in ("child", "grandchild"):
        wf = load_workflow(tmp_path / f"{name}.yaml")
        assert wf.name == name
        assert wf.cluster.proxies == 32 and wf.cluster.scenes_per_shard == toy.cluster.scenes_per_shard
        assert wf.train.answer_steps == ["relative_direction"]  # a list is taken whole
        assert wf.train.fourier_sigma == sigma_default  # null removed the base's value
        assert wf.train.count_by_listing == toy.train.count_by_listing
        assert [s.stage for s in wf.train.stages] == [1] and wf.train.stages[0].epochs == 2
        assert wf.source == toy.source and wf.features == toy.features
        # a nested mapping merges: the one key changed, the others the base's
        assert wf.demo.ablations == toy.demo.ablations.model_copy(update={"budgets": [16]})
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(SchemaError, match="cycle"):
        load_workflow(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\nname: orphan\n")
    with pytest.raises(SchemaError, match="nowhere.yaml: workflow file not found"):
        load_workflow(tmp_path / "orphan.yaml")
