"""Segmenter backend `instances`: the scene's ground-truth instance masks (toy world, ScanNet).

GT instance ids are already consistent across frames, so no merging is needed.
"""

from __future__ import annotations

import numpy as np

from pipeline.models.protocols import SensorFrames
from schemas.store import ModelRef


class GTInstances:
    def __init__(self) -> None:
        self.ref = ModelRef(kind="instances", model=None, revision=None, trained=True)

    def segment(self, images_FHW3: np.ndarray, sensor: SensorFrames,
                xyz_FHW3: np.ndarray | None = None) -> np.ndarray:
        if sensor.instances_FHW is None:
            raise ValueError(f"scene {sensor.scene_id}: segmenter 'instances' needs GT instance masks; "
                             "use segmenter kind 'sam2' for scenes without them")
        labels_FHW = np.asarray(sensor.instances_FHW)
        if labels_FHW.shape != images_FHW3.shape[:3]:
            raise ValueError(f"scene {sensor.scene_id}: instance masks {labels_FHW.shape} do not match "
                             f"images {images_FHW3.shape[:3]}")
        return labels_FHW.astype(np.int32)


def load_segmenter(config, data_root, device) -> GTInstances:
    return GTInstances()
