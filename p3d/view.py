"""`p3d view`: one scene's proxies as a self-contained 3D HTML page (plotly, no network needed).

The page holds plotly.js itself (`include_plotlyjs=True`, ~4.6 MB), so it opens from a file, a mail
attachment or an offline machine. Beside the 3D view (drag to turn, scroll to zoom) a top view is
drawn as SVG: it shows even where the browser has no WebGL. Drawn:
  - the proxies as points, coloured by segment (labeled segments in a fixed palette, unlabeled
    background grey), hovering names the segment;
  - the BFS path through the segment centres, in sequence order, the start marked;
  - each labeled segment's box (wireframe) and its name (`<id> <category>`);
  - optionally the answers of a predictions file (`p3d predict`, `p3d ask --json`): per question
    one legend entry, its predicted boxes in red, its text in the hover and the table below.

Legend: K proxies, S segments.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

# Saturated, far apart colours (plotly's D3 set with grey taken out): the screenshot test finds
# segments by them, and a viewer tells neighbours apart.
SEGMENT_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                   "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39"]
BACKGROUND_COLOUR = "#c8c8c8"
PREDICTION_COLOUR = "#ff0000"
PATH_COLOUR = "#333333"
# The 12 edges of a box as corner-index pairs; corners are the 8 sign patterns of (x, y, z).
_CORNERS_83 = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_EDGES = [(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7)]


def segment_colour(segment: dict) -> str:
    """A labeled segment's colour by its BFS id; unlabeled (background) groups are grey."""
    return BACKGROUND_COLOUR if segment["label"] < 0 else SEGMENT_COLOURS[segment["id"] % len(SEGMENT_COLOURS)]


def box_lines(center, size) -> tuple[list, list, list]:
    """x, y, z lists of a box's 12 edges, separated by None (plotly breaks lines there)."""
    corners_83 = np.asarray(center, float) + _CORNERS_83 * np.asarray(size, float)
    xs, ys, zs = [], [], []
    for a, b in _EDGES:
        for axis, out in enumerate((xs, ys, zs)):
            out.extend([float(corners_83[a, axis]), float(corners_83[b, axis]), None])
    return xs, ys, zs


def segment_name(segment: dict) -> str:
    """`<id> <category>`; a segment matched to no instance shows the segmenter's label, background says so."""
    if segment["label"] < 0:
        return f"{segment['id']} background"
    return f"{segment['id']} {segment.get('category') or 'label ' + str(segment['label'])}"


def _as_dicts(segments) -> list[dict]:
    return [s.model_dump() if hasattr(s, "model_dump") else dict(s) for s in segments]


