"""`p3d view`: the page is self-contained (plotly.js inside, no network), holds every segment, the BFS
path and a predictions file's boxes; opened in headless Chromium, its screenshot shows the points of
each segment in their colours and the predicted box in red. `.ci/run` installs Debian's chromium, so
CI always runs the browser test; elsewhere it skips naming what is missing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from p3d.view import PREDICTION_COLOUR, box_lines, segment_colour

SCENE = "scene0000"
# Flags for a root user on a machine with no network (../shared: machines' notes): without the
# background-networking ones Chromium keeps dialling out and its connections are refused.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1200,800", "--virtual-time-budget=10000"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from p3d.cli import app
    from pipeline.cluster.shards import load_scene_proxies
    from tests.synthetic_shards import write_synthetic

    root = tmp_path_factory.mktemp("view")
    write_synthetic(root, num_scenes=2, background_segments=1)
    sample = load_scene_proxies(root, "synthetic", SCENE)
    target = next(s for s in sample["segments"] if s.label >= 0)
    preds = root / "preds.jsonl"
    preds.write_text(json.dumps({"id": "q1", "scene_id": SCENE, "task": "grounding", "text": "<OBJ000>",
                                 "boxes": [target.box.model_dump()]}) + "\n"
                     + json.dumps({"id": "zz-other-scene-zz", "scene_id": "scene0001", "task": "grounding", "text": "x",
                                   "boxes": []}) + "\n")
    html = root / "view.html"
    res = CliRunner().invoke(app, ["view", SCENE, "--out", str(root), "--name", "synthetic", "--predictions",
                                   str(preds), "--html", str(html)])
    assert res.exit_code == 0, res.output
    return html, sample


def test_page_is_self_contained_with_segments_path_and_predictions(page):
    html, sample = page
    text = html.read_text()
    # Nothing is fetched when it opens: no script or stylesheet from elsewhere (plotly.js names its CDN
    # inside, for geo maps' topojson, which a scatter never loads).
    assert not re.findall(r"<script[^>]*\bsrc=", text) and not re.findall(r"<link[^>]*\bhref=", text)
    assert "plotly.js" in text and len(text) > 1_000_000  # the library itself is inside
    for seg in sample["segments"]:
        if seg.label >= 0:
            assert f"{seg.id} {seg.category}" in text
    assert "BFS path" in text and PREDICTION_COLOUR in text and "<td>q1</td>" in text and "zz-other-scene-zz" not in text


def test_box_edges_are_the_twelve_edges_of_the_box():
    xs, ys, zs = box_lines([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    points = {(x, y, z) for x, y, z in zip(xs, ys, zs) if x is not None}
    assert points == {(x, y, z) for x in (0.0, 2.0) for y in (0.0, 4.0) for z in (0.0, 6.0)}
    edges = [(xs[i:i + 2], ys[i:i + 2], zs[i:i + 2]) for i in range(0, len(xs), 3)]
    assert len(edges) == 12  # each a corner pair that differs along one axis only
    for ex, ey, ez in edges:
        assert sum(a != b for a, b in zip((ex[0], ey[0], ez[0]), (ex[1], ey[1], ez[1]))) == 1


def test_bad_predictions_file_is_one_line(page, tmp_path):
    from p3d.cli import app

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    res = CliRunner().invoke(app, ["view", SCENE, "--out", str(Path(page[0]).parent), "--name", "synthetic",
                                   "--predictions", str(bad), "--html", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "bad.jsonl:1: invalid JSON" in res.output
    assert not (tmp_path / "x.html").exists()


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def _pixels_near(image_HW3: np.ndarray, hex_colour: str, tol: int = 10) -> int:
    return int((np.abs(image_HW3.astype(int) - _rgb(hex_colour)).max(-1) <= tol).sum())


def test_viewer_in_headless_chromium_shows_segments_and_boxes(page, tmp_path):
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    html, sample = page
    png = tmp_path / "shot.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                    html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    image_HW3 = np.asarray(Image.open(png).convert("RGB"))
    assert image_HW3.shape[:2] == (800, 1200)
    # The 3D view (WebGL) fills the left part of the page, the top view (SVG) the right.
    left_HW3, right_HW3 = image_HW3[:, :650], image_HW3[:, 650:]
    segments = [s.model_dump() for s in sample["segments"]]
    for seg in segments:
        if seg["label"] < 0 or seg["proxies"] == 0:
            continue
        colour = segment_colour(seg)
        assert _pixels_near(left_HW3, colour) >= 20, f"segment {seg['id']} ({colour}) not drawn in 3D"
        assert _pixels_near(right_HW3, colour) >= 20, f"segment {seg['id']} ({colour}) not in the top view"
    assert _pixels_near(left_HW3, PREDICTION_COLOUR, tol=30) >= 50  # the predicted box, in red
    # Not a page of one colour: white dominates, but well under all of it.
    assert 0.3 < _pixels_near(image_HW3, "#ffffff", tol=3) / image_HW3[..., 0].size < 0.97
