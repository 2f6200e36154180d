"""The topic contract: which topic is routed where, and what a wrong publisher is told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import topics
from ingest.models import Rejected
from ingest.topics import JsonTopic, SparkplugTopic

# Names the contract accepts: 1-64 of letters, digits and . _ : -, starting with a letter or digit.
NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}\Z")


@pytest.mark.parametrize(("topic", "expected"), [
    ("oem/acme/machines/SN-1/telemetry", JsonTopic("acme", "SN-1", "telemetry")),
    ("oem/acme/machines/SN-1/events", JsonTopic("acme", "SN-1", "events")),
    ("oem/a.b_c:d-e/machines/0/telemetry", JsonTopic("a.b_c:d-e", "0", "telemetry")),
    ("oem/acme/machines/" + "s" * 64 + "/events", JsonTopic("acme", "s" * 64, "events")),
])
def test_json_topics_name_tenant_serial_and_kind(topic: str, expected: JsonTopic) -> None:
    assert topics.parse(topic) == expected


@pytest.mark.parametrize(("topic", "words"), [
    ("oem/acme/machines/SN-1", ["unknown topic", "oem/<tenant>/machines/<serial>"]),
    ("oem/acme/machines/SN-1/telemetry/extra", ["unknown topic"]),
    ("oem/acme/devices/SN-1/telemetry", ["unknown topic"]),
    ("oem/acme/machines/SN-1/status", ["unknown topic", "telemetry|events"]),
    ("oem/acme/machines//telemetry", ["serial ''", "not a valid name"]),
    ("oem//machines/SN-1/telemetry", ["tenant ''", "not a valid name"]),
    ("oem/acme/machines/-SN/telemetry", ["serial '-SN'", "starting with a letter or digit"]),
    ("oem/acme/machines/SN 1/telemetry", ["serial 'SN 1'", "not a valid name"]),
    ("oem/ac+me/machines/SN-1/telemetry", ["tenant 'ac+me'"]),
    ("oem/acme/machines/" + "s" * 65 + "/telemetry", ["serial", "1-64"]),
    ("factory/acme/machines/SN-1/telemetry", ["unknown topic", "spBv1.0/"]),
    ("", ["unknown topic"]),
])
def test_bad_json_topics_are_rejected_with_the_reason(topic: str, words: list[str]) -> None:
    with pytest.raises(Rejected) as caught:
        topics.parse(topic)
    for word in words:
        assert word in caught.value.reason


@pytest.mark.parametrize(("topic", "expected"), [
    ("spBv1.0/plant1/NBIRTH/edge-7", SparkplugTopic("plant1", "NBIRTH", "edge-7", None)),
    ("spBv1.0/plant1/NDATA/edge-7", SparkplugTopic("plant1", "NDATA", "edge-7", None)),
    ("spBv1.0/plant1/NDEATH/edge-7", SparkplugTopic("plant1", "NDEATH", "edge-7", None)),
    ("spBv1.0/plant1/NCMD/edge-7", SparkplugTopic("plant1", "NCMD", "edge-7", None)),
    ("spBv1.0/plant1/DBIRTH/edge-7/press 2",
     SparkplugTopic("plant1", "DBIRTH", "edge-7", "press 2")),
    ("spBv1.0/plant1/DDATA/edge-7/press", SparkplugTopic("plant1", "DDATA", "edge-7", "press")),
    ("spBv1.0/plant1/DDEATH/edge-7/press",
     SparkplugTopic("plant1", "DDEATH", "edge-7", "press")),
    ("spBv1.0/plant1/DCMD/edge-7/press", SparkplugTopic("plant1", "DCMD", "edge-7", "press")),
    ("spBv1.0/STATE/scada-1", SparkplugTopic("STATE", "STATE", "scada-1", None)),
])
def test_sparkplug_topics_name_group_type_node_and_device(topic: str,
                                                          expected: SparkplugTopic) -> None:
    assert topics.parse(topic) == expected


@pytest.mark.parametrize(("topic", "words"), [
    ("spBv1.0/plant1/DDATA/edge-7", ["DDATA", "needs a device id"]),
    ("spBv1.0/plant1/DBIRTH/edge-7", ["DBIRTH", "needs a device id"]),
    ("spBv1.0/plant1/NDATA/edge-7/press", ["NDATA", "takes no device id"]),
    ("spBv1.0/plant1/NBIRTH/edge-7/press", ["NBIRTH", "takes no device id"]),
    ("spBv1.0/plant1/XDATA/edge-7", ["not a Sparkplug B topic"]),
    ("spBv1.0/plant1/ndata/edge-7", ["not a Sparkplug B topic"]),
    ("spBv1.0/plant1/NDATA", ["not a Sparkplug B topic"]),
    ("spBv1.0/plant1/DDATA/edge-7/press/extra", ["not a Sparkplug B topic"]),
    ("spBv1.0/STATE/scada-1/extra", ["not a Sparkplug B topic"]),
    ("spBv1.0//NDATA/edge-7", ["empty level"]),
    ("spBv1.0/plant1/NDATA/", ["empty level"]),
    ("spBv1.0/plant1/DDATA/edge-7/", ["empty level"]),
])
def test_bad_sparkplug_topics_are_rejected_with_the_reason(topic: str, words: list[str]) -> None:
    with pytest.raises(Rejected) as caught:
        topics.parse(topic)
    for word in words:
        assert word in caught.value.reason
    assert repr(topic) in caught.value.reason  # the publisher sees which topic was wrong


def test_sparkplug_ids_of_64_characters_are_routed() -> None:
    group, node, device = "g" * 64, "n" * 64, "d" * 64
    assert topics.parse(f"spBv1.0/{group}/DDATA/{node}/{device}") == SparkplugTopic(
        group, "DDATA", node, device)
    assert topics.parse(f"spBv1.0/{group}/NDATA/{node}") == SparkplugTopic(
        group, "NDATA", node, None)


@pytest.mark.parametrize(("topic", "words"), [
    ("spBv1.0/" + "g" * 65 + "/NDATA/edge-7", ["group id", "65 characters", "at most 64"]),
    ("spBv1.0/plant1/NBIRTH/" + "n" * 65, ["edge node id", "65 characters", "at most 64"]),
    ("spBv1.0/plant1/DDATA/edge-7/" + "d" * 65, ["device id", "65 characters", "at most 64"]),
    ("spBv1.0/plant1/DDATA/edge-7/" + "d" * 60_000, ["device id", "60000 characters"]),
    ("spBv1.0/plant1/NDEATH/" + "é" * 65, ["edge node id", "65 characters"]),
])
def test_sparkplug_ids_longer_than_64_characters_are_rejected(topic: str,
                                                              words: list[str]) -> None:
    # The ids are indexed columns of machines and sparkplug_gaps: a long one would stall a batch.
    with pytest.raises(Rejected) as caught:
        topics.parse(topic)
    for word in words:
        assert word in caught.value.reason
    assert len(caught.value.reason) < 400  # a reason names the topic, but not all of it


@given(tenant=NAMES, serial=NAMES, kind=st.sampled_from(["telemetry", "events"]))
def test_every_valid_json_topic_round_trips(tenant: str, serial: str, kind: str) -> None:
    assert topics.parse(f"oem/{tenant}/machines/{serial}/{kind}") == JsonTopic(
        tenant, serial, kind)  # type: ignore[arg-type]


@given(group=NAMES, node=NAMES, device=NAMES,
       kind=st.sampled_from(sorted(topics.SPARKPLUG_TYPES)))
def test_every_valid_sparkplug_topic_round_trips(group: str, node: str, device: str,
                                                 kind: str) -> None:
    if kind.startswith("D"):
        expected = SparkplugTopic(group, kind, node, device)
        assert topics.parse(f"spBv1.0/{group}/{kind}/{node}/{device}") == expected
    else:
        assert topics.parse(f"spBv1.0/{group}/{kind}/{node}") == SparkplugTopic(
            group, kind, node, None)


@given(st.text())
def test_any_text_is_routed_or_rejected(topic: str) -> None:
    try:
        route = topics.parse(topic)
    except Rejected as exc:
        assert exc.reason
    else:
        assert isinstance(route, JsonTopic | SparkplugTopic)
