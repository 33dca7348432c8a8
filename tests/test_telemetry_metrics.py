"""The metric points a run sends over OTLP: gauges, the duration histogram, active runs."""

from __future__ import annotations

import pytest

from tests.telemetry_support import PROTOCOLS, new_run_id, pointed_receiver
from tracker._telemetry import RunTelemetry, _config
from tracker._telemetry._metrics import (
    DURATION_BUCKETS,
    MEMORY_USAGE,
    RUN_ACTIVE,
    RUN_DURATION,
    RUN_PROGRESS,
    SUBTASK_PROGRESS,
)
from tracker._telemetry._run import ProgressRatios


@pytest.fixture(params=PROTOCOLS)
def otlp(request, monkeypatch):
    with pointed_receiver(monkeypatch, request.param) as receiver:
        yield receiver


class Source:
    """A run's progress as the tracker would report it, counting how often it is read."""

    def __init__(self) -> None:
        self.progress = ProgressRatios(0.0, None)
        self.reads = 0

    def __call__(self) -> ProgressRatios:
        self.reads += 1
        return self.progress


def collect(receiver, metric):
    telemetry = _config.current()
    assert telemetry is not None
    assert telemetry.flush(10)
    assert receiver.collected.wait_for(lambda: receiver.collected.points(metric))
    return receiver.collected.points(metric)


def test_gauges_report_progress_ratios_and_memory_of_a_live_run(otlp):
    source = Source()
    run = RunTelemetry(run_id=new_run_id(), task_name="DAILY_X", stage="DAILY", progress=source)
    source.progress = ProgressRatios(0.375, 0.75)

    overall = collect(otlp, RUN_PROGRESS)[-1]
    assert overall.kind == "gauge"
    assert overall.unit == "1"
    assert overall.value == 0.375
    assert overall.attributes == {"cicd.pipeline.name": "DAILY_X", "pipetrack.stage": "DAILY"}
    assert otlp.collected.points(SUBTASK_PROGRESS)[-1].value == 0.75
    memory = otlp.collected.points(MEMORY_USAGE)[-1]
    assert memory.unit == "By"
    assert memory.value > 1_000_000
    assert memory.attributes == overall.attributes
    run.run_ended("FINISHED")


def test_progress_is_read_at_collection_only_and_clamped(otlp):
    source = Source()
    run = RunTelemetry(run_id=new_run_id(), task_name="T", stage="UNKNOWN", progress=source)
    assert source.reads == 0  # starting the run does not read it; only a collection does
    source.progress = ProgressRatios(1.7, float("nan"))
    points = collect(otlp, RUN_PROGRESS)
    assert source.reads >= 1
    assert points[-1].value == 1.0
    assert otlp.collected.points(SUBTASK_PROGRESS) == []  # NaN is no value, not a point
    run.run_ended("FINISHED")


def test_run_end_records_duration_and_uncounts_the_active_run(otlp):
    source = Source()
    ok = RunTelemetry(run_id=new_run_id(), task_name="A", stage="DAILY", progress=source)
    failed = RunTelemetry(run_id=new_run_id(), task_name="B", stage="DAILY", progress=source)
    ok.run_ended("FINISHED")

    active = {p.attributes["cicd.pipeline.name"]: p for p in collect(otlp, RUN_ACTIVE)}
    assert active["A"].value == 0
    assert active["B"].value == 1
    assert active["B"].kind == "sum"
    assert active["B"].monotonic is False  # an up-down counter
    assert active["B"].attributes["cicd.pipeline.run.state"] == "executing"
    assert active["B"].unit == "{run}"

    failed.run_ended("FAILED", error=ValueError("bad row"))
    assert _config.shutdown(10)
    assert otlp.collected.wait_for(lambda: len(otlp.collected.points(RUN_DURATION)) >= 3)
    last = {}
    for p in otlp.collected.points(RUN_DURATION):
        last[p.attributes["cicd.pipeline.name"]] = p
    assert last["A"].count == 1
    assert last["A"].unit == "s"
    assert last["A"].attributes["cicd.pipeline.result"] == "success"
    assert "error.type" not in last["A"].attributes
    assert last["B"].attributes["cicd.pipeline.result"] == "failure"
    assert last["B"].attributes["error.type"] == "ValueError"
    assert last["B"].bounds == list(DURATION_BUCKETS)
    assert 0 <= last["B"].total < 60
    ended = [
        p for p in otlp.collected.points(RUN_ACTIVE) if p.attributes["cicd.pipeline.name"] == "B"
    ]
    assert ended[-1].value == 0


def test_an_ended_run_reports_its_final_progress_once_then_disappears(otlp):
    source = Source()
    run = RunTelemetry(run_id=new_run_id(), task_name="T", stage="UNKNOWN", progress=source)
    source.progress = ProgressRatios(1.0, None)
    run.run_ended("FINISHED")

    assert collect(otlp, RUN_PROGRESS)[-1].value == 1.0
    before = len(otlp.collected.points(RUN_PROGRESS))
    telemetry = _config.current()
    assert telemetry is not None
    assert telemetry.flush(10)
    assert otlp.collected.wait_for(lambda: len(otlp.collected.metric_requests) >= 2)
    assert len(otlp.collected.points(RUN_PROGRESS)) == before
    assert otlp.collected.points(MEMORY_USAGE) == []


def test_metric_attributes_never_carry_run_ids(otlp):
    source = Source()
    run_id = new_run_id()
    run = RunTelemetry(run_id=run_id, task_name="T", stage="UNKNOWN", progress=source)
    run.subtask_started(1, "step")
    run.run_ended("FINISHED")
    assert _config.shutdown(10)
    assert otlp.collected.wait_for(lambda: otlp.collected.points(RUN_DURATION))
    for point in otlp.collected.points():
        assert run_id not in point.attributes.values()
        assert set(point.attributes) <= {
            "cicd.pipeline.name",
            "cicd.pipeline.run.state",
            "cicd.pipeline.result",
            "error.type",
            "pipetrack.stage",
        }
