"""Named SQL blocks kept in ``.sql`` files beside the code that runs them.

A file holds blocks introduced by ``-- name: <name>`` lines; everything up to the next such line
is the query. Files are read once, through importlib.resources, so they ship inside the package.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def queries(package: str, filename: str) -> dict[str, str]:
    """Return the named blocks of ``package/filename``."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in blocks:
            msg = f"{package}/{filename}: query {name!r} is defined twice"
            raise ValueError(msg)
        blocks[name] = body.strip()
    return blocks
