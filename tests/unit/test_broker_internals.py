"""The start-up check of the paho internals the fast path needs, and the choice it makes.

Each mismatch is made from the installed paho (2.2, the pinned one): its client class copied
with one internal removed or renamed, a parameter added, an attribute of another name (as paho
2.1 has it); the check must name that internal, and the ingester then runs stock paho.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt import __version__ as paho_version

from ingest.broker import choose_client, fast_path_problems


def _paho_without(name: str, *, renamed: str | None = None) -> type[paho.Client]:
    """paho's Client with ``name`` removed from the class (or given another name)."""
    namespace = {k: v for k, v in vars(paho.Client).items()
                 if k not in {"__dict__", "__weakref__", name}}
    if renamed is not None:
        namespace[renamed] = vars(paho.Client)[name]
    return type("Client", paho.Client.__bases__, namespace)


class _Paho21(paho.Client):
    """paho 2.1's name for the time of the last bytes received (the fast path writes 2.2's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_msg_in = self.__dict__.pop("_last_bytes_received")


class _NewPacketQueue(paho.Client):
    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int,  # type: ignore[override]
                      qos: int, info: Any = None, *, priority: int = 0) -> Any:
        return super()._packet_queue(command, packet, mid, qos, info)


class _PacketAsObject(paho.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_packet = type("InPacket", (), {"command": 0})()  # type: ignore[assignment]


class _MessageWithoutTopicBytes(paho.MQTTMessage):
    def __init__(self, mid: int = 0, topic: bytes = b"") -> None:
        super().__init__(mid, topic)
        self.topic_bytes = topic
        del self._topic  # a slot of paho's MQTTMessage


def test_the_installed_paho_has_what_the_fast_path_needs() -> None:
    assert fast_path_problems() == []
    choice = choose_client("auto")
    assert (choice.fast, choice.path, choice.problems) == (True, "fast", ())
    assert choice.why == f"fast path on paho-mqtt {paho_version}: its internals checked"


@pytest.mark.parametrize(("client_class", "problem"), [
    (_paho_without("_handle_on_message"), "Client._handle_on_message is missing"),
    (_paho_without("_sock_recv", renamed="_socket_recv"), "Client._sock_recv is missing"),
    (_paho_without("_packet_read", renamed="_read_packet"), "Client._packet_read is missing"),
    (_NewPacketQueue, "_NewPacketQueue._packet_queue(self, command, packet, mid, qos, info,"
                      " priority) differs: the fast path expects (self, command, packet, mid,"
                      " qos, info)"),
    (_Paho21, "_Paho21._last_bytes_received is missing (a new client has no such attribute)"),
    (_PacketAsObject, "_PacketAsObject._in_packet is an InPacket, not a dict whose 'command' is 0"
                      " between packets"),
])
def test_each_missing_or_changed_internal_is_named(client_class: type[paho.Client],
                                                   problem: str) -> None:
    problems = fast_path_problems(client_class)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems
    choice = choose_client("auto", client_class=client_class)
    assert (choice.fast, choice.path, choice.problems) == (False, "stock", tuple(problems))
    assert "internals differ from the ones the fast path was written for" in choice.why


def test_a_message_without_its_topic_bytes_is_named() -> None:
    assert fast_path_problems(message_class=_MessageWithoutTopicBytes) == [
        "_MessageWithoutTopicBytes._topic is missing or not bytes"]


def test_a_paho_that_reads_the_socket_past_our_buffer_fails_the_self_test(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Same names and parameters, other behaviour: paho's packet reader bypasses _sock_recv (the
    # fast client's buffer), so the packets it should take from there are never seen.
    original = paho.Client._packet_read

    def reads_the_socket_itself(self: paho.Client) -> Any:
        self.__dict__["_sock_recv"] = self._sock.recv  # type: ignore[union-attr]
        try:
            return original(self)
        finally:
            del self.__dict__["_sock_recv"]

    monkeypatch.setattr(paho.Client, "_packet_read", reads_the_socket_itself)
    problems = fast_path_problems()
    assert problems, "the self-test passed on a paho that skips the fast client's buffer"
    assert all(p.startswith("self-test: ") for p in problems), problems
    assert not choose_client("auto").fast


def test_off_is_stock_paho_without_looking() -> None:
    choice = choose_client("off", client_class=_paho_without("_handle_on_message"))
    assert (choice.fast, choice.problems) == (False, ())
    assert choice.why.endswith("OEMR_INGEST_FAST_PATH=off")
