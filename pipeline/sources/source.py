"""The scene-source interface: a small, picklable description of where scenes live.

A source lists its scene ids and loads one `Scene` by id. It holds only paths and numbers, so a
driver can send it to Ray workers and call `load_scene` there, one scene per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.sources.base import Scene, SceneReadError


@dataclass(frozen=True)
class SceneSource:
    path: Path
    num_frames: int
    only: tuple[str, ...] | None = None  # restrict to these scene ids (workflow `source.scenes`)

    kind = "abstract"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"{self.kind} source {self.path}: num_frames must be >= 1, got {self.num_frames}")
        if not Path(self.path).exists():
            raise SceneReadError(f"{self.kind} source: {self.path} not found")

    def available(self) -> list[str]:
        """Every scene id found under `path`, sorted."""
        raise NotImplementedError

    def scene_ids(self) -> list[str]:
        found = self.available()
        if self.only is None:
            return found
        unknown = sorted(set(self.only) - set(found))
        if unknown:
            raise SceneReadError(f"{self.kind} source {self.path}: unknown scene ids {unknown}")
        return list(self.only)

    def load_scene(self, scene_id: str) -> Scene:
        raise NotImplementedError

    def input_files(self, scene_id: str) -> list[Path]:
        """The files a scene is read from: its folder's files, else files named `<scene_id>.*` or
        `<scene_id>_*` beside it (a bare .sens or video with its annotation files)."""
        root = Path(self.path)
        folder = root / scene_id
        if folder.is_dir():
            return sorted(p for p in folder.rglob("*") if p.is_file())
        return sorted(p for pattern in (f"{scene_id}.*", f"{scene_id}_*") for p in root.glob(pattern)
                      if p.is_file())

    def fingerprint(self, scene_id: str) -> str:
        """A cheap identity of what a scene is made from: the source's kind and path and each input
        file's name, size and mtime (no file is read). The feature stage redoes a scene whose
        fingerprint changed, so a store never keeps a scene made from other input."""
        import hashlib

        root = Path(self.path)  # as given: input_files lists paths under it, relative or absolute
        digest = hashlib.sha256(f"{self.kind}\0{root.resolve()}\0{scene_id}\n".encode())
        for p in self.input_files(scene_id):
            st = p.stat()
            digest.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]
