"""The broker client's own PUBLISH decoder and batched PUBACKs, against paho's decoder.

Byte streams are fed through a fake socket, cut at every offset (or in many pieces), to our
``_Client`` and to a plain paho client; both must deliver the same messages.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.broker import Publish, _Client, _StockClient

Row = tuple[bytes, bytes, int, int, bool, bool]


class FakeSocket:
    """A non-blocking socket whose peer is the test: ``feed`` bytes, ``hang_up``."""

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.closed_by_peer = False
        self.sent: list[bytes] = []
        self.recv_sizes: list[int] = []

    def feed(self, data: bytes) -> None:
        self.inbox += data

    def hang_up(self) -> None:
        self.closed_by_peer = True

    def recv(self, bufsize: int) -> bytes:
        self.recv_sizes.append(bufsize)
        if not self.inbox:
            if self.closed_by_peer:
                return b""
            raise BlockingIOError
        data = bytes(self.inbox[:bufsize])
        del self.inbox[:bufsize]
        return data

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def publish(topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 1, dup: bool = False,
            retain: bool = False, props: Properties | None = None) -> bytes:
    """An MQTT 5 PUBLISH packet."""
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    body += props.pack() if props is not None else b"\x00"  # type: ignore[no-untyped-call]
    body += payload
    return bytes([header]) + _varint(len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _props() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = 3600
    props.ContentType = "application/json"
    props.UserProperty = [("site", "nord"), ("line", "3")]
    return props


PINGRESP = b"\xd0\x00"
STREAM = [
    publish(b"oem/acme/machines/m1/telemetry", b'{"ts": 1, "metrics": {}}', mid=1),
    publish(b"oem/acme/machines/m2/telemetry", b"qos zero", qos=0, props=_props()),
    PINGRESP,
    publish(b"oem/acme/machines/m1/telemetry", b"again", mid=258, dup=True, retain=True),
    publish(b"oem/\xff\xfe/bad", b"invalid utf-8 topic", mid=3),
    publish(b"oem/acme/machines/m3/telemetry", bytes(range(256)) * 3, mid=65535,
            props=_props()),
    publish(b"oem/acme/machines/m4/telemetry", b"", mid=4),
    publish(b"", b"empty topic (MQTT 5 allows it)", qos=0),
    publish(b"oem/acme/machines/m5/telemetry", b"x" * 127, mid=5),  # remaining length 2 bytes
]


def _client(sock: FakeSocket) -> tuple[_Client, list[Publish]]:
    got: list[Publish] = []
    client = _Client(CallbackAPIVersion.VERSION2, client_id="fast", protocol=paho.MQTTv5,
                     manual_ack=True, deliver=got.append)
    client._sock = sock  # type: ignore[assignment]
    return client, got


def _reference(sock: FakeSocket) -> tuple[paho.Client, list[paho.MQTTMessage]]:
    got: list[paho.MQTTMessage] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="ref", protocol=paho.MQTTv5,
                         manual_ack=True)
    client.on_message = lambda _c, _u, msg: got.append(msg)
    client._sock = sock  # type: ignore[assignment]
    return client, got


def _rows(messages: Iterable[Any]) -> list[Row]:
    return [(m._topic, bytes(m.payload), m.mid, m.qos, bool(m.dup), bool(m.retain))
            for m in messages]


def _drive(client: paho.Client, sock: FakeSocket, chunks: Iterable[bytes]) -> MQTTErrorCode:
    """Feed the chunks one by one, reading (as Broker._read does) until all is handled."""
    rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    for chunk in chunks:
        sock.feed(chunk)
        for _ in range(100_000):
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
            if not sock.inbox and not getattr(client, "buffered", 0):
                break
        else:
            pytest.fail("the client does not make progress")
    return rc


def _both(chunks: list[bytes]) -> tuple[list[Row], list[Row], _Client]:
    sock, ref_sock = FakeSocket(), FakeSocket()
    client, got = _client(sock)
    reference, expected = _reference(ref_sock)
    assert _drive(client, sock, chunks) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert _drive(reference, ref_sock, chunks) == MQTTErrorCode.MQTT_ERR_SUCCESS
    return _rows(got), _rows(expected), client


def _decoded_by_paho(packet: bytes) -> Row:
    """What paho's own decoder makes of one PUBLISH packet."""
    pos = 1
    while packet[pos] & 0x80:
        pos += 1
    r = _packet.decode_publish(packet[0], bytearray(packet[pos + 1:]), paho.MQTTv5)
    return r.topic, bytes(r.payload), r.mid, r.qos, r.dup, r.retain


def test_whole_stream_in_one_read() -> None:
    stream = b"".join(STREAM)
    got, expected, client = _both([stream])
    assert got == expected
    assert got == [_decoded_by_paho(p) for p in STREAM if p != PINGRESP]
    assert client.buffered == 0


