"""Stored churn models as someone who can write ``churn_models`` could make them.

Each payload is live: the tests show it doing what it says (creating a file, or being read as a
tree) when loaded by a careless reader, before showing that ``analytics.churn_models`` refuses it.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from analytics.churn import ChurnModel
from analytics.churn_models import model_to_bytes

Nodes = Any  # a structured array of scikit-learn's PREDICTOR_RECORD_DTYPE


class _Touch:
    """Unpickled, creates a file: code run by whoever wrote the bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def pickle_payload(path: Path) -> bytes:
    """A pickle that creates ``path`` when unpickled."""
    return pickle.dumps(_Touch(path))


def skops_payload(blob: bytes, path: Path) -> bytes:
    """``blob`` (a stored model) whose ``version_`` is built by calling ``open(path, "x")``.

    skops builds such a node by calling the named callable with the given arguments: loaded
    with ``builtins.open`` trusted, it creates the file.
    """
    def text(value: str) -> dict[str, Any]:
        return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                "content": json.dumps(value), "is_json": True, "__id__": id(value)}

    call = {"__class__": "open", "__module__": "builtins",
            "__loader__": "ConstructorFromReduceNode",
            "content": {"__class__": "tuple", "__module__": "builtins",
                        "__loader__": "TupleNode", "__id__": 1,
                        "content": [text(str(path)), text("x")]},
            "__id__": 2}

    def edit(schema: dict[str, Any]) -> None:
        schema["content"]["version_"] = call

    return _edit_schema(blob, edit)


def _edit_schema(blob: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "schema.json":
                schema = json.loads(data)
                edit(schema)
                data = json.dumps(schema).encode()
            target.writestr(name, data)
    return out.getvalue()


def flip_byte(blob: bytes, at: int | None = None) -> bytes:
    """``blob`` with one byte changed (by default in the middle, inside a stored array)."""
    at = len(blob) // 2 if at is None else at
    return blob[:at] + bytes([blob[at] ^ 0x5A]) + blob[at + 1:]


def flip_byte_in_array(blob: bytes) -> bytes:
    """``blob`` with one byte changed in the middle of the first stored array's data.

    Where the middle of the whole blob falls varies: skops names array files by object id, so
    the names' lengths, and with them every offset, differ from one process to the next.
    """
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        member = next(i for i in archive.infolist() if i.filename.endswith(".npy"))
    header = member.header_offset
    name_length = int.from_bytes(blob[header + 26:header + 28], "little")
    extra_length = int.from_bytes(blob[header + 28:header + 30], "little")
    data = header + 30 + name_length + extra_length
    return flip_byte(blob, data + member.compress_size // 2)


def first_split(nodes: Nodes) -> int:
    """The first node that is not a leaf and not the root (so an index before it exists)."""
    return int(np.flatnonzero(nodes["is_leaf"] == 0)[1])


def _child_beyond(nodes: Nodes) -> None:
    nodes["left"][first_split(nodes)] = len(nodes) + 1000


def _child_before(nodes: Nodes) -> None:
    nodes["right"][first_split(nodes)] = 0  # back to the root: a walk that never ends


def _column_beyond(nodes: Nodes) -> None:
    nodes["feature_idx"][first_split(nodes)] = 10**9


def _column_negative(nodes: Nodes) -> None:
    nodes["feature_idx"][first_split(nodes)] = -1


def _categorical(nodes: Nodes) -> None:
    nodes["is_categorical"][first_split(nodes)] = 1


TREE_EDITS: dict[str, Callable[[Nodes], None]] = {
    "child beyond the tree": _child_beyond,
    "child before its parent": _child_before,
    "column beyond the features": _column_beyond,
    "negative column": _column_negative,
    "categorical split": _categorical,
}


def with_tree_edit(model: ChurnModel, edit: Callable[[Nodes], None]) -> bytes:
    """``model`` (fitted with the model method) stored with one tree of its booster edited."""
    crafted = copy.deepcopy(model)
    tree = crafted.estimator_.calibrated_classifiers_[0].estimator._predictors[3][0]
    edit(tree.nodes)
    return model_to_bytes(crafted)
