"""The exporter's fast exposition writer says exactly what prometheus_client's encoders say,
in both formats, and hands anything it does not handle to them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter._exposition import choose
from tests.test_exporter_badinput import NAMES
from tests.test_exporter_support import insert_run, registered

TEXT_ACCEPT = "text/plain"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"


def families(text, parser):
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
        for f in parser(text)
    ]


@pytest.fixture
def registry(db, db_target):
    for i, name in enumerate(NAMES):
        insert_run(db, task_name=name, overall_percent_complete=i * 10, memory_mb=i)
    insert_run(db, task_name="ended", execution_status="FINISHED", execution_end=None)
    with registered(db_target, min_interval=3600) as (registry, _):
        yield registry


def test_text_format_matches_prometheus_client(registry):
    encode, content_type = choose(TEXT_ACCEPT)
    assert content_type.startswith("text/plain; version=0.0.4")
    ours = encode(registry).decode()
    theirs = generate_latest(registry).decode()
    assert ours == theirs
    assert families(ours, parse_text) == families(theirs, parse_text)


def test_openmetrics_format_matches_prometheus_client(registry):
    encode, content_type = choose(OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text")
    ours = encode(registry).decode()
    theirs = generate_openmetrics(registry).decode()
    assert ours == theirs
    assert families(ours, parse_openmetrics) == families(theirs, parse_openmetrics)
    assert ours.endswith("# EOF\n")


def test_other_metric_types_go_to_prometheus_client():
    registry = CollectorRegistry()
    Histogram("some_seconds", "A histogram.", registry=registry).observe(0.3)
    encode, _ = choose(TEXT_ACCEPT)
    assert encode(registry) == generate_latest(registry)
    encode, _ = choose(OPENMETRICS_ACCEPT)
    assert encode(registry) == generate_openmetrics(registry)
