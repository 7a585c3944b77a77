"""Converters from the public 3D-VL datasets' own files to `schemas.Record` (JSONL).

`CONVERTERS` maps a dataset name to `convert(paths, scene_objects) -> ConversionResult`.
"""

from __future__ import annotations

from pipeline.eval.convert.common import ConversionResult
from pipeline.eval.convert.mmscan import convert_mmscan
from pipeline.eval.convert.referring import convert_multi3drefer, convert_scan2cap, convert_scanrefer
from pipeline.eval.convert.scannet_qa import convert_scanqa, convert_sqa3d
from pipeline.eval.convert.video import convert_sr91k, convert_vsibench

CONVERTERS = {
    "scanqa": convert_scanqa,
    "sqa3d": convert_sqa3d,
    "scanrefer": convert_scanrefer,
    "scan2cap": convert_scan2cap,
    "multi3drefer": convert_multi3drefer,
    "mmscan": convert_mmscan,
    "sr91k": convert_sr91k,
    "vsibench": convert_vsibench,
}

__all__ = ["CONVERTERS", "ConversionResult"]
