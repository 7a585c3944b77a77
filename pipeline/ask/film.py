"""Film a scene into a video file, as a phone would: the frames in order, one mp4 (PyAV).

The toy world's scenes are walks around a room (pipeline/sources/toy), so a toy scene filmed this way
is what `p3d ask` gets from a user: a video and nothing else (no depth, poses or masks). Tests, the
demo and benchmarks/ask.py film held-out toy scenes with it.

Legend: F frames, H x W pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.io import atomic_open
from schemas.workflow import ToyWorldConfig


def write_video(images_FHW3: np.ndarray, path: str | Path, fps: int = 10) -> Path:
    """uint8 RGB frames -> an mp4 (MPEG-4 part 2: in every FFmpeg build), written atomically."""
    import av

    images_FHW3 = np.asarray(images_FHW3)
    if images_FHW3.ndim != 4 or images_FHW3.shape[-1] != 3 or images_FHW3.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 F x H x W x 3, got {images_FHW3.dtype} {images_FHW3.shape}")
    height, width = images_FHW3.shape[1:3]
    even_FHW3 = images_FHW3[:, :height - height % 2, :width - width % 2]  # yuv420p needs even sizes
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


def film_toy_scene(toy: ToyWorldConfig, index: int, path: str | Path, fps: int = 10) -> Path:
    """Scene `index` of a toy world, every rendered frame, into a video."""
    from pipeline.sources.toy import make_scene

    scene = make_scene(index, toy)
    return write_video(np.stack([frame.rgb_HW3 for frame in scene.frames]), path, fps)
