"""ErpHttp against a real HTTP server on loopback that answers what the test scripts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from erp_connectors.http import ErpHttp, RetryPolicy
from erp_connectors.sync import PermanentSyncError, SourceUnavailableError


class Script:
    """Answers to give, in order: (status, headers, body); the last one repeats."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.times: list[float] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.times.append(time.monotonic())
            index = min(len(script.times), len(script.answers)) - 1
            status, headers, body = script.answers[index]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=5)
OK = (200, {"Content-Type": "application/json"}, b'{"value": []}')


async def test_throttling_waits_as_long_as_retry_after_asks(
        server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(429, {"Retry-After": "1"}, b'{"error": {"code": "TooMany",'
                                                  b' "message": "slow down"}}'), OK]
    # The waits asked for, with the requests the server had seen when each began; no time
    # passes (the policy's backoff alone would wait 0.005-0.01 s).
    waits: list[tuple[float, int]] = []

    async def sleep(seconds: float) -> None:
        waits.append((seconds, len(script.times)))

    http = ErpHttp(url, name="erp", policy=replace(FAST, sleep=sleep))
    try:
        response = await http.request("GET", "/x")
    finally:
        await http.aclose()
    assert response.json() == {"value": []}
    assert len(script.times) == 2
    assert waits == [(1.0, 1)]


async def test_gateway_errors_are_retried_then_given_up_with_the_last_reason(
        server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(503, {}, b"maintenance window")]
    http = ErpHttp(url, name="erp", policy=FAST)
    with pytest.raises(SourceUnavailableError) as info:
        await http.request("GET", "/x")
    await http.aclose()
    assert len(script.times) == FAST.attempts
    assert str(info.value) == "erp: GET /x failed 4 times, last: HTTP 503: maintenance window"


async def test_a_retry_after_beyond_the_cap_stops_at_once(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(429, {"Retry-After": "3600"}, b"")]
    http = ErpHttp(url, name="erp", policy=FAST)
    with pytest.raises(SourceUnavailableError, match="asked to wait 3600 s"):
        await http.request("GET", "/x")
    await http.aclose()
    assert len(script.times) == 1


@pytest.mark.parametrize(("status", "body", "message"), [
    (401, b'{"error": {"code": "Authentication_InvalidCredentials", "message": "bad secret"}}',
     "erp: GET /x: HTTP 401 (check the credentials): Authentication_InvalidCredentials:"
     " bad secret"),
    (404, b'{"error": {"code": "/IWBEP/CM_MGW_RT/020", "message": {"lang": "en",'
          b' "value": "Resource not found for segment A_Nope"}}}',
     "erp: GET /x: HTTP 404 (check the URL, company or service): /IWBEP/CM_MGW_RT/020:"
     " Resource not found for segment A_Nope"),
    (400, b"plain words", "erp: GET /x: HTTP 400: plain words"),
])
async def test_a_permanent_error_is_not_retried_and_keeps_the_erps_words(
        server: tuple[str, Script], status: int, body: bytes, message: str) -> None:
    url, script = server
    script.answers = [(status, {}, body), OK]
    http = ErpHttp(url, name="erp", policy=FAST)
    with pytest.raises(PermanentSyncError) as info:
        await http.request("GET", "/x")
    await http.aclose()
    assert str(info.value) == message
    assert len(script.times) == 1


async def test_a_refused_connection_is_transient() -> None:
    http = ErpHttp("http://127.0.0.1:9", name="erp", policy=FAST)  # discard port: nobody
    with pytest.raises(SourceUnavailableError, match="ConnectError"):
        await http.request("GET", "/x")
    await http.aclose()
