"""ScanRefer, Scan2Cap and Multi3DRefer converters (ScanNet instance ids as targets).

ScanRefer, v1 filtered release (github.com/daveredrum/ScanRefer, `ScanRefer_filtered_{train,val,
test}.json`): a JSON list of {"scene_id", "object_id" (string), "object_name", "ann_id" (string),
"description", "token"}. `unique` is ScanRefer's official split (lib/dataset.py,
`_get_raw2label` / `_get_unique_multiple_lookup`) when ScanNet's `scannetv2-labels.combined.tsv` is
given (`--label-map`): each object name ("_" read as a space) is looked up as `raw_category`, its
`nyu40class` kept if it is one of the 17 ScanNet benchmark classes below and "others" otherwise, and
a target is unique when no other object annotated in the ScanRefer file for that scene has its
class. Without the label map the split is the fallback named in the result's notes and in each
record's `meta["unique_from"]`: the `--boxes` file's categories, else the raw object names.

Scan2Cap uses the same ScanRefer files: one caption record per (scene, object) whose reference
answers are all descriptions of that object. The prompt names the object by the `<OBJ>` placeholder
(its `target_ids[0]`): a caption model must be told which object to describe, and `p3d predict`
swaps the placeholder for the identifier of the segment matched to it, whose box the prediction
then carries (Scan2Cap's m@kIoU).

Multi3DRefer, v1.0 (github.com/3dlg-hcvc/M3DRef-CLIP, `multi3drefer_{train,val}.json`): a JSON
list of {"scene_id", "object_name", "ann_id", "description", "object_ids" (list, may be empty),
"eval_type" (zt_w_d | zt_wo_d | st_w_d | st_wo_d | mt), "spans", "token"}.

Target boxes come from an optional `--boxes` file (scene_id -> list of ObjectInfo); without it,
records carry target_ids only.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

from pipeline.eval.convert.common import (
    ConversionResult,
    SceneObjects,
    boxes_for,
    entries_with_split,
    no_boxes_note,
)
from schemas.record import OBJ_PLACEHOLDER, Record

MULTI3DREFER_EVAL_TYPES = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")
# ScanRefer's classes (ScannetDatasetConfig.type2class, less "others"), compared with the TSV's
# nyu40class verbatim: the TSV spells NYU40's fridge "refridgerator", so the official split counts
# refrigerators as "others", and so does this one.
SCANREFER_CLASSES = ("cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
                     "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
                     "bathtub")
LabelMap = dict[str, str]  # ScanNet raw_category -> ScanRefer class or "others"


def read_label_map(path: str | Path) -> LabelMap:
    """ScanNet's scannetv2-labels.combined.tsv as raw_category -> ScanRefer class (or "others")."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"raw_category", "nyu40class"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not scannetv2-labels.combined.tsv: no column {', '.join(sorted(missing))} "
                             f"in the header line (found {', '.join(reader.fieldnames or ()) or 'nothing'})")
        out = {row["raw_category"]: row["nyu40class"] if row["nyu40class"] in SCANREFER_CLASSES else "others"
               for row in reader}
    if not out:
        raise ValueError(f"{path}: the label map has a header but no rows")
    return out


def _class_counts(entries, scene_objects: SceneObjects | None) -> dict[str, Counter]:
    """Objects per class per scene, for ScanRefer's unique / multiple split."""
    counts: dict[str, Counter] = defaultdict(Counter)
    if scene_objects is not None:
        for scene_id, objs in scene_objects.items():
            counts[scene_id] = Counter(o.category.replace("_", " ").lower() for o in objs)
        return counts
    seen = set()
    for _, _, e in entries:
        if isinstance(e, dict) and {"scene_id", "object_id", "object_name"} <= e.keys():
            key = (e["scene_id"], str(e["object_id"]))
            if key not in seen:
                seen.add(key)
                counts[e["scene_id"]][e["object_name"].replace("_", " ").lower()] += 1
    return counts


def _entry_class(scene_objects, scene_id: str, object_id: int, object_name: str) -> str:
    if scene_objects is not None:
        for o in scene_objects.get(scene_id, []):
            if o.id == object_id:
                return o.category.replace("_", " ").lower()
    return object_name.replace("_", " ").lower()


def _official_unique(entries, label_map: LabelMap, result: ConversionResult) -> dict[tuple[str, str], bool]:
    """(scene_id, object_id) -> ScanRefer's official unique flag (see the module docstring)."""
    classes: dict[tuple[str, str], str] = {}
    unknown: Counter = Counter()
    for _, _, e in entries:
        if isinstance(e, dict) and {"scene_id", "object_id", "object_name"} <= e.keys():
            key = (e["scene_id"], str(e["object_id"]))
            if key not in classes:
                name = " ".join(str(e["object_name"]).split("_"))
                if name not in label_map:
                    unknown[name] += 1
                classes[key] = label_map.get(name, "others")
    if unknown:  # the official code stops with a KeyError on these
        result.notes.append(f"{sum(unknown.values())} objects have names absent from the label map, counted "
                            f"as 'others': {', '.join(sorted(unknown)[:10])}")
    per_scene: dict[str, Counter] = defaultdict(Counter)
    for (scene_id, _), cls in classes.items():
        per_scene[scene_id][cls] += 1
    return {key: per_scene[key[0]][cls] == 1 for key, cls in classes.items()}


