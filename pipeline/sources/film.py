"""Film a scene into a video file, as a phone would: the frames in order, one mp4 (PyAV).

The toy world's scenes are walks around a room, so a toy scene filmed this way is what `p3d ask` gets
from a user: a video. Tests, the demo and benchmarks/ask.py film held-out toy scenes with it
(pipeline/toy/film.py).

A filmed toy scene also keeps its ground truth beside the video (`<stem>.groundtruth.npz`,
pipeline/sources/sidecar.py): the toy workflow's networks (`sim_vggt`, `sim_sam2`) simulate the real
ones from the toy world's depth, poses and instance masks, so a toy video carries them, row i for
video frame i, cropped as the video is. `p3d ask` reads that sidecar only for a checkpoint trained
with the simulators; a checkpoint trained with the real networks (`vggt`, `sam2`) reads the bare
video, as it reads a user's.

Legend: F frames, H x W pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.sources.base import Scene
from schemas.io import atomic_open


def even_size(height: int, width: int) -> tuple[int, int]:
    """The size the video keeps: yuv420p needs even sizes, so the last row or column is cut."""
    return height - height % 2, width - width % 2


def write_video(images_FHW3: np.ndarray, path: str | Path, fps: int = 10) -> Path:
    """uint8 RGB frames -> an mp4 (MPEG-4 part 2: in every FFmpeg build), written atomically."""
    import av

    images_FHW3 = np.asarray(images_FHW3)
    if images_FHW3.ndim != 4 or images_FHW3.shape[-1] != 3 or images_FHW3.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 F x H x W x 3, got {images_FHW3.dtype} {images_FHW3.shape}")
    height, width = even_size(*images_FHW3.shape[1:3])
    even_FHW3 = images_FHW3[:, :height, :width]
    with atomic_open(path, "wb") as f, av.open(f, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = even_FHW3.shape[2], even_FHW3.shape[1], "yuv420p"
        stream.bit_rate = 4_000_000  # sharp enough that the encoder sees what the rendered frames show
        for image_HW3 in even_FHW3:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image_HW3), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def film_scene(scene: Scene, path: str | Path, fps: int = 10) -> Path:
    """Every frame of `scene` into a video, its ground truth into the sidecar beside it, both cropped
    to the video's even size (a crop at the bottom and right keeps the intrinsics as they are)."""
    from dataclasses import replace

    from pipeline.sources.sidecar import write_sidecar

    height, width = even_size(*scene.image_size)
    kept = replace(scene, images_FHW3=scene.images_FHW3[:, :height, :width],
                   instances_FHW=None if scene.instances_FHW is None else scene.instances_FHW[:, :height, :width])
    if kept.depth_FHdWd is not None and kept.depth_intrinsics_F33 is None:
        # Depth at the colour size, with the colour camera: cropped the same way.
        kept = replace(kept, depth_FHdWd=kept.depth_FHdWd[:, :height, :width])
    write_sidecar(kept, path)
    return write_video(kept.images_FHW3, path, fps)
