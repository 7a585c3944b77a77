"""p3d: offline Proxy3D feature precomputation (features -> cluster) and its CLI."""

__version__ = "0.1.0"
