"""The sidecar `<model>.onnx.json`: everything a host needs beside the ONNX graph.

Written only by the export step. Its top-level `layouts` list is the model's `layout` input (a
route's position in it) and the geometry a host checks routes against; `tokenizer` holds the
vocabulary (for warnings about holds the model never saw) and `grades` the grade names. The runtime
refuses a sidecar of another format version or one that does not belong to the model next to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .files import atomic_write_text
from .grades import GradeTable
from .model_io import MODEL_FORMAT
from .tokenizer import Tokenizer, layouts_to_list

FORMAT = "climbgrade-sidecar"
FORMAT_VERSION = MODEL_FORMAT  # a sidecar describes one model format


def sidecar_path(model_path: str | Path) -> Path:
    return Path(f"{model_path}.json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Sidecar:
    """Model identity (hash, opset, tensor names), layouts and tokenizer, grades, and how the model was made."""

    model_sha256: str
    opset: int
    inputs: tuple[tuple[str, str], ...]  # (name, dtype)
    outputs: tuple[tuple[str, str], ...]
    tokenizer: Tokenizer
    grades: GradeTable
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "model": {
                "sha256": self.model_sha256,
                "opset": self.opset,
                "inputs": [{"name": n, "dtype": d} for n, d in self.inputs],
                "outputs": [{"name": n, "dtype": d} for n, d in self.outputs],
            },
            "layouts": layouts_to_list(self.tokenizer.layouts),
            "tokenizer": self.tokenizer.to_dict(with_layouts=False),
            "grades": self.grades.to_dict(),
            "metrics": self.metrics,
            "data": self.data,
            "training": self.training,
            "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "sidecar") -> Sidecar:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelError(f'{source} is not a climbgrade sidecar (no "format": "{FORMAT}")')
        version = data.get("format_version")
        if version == 1:
            raise ModelError(
                f"{source} is model format 1 (a graph that takes token ids and features, not Aurora ids); "
                f"this climbgrade runs format {FORMAT_VERSION}: re-export the run with `cg-export RUN` "
                "(or install climbgrade 0.1 for this model)"
            )
        if version != FORMAT_VERSION:
            raise ModelError(
                f"{source} has sidecar format version {version}; this climbgrade reads version {FORMAT_VERSION}: "
                "re-export the model with this version's cg-export, or install the climbgrade that wrote it"
            )
        try:
            model = data["model"]
            return cls(
                model_sha256=str(model["sha256"]),
                opset=int(model["opset"]),
                inputs=tuple((str(t["name"]), str(t["dtype"])) for t in model["inputs"]),
                outputs=tuple((str(t["name"]), str(t["dtype"])) for t in model["outputs"]),
                tokenizer=Tokenizer.from_dict(data["tokenizer"], layouts=data["layouts"]),
                grades=GradeTable.from_dict(data["grades"]),
                metrics=dict(data.get("metrics", {})),
                data=dict(data.get("data", {})),
                training=dict(data.get("training", {})),
                versions=dict(data.get("versions", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{source} is malformed ({type(exc).__name__}: {exc}); re-export the model") from exc

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Sidecar:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"sidecar {path} is missing: a model and its sidecar are a pair; copy both, or re-export")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"sidecar {path} is not readable JSON ({exc}); re-export the model") from exc
        return cls.from_dict(data, source=f"sidecar {path}")
