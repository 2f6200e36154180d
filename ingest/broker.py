"""paho-mqtt driven from the asyncio event loop, with acknowledgements in our hands.

Why paho and not aiomqtt: aiomqtt 2.5 acknowledges a QoS 1 message as soon as it arrives, so a
crash before the database commit would lose it. paho 2's ``manual_ack`` lets the ingester send the
PUBACK after the transaction that stored the message has committed. The socket is served by the
event loop (as aiomqtt does internally), so decoding, batching and database I/O share one thread
without locks.

Two clients: the fast path (``_Client``) overrides paho internals for speed, and was written and
tested against paho 2.2; ``_StockClient`` is paho as shipped, through its public API (it only
peeks, with a default, at the raw bytes of a topic that is not UTF-8).
``choose_client`` checks at start-up that paho's internals are the ones the fast path needs
(``fast_path_problems``) and falls back to stock paho, saying why, where they are not.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt import __version__ as paho_version
from paho.mqtt.client import MQTT_LOG_ERR, PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

logger = logging.getLogger(__name__)

_MQTTV5 = paho.MQTTv5
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
_CONN_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST

# ``loop_read`` calls per socket wakeup before yielding to the event loop (the flusher, acks);
# each handles one packet, or up to _FAST_BURST PUBLISH packets of QoS 0/1 found whole in the
# read buffer (so up to 512 messages per wakeup).
_BURST = 32
_FAST_BURST = 16
# Bytes asked of the socket per read.
_RECV = 65536
# A packet cut by the end of a read is kept for the next read up to this size; a larger one is
# left to paho, which reads it piecewise.
_STASH_MAX = _RECV

_pack_puback = struct.Struct("!BBH").pack


class Publish:
    """A received PUBLISH: what the ingester needs of it (paho's MQTTMessage is far costlier)."""

    __slots__ = ("_topic", "dup", "mid", "payload", "qos", "retain")

    def __init__(self, topic: bytes, payload: bytes, mid: int, qos: int,  # noqa: PLR0917
                 dup: bool, retain: bool) -> None:  # (positional: built once per message)
        self._topic = topic
        self.payload = payload
        self.mid = mid
        self.qos = qos
        self.dup = dup
        self.retain = retain

    @property
    def topic(self) -> str:
        """The topic; UnicodeDecodeError if it is not UTF-8 (as paho's MQTTMessage.topic)."""
        return self._topic.decode("utf-8")


OnMessage = Callable[[Publish], None]


class _Client(paho.Client):
    """paho's client with a buffered socket read, its own PUBLISH decoder and batched PUBACKs.

    paho reads each packet with three or four ``recv`` calls, builds an MQTTMessage and an MQTT 5
    Properties object per message and routes it through its topic matcher, which allocates a
    reference cycle per message (garbage the full collector must find); each ``ack()`` is a
    socket write of its own. Profiling the ingester put paho's receive path at half its CPU.

    Here the socket is read in 64 KiB chunks; PUBLISH packets of QoS 0 and 1 found whole in the
    chunk are decoded in place and handed to ``deliver`` as a ``Publish``. Everything else (QoS 2,
    CONNACK, SUBACK, pings, DISCONNECT, malformed packets, packets over 64 KiB) goes through
    paho's own ``_packet_read``, which reads from the same buffer through ``_sock_recv``. PUBACKs
    are collected by ``ack()`` and written together by ``flush_acks()``. tests/bench/ingest.py
    measures the gain; tests/unit/test_broker_fast_path.py compares the decoder with paho's.
    """

    fast = True

    def __init__(self, *args: Any, deliver: OnMessage, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = deliver
        self._rbuf = b""
        self._rpos = 0
        self._rtail = b""  # start of a packet cut by the end of the last read
        self._rsock: object = None
        self._acks = bytearray()
        self._ack_sock: object = None
        # Set while the owner does not want more messages: the fast path stops at once.
        self.held = False

    @property
    def buffered(self) -> int:
        """Bytes read from the socket that can be handled without reading it again."""
        return len(self._rbuf) - self._rpos if self._rsock is self._sock else 0

    @property
    def acks_pending(self) -> bool:
        """True when ``ack()`` has collected PUBACKs that ``flush_acks()`` has not sent."""
        return bool(self._acks)

    def read_some(self) -> bool:
        """Read and deliver what the socket has, in a burst; True if more is buffered."""
        for _ in range(_BURST):
            if self.loop_read() != _SUCCESS or self.held:
                return False
            if not self.buffered:
                return False
        return True  # the socket may not wake the caller again for what is in our buffer

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        """Collect a QoS 1 PUBACK for ``flush_acks()`` (QoS 2 goes through paho at once)."""
        if qos != 1 or not self._manual_ack:
            return super().ack(mid, qos)
        if self._ack_sock is not self._sock:  # acks of a lost connection are void
            self._acks.clear()
            self._ack_sock = self._sock
        self._acks += _pack_puback(PUBACK, 2, mid)
        return _SUCCESS

    def flush_acks(self) -> None:
        """Queue the collected PUBACKs as one write; dropped if their connection is gone."""
        if not self._acks:
            return
        data = bytes(self._acks)
        self._acks.clear()
        if self._sock is None or self._ack_sock is not self._sock:
            return
        self._packet_queue(PUBACK, data, 0, 0)

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho's own reads (the packets it handles) come here: serve them from our buffer.
        if self._rsock is not self._sock or self._rpos >= len(self._rbuf):
            if self._rsock is not self._sock:
                self._rtail = b""
            data = super()._sock_recv(max(bufsize, _RECV))
            self._rsock = self._sock
            self._rbuf, self._rpos = data, 0
            if not data:
                return data
        chunk = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(chunk)
        return chunk

    def _packet_read(self) -> MQTTErrorCode:
        if self._in_packet["command"] or self._protocol != _MQTTV5:
            return super()._packet_read()  # paho is in the middle of a packet
        if self._rsock is not self._sock:  # a new connection: nothing of the old one is valid
            self._rsock = self._sock
            self._rbuf, self._rpos, self._rtail = b"", 0, b""
        buf = self._rbuf
        pos = self._rpos
        if pos >= len(buf):
            try:
                data = super()._sock_recv(_RECV)
            except BlockingIOError:
                return _AGAIN
            except OSError as err:
                self._easy_log(MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return _CONN_LOST
            if not data:
                return _CONN_LOST
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()
            if self._rtail:
                data = self._rtail + data
                self._rtail = b""
            self._rbuf = buf = data
            self._rpos = pos = 0
        return self._decode(buf, pos)

    def _decode(self, buf: bytes, pos: int) -> MQTTErrorCode:  # noqa: PLR0911, PLR0912
        # One function, no calls per packet: this is the ingester's hottest loop.
        end = len(buf)
        deliver = self._deliver
        for _ in range(_FAST_BURST):
            if pos >= end:
                return _SUCCESS
            header = buf[pos]
            # Remaining length: a variable byte integer of at most four bytes.
            i = pos + 1
            if i >= end:
                return self._stash(buf, pos)
            byte = buf[i]
            i += 1
            length = byte & 0x7F
            shift = 7
            while byte & 0x80:
                if shift > 21:
                    return self._paho_read(pos)  # malformed: paho says so
                if i >= end:
                    return self._stash(buf, pos)
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
            stop = i + length
            if stop > end:
                if stop - pos > _STASH_MAX:
                    return self._paho_read(pos)
                return self._stash(buf, pos)
            if header & 0xF4 != 0x30:  # not a PUBLISH of QoS 0 or 1
                return self._paho_read(pos)
            # Variable header: topic, packet id (QoS 1), properties; then the payload.
            if length < 3:
                return self._paho_read(pos)
            topic_end = i + 2 + (buf[i] << 8 | buf[i + 1])
            qos = (header >> 1) & 1
            if qos:
                if topic_end + 3 > stop:
                    return self._paho_read(pos)
                mid = buf[topic_end] << 8 | buf[topic_end + 1]
                j = topic_end + 2
            else:
                if topic_end + 1 > stop:
                    return self._paho_read(pos)
                mid = 0
                j = topic_end
            byte = buf[j]
            j += 1
            props = byte & 0x7F
            shift = 7
            while byte & 0x80:
                if shift > 21 or j >= stop:
                    return self._paho_read(pos)
                byte = buf[j]
                j += 1
                props |= (byte & 0x7F) << shift
                shift += 7
            j += props
            if j > stop:
                return self._paho_read(pos)
            self._rpos = pos = stop
            deliver(Publish(buf[i + 2:topic_end], buf[j:stop], mid, qos,
                            bool(header & 0x08), bool(header & 0x01)))
            if self.held:
                break
        return _SUCCESS

    def _stash(self, buf: bytes, pos: int) -> MQTTErrorCode:
        # The packet at pos continues in the next read: keep its start (at most _STASH_MAX).
        self._rtail = buf[pos:]
        self._rbuf, self._rpos = b"", 0
        return _SUCCESS

    def _paho_read(self, pos: int) -> MQTTErrorCode:
        # paho handles the packet at pos, reading it from our buffer through _sock_recv.
        self._rpos = pos
        return super()._packet_read()

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        # Messages paho decoded itself (QoS 2, packets over 64 KiB).
        self._deliver(Publish(message._topic, bytes(message.payload), message.mid, message.qos,
                              bool(message.dup), bool(message.retain)))


class _StockClient(paho.Client):
    """paho's client as shipped, through its public API: the fallback of the fast path.

    paho reads and decodes each packet itself and writes each PUBACK as ``ack()`` is called; the
    few members the Broker needs beside paho's (``held``, ``read_some``, ``flush_acks``) are the
    fast client's, so the Broker drives either alike.
    """

    fast = False
    buffered = 0
    acks_pending = False

    def __init__(self, *args: Any, deliver: OnMessage, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = deliver
        self.delivered = 0
        self.held = False
        self.on_message = self._on_paho_message

    def read_some(self) -> bool:
        """Read and deliver packets until one delivers nothing (likely: the socket is drained).

        Always False: what is left is in the socket, which wakes the caller again.
        """
        for _ in range(_BURST):
            before = self.delivered
            if self.loop_read() != _SUCCESS or self.held or self.delivered == before:
                return False
        return False

    def flush_acks(self) -> None:
        """Nothing to do: paho queued each PUBACK when ``ack()`` was called."""

    def _on_paho_message(self, _client: paho.Client, _userdata: Any,
                         message: paho.MQTTMessage) -> None:
        self.delivered += 1
        try:
            topic = message.topic.encode()
        except UnicodeDecodeError:
            # The public API has no bytes for a topic that is not UTF-8: the raw topic where
            # paho still keeps it (getattr: no internal is relied on), for the dead letter.
            topic = getattr(message, "_topic", b"(topic not UTF-8)")
        self._deliver(Publish(topic, bytes(message.payload), message.mid, message.qos,
                              bool(message.dup), bool(message.retain)))


# -- is this paho the one the fast path was written against? ------------------------------

# What _Client overrides or calls of paho's (paho 2.2): methods and their parameters.
_METHODS = {
    "_sock_recv": ("self", "bufsize"),
    "_packet_read": ("self",),
    "_handle_on_message": ("self", "message"),
    "_packet_queue": ("self", "command", "packet", "mid", "qos", "info"),
    "_easy_log": ("self", "level", "fmt", "*args"),
    "ack": ("self", "mid", "qos"),
    "loop_read": ("self", "max_packets"),
}
# Attributes of a new client that it reads or writes, and what they hold.
_ATTRIBUTES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "_sock": ("None before connecting", lambda v: v is None),
    "_in_packet": ("a dict whose 'command' is 0 between packets",
                   lambda v: isinstance(v, dict) and v.get("command") == 0),
    "_protocol": ("the protocol asked for (MQTTv5)", lambda v: v == paho.MQTTv5),
    "_manual_ack": ("the manual_ack asked for (True)", lambda v: v is True),
    "_msgtime_mutex": ("a lock", lambda v: hasattr(v, "__enter__") and hasattr(v, "__exit__")),
    # paho's keepalive reads it; 2.1 called it _last_msg_in.
    "_last_bytes_received": ("a time (float)", lambda v: isinstance(v, float)),
}
# Attributes of a received message (paho.MQTTMessage) read for QoS 2 and large packets.
_MESSAGE_ATTRIBUTES: dict[str, type] = {
    "_topic": bytes, "payload": bytes, "mid": int, "qos": int, "dup": bool, "retain": bool}


def fast_path_problems(client_class: type[paho.Client] = paho.Client,
                       message_class: type[paho.MQTTMessage] = paho.MQTTMessage) -> list[str]:
    """What of paho's internals the fast path relies on is missing or differs; [] if nothing.

    Checks the methods ``_Client`` overrides or calls (present, with the parameters it expects),
    the attributes it touches (on a new client: present, holding what it expects) and
    ``paho.mqtt.client.time_func``; then, when ``_Client`` is built on ``client_class``, feeds
    it a byte stream (a QoS 1 PUBLISH it decodes, a QoS 2 one paho decodes from its buffer, a
    PINGRESP) and checks what is delivered and sent.
    """
    name = client_class.__name__
    problems = []
    for method, expected in _METHODS.items():
        found = getattr(client_class, method, None)
        if not callable(found):
            problems.append(f"{name}.{method} is missing")
        elif (params := _parameters(found)) != expected:
            problems.append(f"{name}.{method}({', '.join(params)}) differs: the fast path"
                            f" expects ({', '.join(expected)})")
    if not callable(getattr(paho, "time_func", None)):
        problems.append("paho.mqtt.client.time_func is missing")
    try:
        probe = client_class(CallbackAPIVersion.VERSION2, client_id="oemr-fast-path-check",
                             protocol=paho.MQTTv5, manual_ack=True)
        message = message_class(mid=1, topic=b"t")
    except Exception as exc:  # noqa: BLE001  (any failure is the finding)
        return [*problems, f"cannot make a {name} to inspect: {exc!r}"]
    for attribute, (holds, check) in _ATTRIBUTES.items():
        if attribute not in vars(probe):
            problems.append(f"{name}.{attribute} is missing (a new client has no such attribute)")
        elif not check(value := vars(probe)[attribute]):
            problems.append(f"{name}.{attribute} is {_shown(value)}, not {holds}")
    message.payload = b""
    for attribute, kind in _MESSAGE_ATTRIBUTES.items():
        if not isinstance(getattr(message, attribute, None), kind):
            problems.append(f"{message_class.__name__}.{attribute} is missing or not"
                            f" {kind.__name__}")
    if not problems and issubclass(_Client, client_class):
        problems += _self_test()
    return problems


def _shown(value: object) -> str:
    if value is None or isinstance(value, int | float | str):
        return repr(value)
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _parameters(method: Callable[..., Any]) -> tuple[str, ...]:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return ("?",)
    return tuple(_STARS.get(p.kind, "") + p.name for p in params)


_STARS: dict[Any, str] = {inspect.Parameter.VAR_POSITIONAL: "*",
                          inspect.Parameter.VAR_KEYWORD: "**"}


class _ProbeSocket:
    """A socket whose peer is the self-test: what it is fed is read, what is sent is kept."""

    def __init__(self, data: bytes) -> None:
        self.inbox = bytearray(data)
        self.sent = bytearray()

    def recv(self, bufsize: int) -> bytes:
        if not self.inbox:
            raise BlockingIOError
        data = bytes(self.inbox[:bufsize])
        del self.inbox[:bufsize]
        return data

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


# The self-test's stream: a QoS 1 PUBLISH (mid 7) the fast decoder takes, a PINGRESP and a QoS 2
# PUBLISH (mid 8) that paho reads from the fast client's buffer, and the PUBREL that releases it.
_TEST_STREAM = (b"\x32\x0b\x00\x01t\x00\x07\x00fast!" + b"\xd0\x00"
                + b"\x34\x0b\x00\x01t\x00\x08\x00paho!" + b"\x62\x02\x00\x08")
_TEST_DELIVERED = [(b"t", b"fast!", 7, 1), (b"t", b"paho!", 8, 2)]
_TEST_SENT = b"\x50\x02\x00\x08" + b"\x40\x02\x00\x07"  # PUBREC 8 (paho), PUBACK 7 (ours)


def _self_test() -> list[str]:
    got: list[Publish] = []
    try:
        sock = _ProbeSocket(_TEST_STREAM)
        client = _Client(CallbackAPIVersion.VERSION2, client_id="oemr-fast-path-check",
                         protocol=paho.MQTTv5, manual_ack=True, deliver=got.append)
        client._sock = sock  # type: ignore[assignment]
        client._last_bytes_received = 0.0
        for _ in range(20):
            if client.loop_read() != _SUCCESS or not (sock.inbox or client.buffered):
                break
        client.ack(7, 1)
        client.flush_acks()
    except Exception as exc:  # noqa: BLE001  (any failure is the finding)
        return [f"self-test: the fast client failed on a PUBLISH stream: {exc!r}"]
    problems = []
    delivered = [(p._topic, p.payload, p.mid, p.qos) for p in got]
    if delivered != _TEST_DELIVERED:
        problems.append(f"self-test: delivered {delivered}, expected {_TEST_DELIVERED}")
    if bytes(sock.sent) != _TEST_SENT:
        problems.append(f"self-test: sent {bytes(sock.sent)!r}, expected {_TEST_SENT!r}")
    if not client._last_bytes_received:
        problems.append("self-test: reading did not set _last_bytes_received (keepalive)")
    return problems


@dataclass(frozen=True, slots=True)
class ClientChoice:
    """Which MQTT client the ingester runs, and why."""

    fast: bool
    why: str
    problems: tuple[str, ...] = ()

    @property
    def path(self) -> Literal["fast", "stock"]:
        """``fast`` (the fast path) or ``stock`` (paho as shipped)."""
        return "fast" if self.fast else "stock"


def choose_client(mode: Literal["auto", "off"], *,
                  client_class: type[paho.Client] = paho.Client) -> ClientChoice:
    """The fast path if asked for (``auto``) and paho's internals are as it needs them."""
    version = paho_version
    if mode == "off":
        return ClientChoice(False, f"stock paho-mqtt {version}: OEMR_INGEST_FAST_PATH=off")
    problems = fast_path_problems(client_class)
    if problems:
        return ClientChoice(False, f"stock paho-mqtt {version}: its internals differ from the"
                            " ones the fast path was written for (paho 2.2)", tuple(problems))
    return ClientChoice(True, f"fast path on paho-mqtt {version}: its internals checked")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How the ingester's MQTT session is set up."""

    host: str
    port: int
    client_id: str
    keepalive: int
    session_expiry_s: int
    receive_maximum: int
    username: str | None = None
    password: str | None = None
    will_topic: str | None = None


class Broker:
    """One persistent MQTT 5 session (clean start off), messages acked by the caller."""

    def __init__(self, options: SessionOptions, *, on_message: OnMessage,
                 subscriptions: list[tuple[str, SubscribeOptions]],
                 on_connected: Callable[[], None] | None = None, fast: bool = True) -> None:
        self._options = options
        self._subscriptions = subscriptions
        self._on_connected = on_connected
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._paused = False
        self._paused_at = 0.0
        self._stopped = False  # paused for good: the ingester is shutting down
        self._sock: socket.socket | None = None
        self._misc: asyncio.Task[None] | None = None
        # A new connection gets new message ids: acks are only valid in the generation that
        # received the message.
        self.generation = 0
        client: _Client | _StockClient = (_Client if fast else _StockClient)(
            CallbackAPIVersion.VERSION2, client_id=options.client_id, protocol=paho.MQTTv5,
            manual_ack=True, deliver=on_message)
        if options.username:
            client.username_pw_set(options.username, options.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._client = client

    @property
    def connected(self) -> bool:
        """True while a session is up."""
        return self._connected.is_set()

    async def connect(self, *, will_payload: bytes | None = None) -> None:
        """Connect (or reconnect) and wait for the CONNACK; the will is set per connection."""
        if self._options.will_topic and will_payload is not None:
            self._client.will_set(self._options.will_topic, will_payload, qos=1, retain=True)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._options.session_expiry_s
        props.ReceiveMaximum = self._options.receive_maximum
        self._connected.clear()
        self._disconnected.clear()
        await self._loop.run_in_executor(None, lambda: self._client.connect(
            self._options.host, self._options.port, self._options.keepalive,
            clean_start=False, properties=props))
        await asyncio.wait_for(self._connected.wait(), timeout=10)

    async def wait_disconnected(self) -> None:
        """Return when the session is lost."""
        await self._disconnected.wait()

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        """Acknowledge a message now that it is stored; False if its session is gone."""
        if generation != self.generation or not self.connected:
            return False
        client = self._client
        if client.fast and not client.acks_pending:
            # PUBACKs are collected: the caller flushes after its batch, or else the next
            # turn of the loop does.
            self._loop.call_soon(client.flush_acks)
        client.ack(mid, qos)
        return True

    def flush_acks(self) -> None:
        """Send the PUBACKs collected by ``ack()`` (one socket write for all of them)."""
        self._client.flush_acks()

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish, best effort (used for Sparkplug STATE and rebirth commands)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def pause(self, *, for_good: bool = False) -> None:
        """Stop reading the socket: TCP holds back what we cannot take now.

        Mosquitto 2.0.11 keeps sending past our Receive Maximum while PUBACKs flow (measured:
        tests/bench, 42,000 held against a window of 6,000), so the window alone does not bound
        memory. A pause lasts at most half the keepalive (then reading resumes, or the broker
        would drop us for unanswered pings); ``for_good`` is the shutdown's.
        """
        if not self._paused and self._sock is not None:
            self._loop.remove_reader(self._sock)
        if not self._paused:
            self._paused_at = self._loop.time()
        self._paused = self._client.held = True
        self._stopped = self._stopped or for_good

    def resume(self) -> None:
        """Read the socket again (not after a shutdown's pause)."""
        if not self._paused or self._stopped:
            return
        self._paused = self._client.held = False
        if self._sock is not None:
            self._loop.add_reader(self._sock, self._read)
            self._loop.call_soon(self._read)  # what was buffered when we paused

    async def disconnect(self) -> None:
        """End the session cleanly (the broker keeps it for session_expiry_s)."""
        if self.connected:
            self._client.flush_acks()
            self._client.disconnect()
            try:
                await asyncio.wait_for(self._disconnected.wait(), timeout=5)
            except TimeoutError:
                logger.warning("broker did not confirm the disconnect")
        if self._misc is not None:
            self._misc.cancel()

    # -- paho callbacks (all on the event loop thread, except socket-open during connect) ----

    def _on_connect(self, client: paho.Client, _userdata: Any, flags: Any,
                    reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            logger.error("broker refused the connection: %s", reason)
            return
        self.generation += 1
        logger.info("connected to %s:%s as %s (session present: %s)", self._options.host,
                    self._options.port, self._options.client_id, flags.session_present)
        client.subscribe(self._subscriptions)
        if self._on_connected is not None:
            self._on_connected()
        self._connected.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any,
                       reason: ReasonCode, _props: Properties | None) -> None:
        level = logging.WARNING if reason.is_failure else logging.INFO
        logger.log(level, "disconnected from broker: %s", reason)
        self._connected.clear()
        self._disconnected.set()

    def _read(self) -> None:
        if self._paused:
            return
        if self._client.read_some() and not self._paused:
            # Data is left in our buffer and the socket may not wake us again: come back soon.
            self._loop.call_soon(self._read)

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        def register() -> None:
            self._sock = sock
            if not self._stopped:
                # A new connection is read from the start: its CONNACK and pings must get in.
                self._paused = self._client.held = False
                self._loop.add_reader(sock, self._read)
            if self._misc is None or self._misc.done():
                self._misc = self._loop.create_task(self._misc_loop())
        self._loop.call_soon_threadsafe(register)

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd < 0:  # paho closes its socket again when collected
            return

        def unregister() -> None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
            if self._sock is sock:
                self._sock = None
        self._on_loop_now(unregister)

    def _on_register_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop_now(self._loop.add_writer, sock.fileno(), self._client.loop_write)

    def _on_unregister_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._on_loop_now(self._loop.remove_writer, fd)

    def _on_loop_now(self, func: Callable[..., object], *args: Any) -> None:
        # At once when on the loop (an fd may be closed and reused by the next connection before
        # a queued call runs), else queued from paho's connect thread.
        if self._loop.is_closed():
            return
        if _on_loop(self._loop):
            func(*args)
        else:
            self._loop.call_soon_threadsafe(func, *args)

    async def _misc_loop(self) -> None:
        """Keepalive pings and retries: paho's loop_misc, once a second; ends long pauses."""
        while True:
            if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                return
            if self._paused and not self._stopped and (
                    self._loop.time() - self._paused_at > self._options.keepalive / 2):
                logger.info("reading the broker again after a long pause (keepalive)")
                self.resume()
            await asyncio.sleep(1)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
