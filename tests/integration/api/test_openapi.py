"""`oem-retention api openapi`: the document client generators read, the same the server serves."""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson

from tests.integration.api.conftest import WorldApi
from tests.integration.conftest import ROOT


def test_the_printed_document_is_the_served_one(world_api: WorldApi) -> None:
    printed = subprocess.run([sys.executable, "-m", "oem_retention", "api", "openapi"],
                             cwd=ROOT, env=world_api.api.env, capture_output=True, check=True)
    document = orjson.loads(printed.stdout)
    served = httpx.get(f"{world_api.api.url}/api/v1/openapi.json").json()
    assert document == served
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert paths and all(path.startswith("/api/v1/") for path in paths)
    assert {"/api/v1/auth/token", "/api/v1/admin/keys", "/api/v1/health"} <= set(paths)
    # Every route that needs credentials says so, for generated clients to send them.
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path.startswith(("/api/v1/health", "/api/v1/auth/token")):
                continue
            assert operation.get("security"), (method, path)
