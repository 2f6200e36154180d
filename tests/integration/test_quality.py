"""Data-quality views and ``oem-retention ingest quality``."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from ingest import quality
from tests.integration.conftest import ROOT


def _seed(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO dead_letters (topic, payload, payload_size, reason, digest, times_received,
                                      first_received_at, last_received_at)
            VALUES ('oem/acme/machines/SN-1/telemetry', 'x', 1, 'not JSON', 'a', 3,
                    now() - interval '2 hours', now() - interval '2 hours'),
                   ('oem/acme/machines/SN-1/events', 'y', 1, 'event type bad', 'b', 1,
                    now() - interval '1 hour', now() - interval '1 hour'),
                   ('oem/acme/machines/SN-2/telemetry', 'z', 1, 'ts in the future', 'c', 1,
                    now() - interval '30 minutes', now() - interval '30 minutes'),
                   ('spBv1.0/plant/DDATA/node7/press', 'p', 1, 'alias unbound', 'd', 2,
                    now(), now()),
                   ('garbage/topic', 'q', 1, 'unknown topic', 'e', 1,
                    now() - interval '10 days', now() - interval '10 days')""")
        conn.execute("""
            INSERT INTO sparkplug_gaps (detected_at, spb_group, spb_edge_node, cause,
                                        expected_seq, received_seq, missing, rebirth_requested)
            VALUES (now(), 'plant', 'node7', 'seq_gap', 5, 9, 4, true),
                   (now(), 'plant', 'node7', 'seq_gap', 12, 13, 1, false),
                   (now(), 'plant', 'node7', 'no_birth', NULL, 3, NULL, true),
                   (now(), 'plant', 'node8', 'seq_gap', 250, 2, 8, true)""")


def test_dead_letter_sources_and_gap_days(database_url: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        sources = {s.source: s for s in quality.dead_letter_sources(conn, since="7 days")}
        gaps = {g.spb_edge_node: g for g in quality.sparkplug_gap_days(conn)}
    # The 10-day-old stray topic is outside the window.
    assert set(sources) == {"oem/acme/SN-1", "oem/acme/SN-2", "spBv1.0/plant/node7"}
    sn1 = sources["oem/acme/SN-1"]
    assert (sn1.distinct_messages, sn1.times_received) == (2, 4)
    assert sn1.latest_reason == "event type bad"  # the later of its two
    assert sources["spBv1.0/plant/node7"].times_received == 2
    node7, node8 = gaps["node7"], gaps["node8"]
    assert (node7.seq_gaps, node7.seq_numbers_missing, node7.data_without_birth,
            node7.rebirths_requested) == (2, 5, 1, 2)
    assert (node8.seq_gaps, node8.seq_numbers_missing, node8.rebirths_requested) == (1, 8, 1)


def test_quality_command_prints_both_tables(database_url: str,
                                            ingester_env: dict[str, str]) -> None:
    _seed(database_url)
    out = subprocess.run([sys.executable, "-m", "oem_retention", "ingest", "quality"],
                         env={**ingester_env, "COLUMNS": "200"}, cwd=ROOT, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert "oem/acme/SN-1" in out and "event type bad" in out
    assert "node7" in out and "node8" in out
    assert "garbage" not in out