def scene_figure(sample: dict[str, Any], title: str = "", predictions: list[dict] | None = None):
    """The plotly figure of one decoded proxy sample (pipeline.cluster.shards.load_scene_proxies)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    xyz_K3 = np.asarray(sample["xyz"], np.float64)
    segment_K = np.asarray(sample["segment"])
    segments = _as_dicts(sample["segments"])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.04,
                        specs=[[{"type": "scene"}, {"type": "xy"}]],
                        subplot_titles=("3D (drag to turn)", "top view"))
    for seg in segments:
        in_seg = segment_K == seg["id"]
        if not in_seg.any():
            continue
        colour, name = segment_colour(seg), segment_name(seg)
        group = f"segment {seg['id']}"
        fig.add_trace(go.Scatter3d(x=xyz_K3[in_seg, 0], y=xyz_K3[in_seg, 1], z=xyz_K3[in_seg, 2], mode="markers",
                                   marker=dict(size=3 if seg["label"] >= 0 else 2, color=colour), name=name,
                                   legendgroup=group, hovertext=name, hoverinfo="text"), row=1, col=1)
        fig.add_trace(go.Scatter(x=xyz_K3[in_seg, 0], y=xyz_K3[in_seg, 1], mode="markers",
                                 marker=dict(size=7 if seg["label"] >= 0 else 4, color=colour), name=name,
                                 legendgroup=group, showlegend=False, hovertext=name, hoverinfo="text"),
                      row=1, col=2)
        if seg["label"] >= 0:
            xs, ys, zs = box_lines(seg["box"]["center"], seg["box"]["size"])
            fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color=colour, width=3),
                                       legendgroup=group, showlegend=False, hoverinfo="skip"), row=1, col=1)
            lo = np.asarray(seg["box"]["center"]) - np.asarray(seg["box"]["size"]) / 2
            hi = lo + np.asarray(seg["box"]["size"])
            fig.add_trace(go.Scatter(x=[lo[0], hi[0], hi[0], lo[0], lo[0]], y=[lo[1], lo[1], hi[1], hi[1], lo[1]],
                                     mode="lines", line=dict(color=colour, width=2), legendgroup=group,
                                     showlegend=False, hoverinfo="skip"), row=1, col=2)
    named = [s for s in segments if s["label"] >= 0]
    if named:
        fig.add_trace(go.Scatter3d(x=[s["box"]["center"][0] for s in named], y=[s["box"]["center"][1] for s in named],
                                   z=[s["box"]["center"][2] + s["box"]["size"][2] / 2 for s in named],
                                   mode="text", text=[segment_name(s) for s in named], name="segment names",
                                   textfont=dict(size=11)), row=1, col=1)
    if len(segments) > 1:  # segments.json is in BFS order: id = position in the sequence
        centers_S3 = np.array([s["center"] for s in sorted(segments, key=lambda s: s["bfs_rank"])])
        fig.add_trace(go.Scatter3d(x=centers_S3[:, 0], y=centers_S3[:, 1], z=centers_S3[:, 2], mode="lines+markers",
                                   line=dict(color=PATH_COLOUR, width=2), marker=dict(size=2, color=PATH_COLOUR),
                                   name="BFS path", legendgroup="bfs"), row=1, col=1)
        fig.add_trace(go.Scatter(x=centers_S3[:, 0], y=centers_S3[:, 1], mode="lines", legendgroup="bfs",
                                 line=dict(color=PATH_COLOUR, width=1, dash="dot"), showlegend=False,
                                 hoverinfo="skip"), row=1, col=2)
        fig.add_trace(go.Scatter(x=centers_S3[:1, 0], y=centers_S3[:1, 1], mode="markers", name="BFS start",
                                 marker=dict(symbol="star", size=14, color=PATH_COLOUR)), row=1, col=2)
    for k, pred in enumerate(predictions or []):
        _add_prediction(fig, k, pred)
    fig.update_yaxes(scaleanchor="x", scaleratio=1, title_text="y (m)", row=1, col=2)
    fig.update_xaxes(title_text="x (m)", row=1, col=2)
    fig.update_layout(title=title or f"{len(xyz_K3)} proxies, {len(segments)} segments",
                      scene=dict(aspectmode="data", xaxis_title="x (m)", yaxis_title="y (m)", zaxis_title="z (m)"),
                      margin=dict(l=0, r=0, t=60, b=0), legend=dict(itemsizing="constant", font=dict(size=10)),
                      paper_bgcolor="white", plot_bgcolor="white")
    return fig


def _add_prediction(fig, k: int, pred: dict) -> None:
    import plotly.graph_objects as go

    label = f"Q{k + 1}: {pred.get('question') or pred.get('id', '')} -> {pred.get('text', '')}"
    xs, ys, zs = [], [], []
    for box in pred.get("boxes") or []:
        bx, by, bz = box_lines(box["center"], box["size"])
        xs, ys, zs = xs + bx, ys + by, zs + bz
    if not xs:
        return
    fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color=PREDICTION_COLOUR, width=6),
                               name=f"Q{k + 1}: {pred.get('text', '')}"[:36], legendgroup=f"q{k}", hovertext=label,
                               hoverinfo="text"),
                  row=1, col=1)
    for box in pred.get("boxes") or []:
        lo = np.asarray(box["center"]) - np.asarray(box["size"]) / 2
        hi = lo + np.asarray(box["size"])
        fig.add_trace(go.Scatter(x=[lo[0], hi[0], hi[0], lo[0], lo[0]], y=[lo[1], lo[1], hi[1], hi[1], lo[1]],
                                 mode="lines", line=dict(color=PREDICTION_COLOUR, width=3), legendgroup=f"q{k}",
                                 showlegend=False, hovertext=label, hoverinfo="text"), row=1, col=2)


def _answers_table(predictions: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>Q{k + 1}</td><td>{html.escape(str(p.get('question') or p.get('id', '')))}</td>"
        f"<td>{html.escape(str(p.get('text', '')))}</td>"
        f"<td>{html.escape(', '.join(str(o.get('category') or o.get('segment_id')) for o in p.get('objects', [])))}"
        f"</td></tr>" for k, p in enumerate(predictions))
    return ("<table style='font-family:sans-serif;border-collapse:collapse;margin:12px' border='1' cellpadding='4'>"
            "<tr><th>#</th><th>question</th><th>answer</th><th>objects</th></tr>" + rows + "</table>")


def write_scene_html(sample: dict[str, Any], dest: str | Path, title: str = "",
                     predictions: list[dict] | None = None) -> Path:
    """Write the page atomically; `predictions` are dicts with `text`, `boxes` and `question` or `id`."""
    from schemas.io import atomic_open

    fig = scene_figure(sample, title, predictions)
    page = fig.to_html(include_plotlyjs=True, full_html=True, default_height="88vh",
                       config={"displaylogo": False})
    if predictions:
        page = page.replace("</body>", _answers_table(predictions) + "</body>", 1)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(dest) as f:
        f.write(page)
    return dest


def load_scene_predictions(path: str | Path, scene_id: str) -> list[dict]:
    """The answers about `scene_id` in a predictions file (`p3d predict`) or a `p3d ask --json` output."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: predictions file not found")
    text = path.read_text()
    try:  # `p3d ask --json`: one document whose answers are about one scene
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("answers"), list):
        return [dict(a, scene_id=whole.get("scene_id")) for a in whole["answers"]] \
            if whole.get("scene_id") == scene_id else []
    from schemas.record import iter_json_lines

    out = []
    for n, pred in iter_json_lines(path):
        if not isinstance(pred, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object per line")
        if pred.get("scene_id") == scene_id:
            out.append(pred)
    return out
