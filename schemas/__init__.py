"""The one place every p3d on-disk format is defined.

Imports only numpy and pydantic, so any tool can validate p3d files without the heavy stack.
Each module defines one format; `SCHEMAS` maps the names `p3d schema <name>` accepts to models.
"""

from schemas.errors import SchemaError
from schemas.manifest import Box3D, ObjectInfo, SceneManifest
from schemas.proxy import ProxyMeta, SegmentInfo
from schemas.record import Record, load_records, write_records
from schemas.store import StoreAttrs
from schemas.workflow import Workflow, load_workflow

SCHEMAS = {
    "manifest": SceneManifest,
    "object": ObjectInfo,
    "store": StoreAttrs,
    "proxy-meta": ProxyMeta,
    "segment": SegmentInfo,
    "record": Record,
    "workflow": Workflow,
}

__all__ = [
    "SCHEMAS",
    "Box3D",
    "ObjectInfo",
    "ProxyMeta",
    "Record",
    "SceneManifest",
    "SchemaError",
    "SegmentInfo",
    "StoreAttrs",
    "Workflow",
    "load_records",
    "load_workflow",
    "write_records",
]
