"""paho-mqtt driven from the asyncio event loop, with acknowledgements in our hands.

Why paho and not aiomqtt: aiomqtt 2.5 acknowledges a QoS 1 message as soon as it arrives, so a
crash before the database commit would lose it. paho 2's ``manual_ack`` lets the ingester send the
PUBACK after the transaction that stored the message has committed. The socket is served by the
event loop (as aiomqtt does internally), so decoding, batching and database I/O share one thread
without locks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

logger = logging.getLogger(__name__)

OnMessage = Callable[[paho.MQTTMessage], None]

# Packets handled per socket wakeup before yielding to the event loop (the flusher, acks).
_BURST = 32


class _Client(paho.Client):
    """paho's client with a buffered socket read and a direct message callback.

    paho reads each packet with three or four ``recv`` calls and routes every message through
    its topic matcher, which allocates a reference cycle per message (garbage the full collector
    must find). Profiling the ingester put paho's receive path at half its CPU; these two
    overrides of paho internals cut the receive cost (tests/bench/ingest.py measures it).
    """

    def __init__(self, *args: Any, deliver: OnMessage, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = deliver
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object = None

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet parsed."""
        return len(self._rbuf) - self._rpos if self._rsock is self._sock else 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock or self._rpos >= len(self._rbuf):
            data = super()._sock_recv(max(bufsize, 65536))
            self._rsock = self._sock
            self._rbuf, self._rpos = data, 0
            if not data:
                return data
        chunk = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(chunk)
        return chunk

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        self._deliver(message)


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
                 on_connected: Callable[[], None] | None = None) -> None:
        self._options = options
        self._subscriptions = subscriptions
        self._on_connected = on_connected
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._paused = False
        self._sock: socket.socket | None = None
        self._misc: asyncio.Task[None] | None = None
        # A new connection gets new message ids: acks are only valid in the generation that
        # received the message.
        self.generation = 0
        client = _Client(CallbackAPIVersion.VERSION2, client_id=options.client_id,
                         protocol=paho.MQTTv5, manual_ack=True, deliver=on_message)
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
        self._client.ack(mid, qos)
        return True

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish, best effort (used for Sparkplug STATE and rebirth commands)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def pause(self) -> None:
        """Stop reading the socket: the broker holds what we cannot take (QoS 0 included)."""
        if not self._paused and self._sock is not None:
            self._loop.remove_reader(self._sock)
        self._paused = True

    def resume(self) -> None:
        """Read the socket again."""
        if self._paused and self._sock is not None:
            self._loop.add_reader(self._sock, self._read)
            self._paused = False
            self._loop.call_soon(self._read)  # what was buffered when we paused
        self._paused = False

    async def disconnect(self) -> None:
        """End the session cleanly (the broker keeps it for session_expiry_s)."""
        if self.connected:
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
        client = self._client
        if self._paused:
            return
        for _ in range(_BURST):
            if client.loop_read() != paho.MQTT_ERR_SUCCESS or self._paused:
                return
            if not client.buffered:
                return
        # Data is left in our buffer and the socket may not wake us again: come back soon.
        self._loop.call_soon(self._read)

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        def register() -> None:
            self._sock = sock
            if not self._paused:
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
        """Keepalive pings and retries: paho's loop_misc, once a second."""
        while True:
            if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                return
            await asyncio.sleep(1)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
