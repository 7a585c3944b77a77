"""The plugin registry (schemas/plugins.py) and the fence around the toy world (pipeline/toy).

The real path reaches a component only by its name through the registry, so it must neither import
nor name `pipeline.toy`: checked by importing every real-path module in a fresh interpreter and by
reading their sources.
"""

from __future__ import annotations

import re
import subprocess
import sys
import typing

import pytest

from schemas import plugins
from schemas.config_features import DepthModelConfig, EncoderConfig, GeometryConfig, SegmenterConfig
from tests.conftest import ROOT

# The real path: what the stages and the trainer are made of (the application shell and the toy are not).
REAL_PATH = ("schemas", "pipeline/sources", "pipeline/models", "pipeline/features", "pipeline/cluster",
             "pipeline/eval", "pipeline/executor.py", "trainer")
EXPECTED = {
    plugins.SOURCES: {"scannet", "toy", "video"},
    plugins.ENCODERS: {"qwen2_5_vl"},
    plugins.GEOMETRY: {"rgbd", "vggt", "sim_vggt"},
    plugins.SEGMENTERS: {"instances", "sam2", "sim_sam2"},
    plugins.DEPTH_MODELS: {"depth_anything"},
    plugins.MODEL_IDS: {"random", "toy"},
    plugins.ROOM_GENERATORS: {"toy_layout"},
}


def _real_path_files() -> list:
    files = []
    for entry in REAL_PATH:
        path = ROOT / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_every_registered_name_resolves(group):
    assert set(plugins.names(group)) == EXPECTED[group]
    for name in plugins.names(group):
        assert callable(plugins.load(group, name)), (group, name)


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_an_unknown_name_lists_the_known_ones(group):
    known = ", ".join(sorted(EXPECTED[group]))
    with pytest.raises(plugins.UnknownPlugin, match=rf"^unknown {plugins.WHAT[group]} 'nope'; known: {known}$"):
        plugins.load(group, "nope")


def test_every_kind_a_config_allows_is_registered():
    for config, group in ((EncoderConfig, plugins.ENCODERS), (GeometryConfig, plugins.GEOMETRY),
                          (SegmenterConfig, plugins.SEGMENTERS), (DepthModelConfig, plugins.DEPTH_MODELS)):
        allowed = set(typing.get_args(config.model_fields["kind"].annotation))
        assert allowed == set(plugins.names(group)), config.__name__


def test_the_workflow_source_kind_is_checked_against_the_registry():
    from pydantic import ValidationError

    from schemas.workflow import SourceConfig

    assert SourceConfig(kind="video", path="x").kind == "video"
    with pytest.raises(ValidationError, match="unknown source kind 'vidoe'; known: scannet, toy, video"):
        SourceConfig(kind="vidoe", path="x")


def test_the_real_path_never_names_the_toy_package():
    named = [str(p.relative_to(ROOT)) for p in _real_path_files()
             if re.search(r"\bpipeline\.toy\b", p.read_text())]
    assert named == []


def test_importing_the_real_path_imports_no_toy_module():
    modules = [_module_name(p) for p in _real_path_files()]
    assert "pipeline.sources.scannet" in modules and "trainer.train" in modules  # the walk found them
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              "print(sorted(m for m in sys.modules if m == 'pipeline.toy' or m.startswith('pipeline.toy.')))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