def convert_scanrefer(paths: list[Path], scene_objects: SceneObjects | None = None,
                      label_map: LabelMap | None = None) -> ConversionResult:
    result = ConversionResult("scanrefer", notes=no_boxes_note(scene_objects))
    entries = entries_with_split(paths, "ScanRefer descriptions")
    counts = _class_counts(entries, scene_objects)
    official = _official_unique(entries, label_map, result) if label_map is not None else None
    unique_from = "label_map" if official is not None else "boxes" if scene_objects is not None else "raw_names"
    if official is None:
        result.notes.append(
            "no --label-map: unique/multiple is NOT ScanRefer's official split but counts "
            + ("the --boxes file's categories" if scene_objects is not None else "raw object names")
            + " (pass --label-map scannetv2-labels.combined.tsv for the official one)")
    for split, i, e in entries:
        eid = f"{e.get('scene_id')}-{e.get('object_id')}-{e.get('ann_id')}" if isinstance(e, dict) else f"[{i}]"

        def build(e=e, eid=eid, split=split) -> Record:
            if not isinstance(e, dict):
                raise ValueError("entry is not a JSON object")
            obj = int(e["object_id"])
            if official is not None:
                unique = official[(e["scene_id"], str(e["object_id"]))]
            else:
                unique = counts[e["scene_id"]][_entry_class(scene_objects, e["scene_id"], obj, e["object_name"])] == 1
            return Record(
                id=f"scanrefer-{eid}", scene_id=e["scene_id"], task="grounding", source="scanrefer",
                question=e["description"].strip(), target_ids=[obj],
                target_boxes=boxes_for(scene_objects, e["scene_id"], [obj]), answer_type="objects",
                unique=unique, split=split,
                meta={"object_name": e["object_name"], "ann_id": str(e["ann_id"]), "unique_from": unique_from},
            )

        result.add(eid, build)
    return result


def convert_scan2cap(paths: list[Path], scene_objects: SceneObjects | None = None) -> ConversionResult:
    result = ConversionResult("scan2cap", notes=no_boxes_note(scene_objects))
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    splits: dict[tuple[str, str], str | None] = {}
    for split, i, e in entries_with_split(paths, "ScanRefer descriptions"):
        if not isinstance(e, dict) or not {"scene_id", "object_id", "description"} <= e.keys():
            result.problems.append((f"[{i}]", "entry lacks scene_id, object_id or description"))
            continue
        key = (e["scene_id"], str(e["object_id"]))
        grouped[key].append(e)
        splits[key] = split
    for (scene_id, object_id), es in grouped.items():
        eid = f"{scene_id}-{object_id}"

        def build(scene_id=scene_id, object_id=object_id, es=es, eid=eid) -> Record:
            obj = int(object_id)
            return Record(
                id=f"scan2cap-{eid}", scene_id=scene_id, task="caption", source="scan2cap",
                question=f"Describe {OBJ_PLACEHOLDER} in detail.", target_ids=[obj],
                target_boxes=boxes_for(scene_objects, scene_id, [obj]),
                answers=[x["description"].strip() for x in es], split=splits[(scene_id, object_id)],
                meta={"object_name": es[0].get("object_name"),
                      # ScanRefer's own tokens, from which Scan2Cap's eval builds its references
                      **({"tokens": [list(map(str, x["token"])) for x in es]}
                         if all(isinstance(x.get("token"), list) for x in es) else {})},
            )

        result.add(eid, build)
    return result


def convert_multi3drefer(paths: list[Path], scene_objects: SceneObjects | None = None) -> ConversionResult:
    result = ConversionResult("multi3drefer", notes=no_boxes_note(scene_objects))
    seen: set[str] = set()
    for split, i, e in entries_with_split(paths, "Multi3DRefer descriptions"):
        eid = (f"{e.get('scene_id')}-{e.get('object_id', 'x')}-{e.get('ann_id')}"
               if isinstance(e, dict) else f"[{i}]")

        def build(e=e, eid=eid, split=split) -> Record:
            if not isinstance(e, dict):
                raise ValueError("entry is not a JSON object")
            if eid in seen:
                raise ValueError("duplicate (scene_id, object_id, ann_id)")
            if e["eval_type"] not in MULTI3DREFER_EVAL_TYPES:
                raise ValueError(f"unknown eval_type {e['eval_type']!r}")
            ids = [int(x) for x in e["object_ids"]]
            if (len(ids) == 0) != e["eval_type"].startswith("zt"):
                raise ValueError(f"eval_type {e['eval_type']} disagrees with {len(ids)} target objects")
            seen.add(eid)
            return Record(
                id=f"multi3drefer-{eid}", scene_id=e["scene_id"], task="multi_grounding",
                source="multi3drefer", question=e["description"].strip(), target_ids=ids,
                target_boxes=boxes_for(scene_objects, e["scene_id"], ids), answer_type="objects",
                question_type=e["eval_type"], split=split,
                meta={"eval_type": e["eval_type"], "object_name": e.get("object_name"),
                      "ann_id": str(e.get("ann_id"))},
            )

        result.add(eid, build)
    return result
