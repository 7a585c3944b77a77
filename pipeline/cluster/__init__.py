"""Cluster stage: triplet store -> proxy shards (DESIGN.md, "The method, mapped to code").

Pure core: `core.cluster_scene` over `grouping`, `allocation`, `sampling` (FPS + FAISS) and
`serialize` (BFS). Around it: `shards` (WebDataset tars), `driver` (resume, Ray, reports),
`stats` (dask), `inspection`, `viz`, `cli`. Nothing heavy is imported here.
"""