@pytest.mark.parametrize("cut", range(1, len(b"".join(STREAM))))
def test_stream_cut_at_every_offset(cut: int) -> None:
    stream = b"".join(STREAM)
    got, expected, _ = _both([stream[:cut], stream[cut:]])
    assert got == expected
    assert len(got) == len(STREAM) - 1


def test_stream_byte_by_byte_and_in_random_pieces() -> None:
    stream = b"".join(STREAM) * 3
    got, expected, _ = _both([stream[i:i + 1] for i in range(len(stream))])
    assert got == expected
    rnd = random.Random(7)
    for _ in range(50):
        cuts = sorted(rnd.sample(range(1, len(stream)), rnd.randint(1, 40)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        got, expected, _ = _both(chunks)
        assert got == expected
        assert len(got) == 3 * (len(STREAM) - 1)


def test_many_packets_per_read_are_delivered_in_bursts() -> None:
    packets = [publish(b"oem/t/machines/m/telemetry", str(i).encode(), mid=i + 1)
               for i in range(1000)]
    got, expected, _ = _both([b"".join(packets)])
    assert got == expected
    assert [row[2] for row in got] == list(range(1, 1001))


@pytest.mark.parametrize("size", [60_000, 65_531, 65_536, 100_000, 300_000])
def test_packets_near_and_over_the_read_size(size: int) -> None:
    big = publish(b"oem/acme/machines/big/telemetry", bytes(random.Random(size).randbytes(size)),
                  mid=77, props=_props())
    stream = STREAM[0] + big + STREAM[1] + big + STREAM[3]
    for cut in [1, 2, 3, 5, 40, 65_535, 65_536, 65_537, len(stream) // 2, len(stream) - 3]:
        got, expected, _ = _both([stream[:cut], stream[cut:]])
        assert got == expected
        assert len(got) == 5
        assert got[1] == _decoded_by_paho(big)
    for piece in (1460, 9000, 65_536):
        chunks = [stream[i:i + piece] for i in range(0, len(stream), piece)]
        got, expected, _ = _both(chunks)
        assert got == expected


def test_invalid_utf8_topic_raises_like_paho() -> None:
    packet = publish(b"oem/\xff/x", b"p", mid=9)
    got: list[Publish] = []
    sock = FakeSocket()
    client, got = _client(sock)
    reference, expected = _reference(FakeSocket())
    _drive(client, sock, [packet])
    assert reference._sock is not None
    _drive(reference, reference._sock, [packet])  # type: ignore[arg-type]
    with pytest.raises(UnicodeDecodeError):
        _ = got[0].topic
    with pytest.raises(UnicodeDecodeError):
        _ = expected[0].topic
    assert got[0]._topic == expected[0]._topic == b"oem/\xff/x"


def test_topic_and_types() -> None:
    sock = FakeSocket()
    client, got = _client(sock)
    _drive(client, sock, [STREAM[0]])
    msg = got[0]
    assert msg.topic == "oem/acme/machines/m1/telemetry"
    assert type(msg.payload) is bytes
    assert (msg.mid, msg.qos, msg.dup, msg.retain) == (1, 1, False, False)


def test_qos2_goes_through_paho() -> None:
    qos2 = publish(b"oem/q2", b"exactly once", qos=2, mid=11)
    pubrel = b"\x62\x02\x00\x0b"
    sock = FakeSocket()
    client, got = _client(sock)
    assert _drive(client, sock, [STREAM[0] + qos2 + STREAM[1], pubrel]) == 0
    assert sock.sent == [b"\x50\x02\x00\x0b"]  # PUBREC by paho
    assert [(m._topic, m.qos) for m in got] == [
        (b"oem/acme/machines/m1/telemetry", 1), (b"oem/acme/machines/m2/telemetry", 0),
        (b"oem/q2", 2)]


@pytest.mark.parametrize("packet", [
    b"\x32\x03\x00\x09a",  # topic longer than the packet
    b"\x32\x05\x00\x01a\x00\x01",  # no room for the property length
    b"\x30\x04\x00\x01a\x05",  # properties longer than the packet
    b"\x36\x04\x00\x01a\x00",  # QoS 3
    b"\x30\xff\xff\xff\xff\x7f",  # remaining length of five bytes
])
def test_malformed_packets_fail_as_with_paho(packet: bytes) -> None:
    sock, ref_sock = FakeSocket(), FakeSocket()
    client, got = _client(sock)
    reference, expected = _reference(ref_sock)
    rc = _drive(client, sock, [STREAM[0] + packet])
    assert rc == _drive(reference, ref_sock, [STREAM[0] + packet])
    assert rc == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert _rows(got) == _rows(expected) == [_decoded_by_paho(STREAM[0])]


def test_connection_lost_mid_packet_and_new_connection() -> None:
    sock = FakeSocket()
    client, got = _client(sock)
    stream = STREAM[0] + STREAM[5]
    assert _drive(client, sock, [stream[:-10]]) == 0
    assert len(got) == 1
    sock.hang_up()
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert client._sock is None
    assert client.buffered == 0
    fresh = FakeSocket()
    client._sock = fresh  # type: ignore[assignment]
    # The start of the packet cut by the hang-up is gone: were it prepended, the new stream
    # would not decode.
    assert _drive(client, fresh, [STREAM[6], STREAM[0]]) == 0
    assert _rows(got)[1:] == [_decoded_by_paho(STREAM[6]), _decoded_by_paho(STREAM[0])]


def test_held_stops_the_burst() -> None:
    sock = FakeSocket()
    got: list[Publish] = []

    def deliver(msg: Publish) -> None:
        got.append(msg)
        client.held = True

    client = _Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True,
                     deliver=deliver)
    client._sock = sock  # type: ignore[assignment]
    sock.feed(STREAM[0] * 5)
    assert client.loop_read() == 0
    assert len(got) == 1
    assert client.buffered == 4 * len(STREAM[0])
    client.held = False
    got.clear()
    assert _drive(client, sock, [b""]) == 0
    assert len(got) == 4


def test_acks_go_out_in_one_write() -> None:
    sock = FakeSocket()
    client, _ = _client(sock)
    mids = [1, 2, 258, 65535]
    for mid in mids:
        client.ack(mid, 1)
    assert client.acks_pending
    assert sock.sent == []
    client.flush_acks()
    assert not client.acks_pending
    assert sock.sent == [b"".join(struct.pack("!BBH", paho.PUBACK, 2, m) for m in mids)]
    client.flush_acks()
    assert len(sock.sent) == 1


def test_qos2_ack_goes_out_at_once() -> None:
    sock = FakeSocket()
    client, _ = _client(sock)
    client.ack(7, 2)
    assert sock.sent == [b"\x70\x02\x00\x07"]  # PUBCOMP
    assert not client.acks_pending


def test_acks_of_a_lost_connection_are_dropped() -> None:
    old = FakeSocket()
    client, _ = _client(old)
    client.ack(1, 1)
    new = FakeSocket()
    client._sock = new  # type: ignore[assignment]
    client.flush_acks()
    assert old.sent == new.sent == []
    client._sock = old  # type: ignore[assignment]
    client.ack(2, 1)
    client._sock = new  # type: ignore[assignment]
    client.ack(3, 1)  # a new connection's ack voids the old ones still collected
    client.flush_acks()
    assert old.sent == []
    assert new.sent == [b"\x40\x02\x00\x03"]
    client.ack(4, 1)
    client._sock = None
    client.flush_acks()
    assert new.sent == [b"\x40\x02\x00\x03"]


def test_qos0_and_qos1_bypass_paho(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any) -> None:
        raise AssertionError("paho decoded a QoS 0/1 PUBLISH")

    monkeypatch.setattr(_packet, "decode_publish", refuse)
    stream = b"".join(STREAM)
    sock = FakeSocket()
    client, got = _client(sock)
    for cut in (0, 100, 1000):
        assert _drive(client, sock, [stream[:cut], stream[cut:]]) == 0
    assert len(got) == 3 * (len(STREAM) - 1)


# -- the fallback: stock paho behind the same members ---------------------------------------


def test_stock_client_delivers_what_paho_decodes_and_acks_at_once() -> None:
    sock = FakeSocket()
    got: list[Publish] = []
    client = _StockClient(CallbackAPIVersion.VERSION2, client_id="stock", protocol=paho.MQTTv5,
                          manual_ack=True, deliver=got.append)
    client._sock = sock  # type: ignore[assignment]
    stream = b"".join(STREAM)
    assert _drive(client, sock, [stream[:100], stream[100:]]) == 0
    # The invalid UTF-8 topic too, as received: its dead letter says which topic it was.
    assert _rows(got) == [_decoded_by_paho(p) for p in STREAM if p != PINGRESP]
    assert client.delivered == len(STREAM) - 1
    client.ack(258, 1)
    assert sock.sent == [b"\x40\x02\x01\x02"]  # paho's own PUBACK, written at once
    assert not client.acks_pending
    client.flush_acks()
    assert len(sock.sent) == 1


def test_stock_client_reads_until_a_read_delivers_nothing_or_it_is_held() -> None:
    sock = FakeSocket()
    got: list[Publish] = []

    def deliver(msg: Publish) -> None:
        got.append(msg)
        client.held = len(got) == 3

    client = _StockClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True,
                          deliver=deliver)
    client._sock = sock  # type: ignore[assignment]
    sock.feed(STREAM[0] * 5)
    assert client.read_some() is False
    assert len(got) == 3  # held after the third
    client.held = False
    assert client.read_some() is False
    assert len(got) == 5
    assert sock.recv_sizes[-1] == 1  # the last read found the socket empty
