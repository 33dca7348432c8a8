"""The span tree a run sends over OTLP, as a real receiver decodes it (both protocols)."""

from __future__ import annotations

import pytest

from tests.telemetry_support import (
    PROTOCOLS,
    by_name,
    flush_and_collect,
    new_run_id,
    pointed_receiver,
)
from tracker._telemetry import RunTelemetry, _config
from tracker._telemetry._run import ProgressRatios
from tracker._telemetry._spans import MESSAGE_EVENT, RunSpans

SERVER, INTERNAL = 2, 1  # OTLP Span.SpanKind
STATUS_UNSET, STATUS_ERROR = 0, 2


@pytest.fixture(params=PROTOCOLS)
def otlp(request, monkeypatch):
    with pointed_receiver(monkeypatch, request.param) as receiver:
        yield receiver


def start(task="DAILY_LOAD", stage="DAILY", **kw):
    return RunTelemetry(
        run_id=new_run_id(),
        task_name=task,
        stage=stage,
        progress=lambda: ProgressRatios(0.5, 0.5),
        task_type="python",
        **kw,
    )


def test_nested_subtasks_export_a_span_tree_with_cicd_attributes(otlp):
    run = start(total_subtasks=2)
    run.subtask_started(1, "download", items_total=10)
    run.subtask_started(2, "file a", parent_index=1)
    run.subtask_ended(2, "COMPLETED", percent=100.0)
    run.subtask_ended(1, "COMPLETED", items_complete=10, items_total=10, percent=100.0)
    run.subtask_started(3, "publish")
    run.subtask_ended(3, "COMPLETED")
    run.run_ended("FINISHED", overall_percent=100.0)

    spans = by_name(flush_and_collect(otlp, 4))
    root, download, file_a, publish = (
        spans[n] for n in ("DAILY_LOAD", "download", "file a", "publish")
    )
    assert root.parent_span_id == ""
    assert root.kind == SERVER
    assert download.parent_span_id == root.span_id
    assert file_a.parent_span_id == download.span_id
    assert publish.parent_span_id == root.span_id
    assert {s.trace_id for s in spans.values()} == {run.trace_id}
    assert download.kind == INTERNAL

    assert root.attributes["cicd.pipeline.name"] == "DAILY_LOAD"
    assert root.attributes["cicd.pipeline.run.id"] == run.run_id
    assert root.attributes["cicd.pipeline.result"] == "success"
    assert root.attributes["pipetrack.stage"] == "DAILY"
    assert root.attributes["pipetrack.total_subtasks"] == 2
    assert root.attributes["pipetrack.overall_percent_complete"] == 100.0
    assert root.status_code == STATUS_UNSET  # OK is for applications to set, not libraries
    assert "error.type" not in root.attributes

    assert download.attributes["cicd.pipeline.task.name"] == "download"
    assert download.attributes["cicd.pipeline.task.run.id"] == f"{run.run_id}/1"
    assert download.attributes["cicd.pipeline.task.run.result"] == "success"
    assert download.attributes["pipetrack.items.total"] == 10
    assert download.attributes["pipetrack.items.complete"] == 10
    assert file_a.attributes["pipetrack.subtask.parent_index"] == 1

    assert root.resource["service.name"] == "pipetrack"
    assert root.resource["process.pid"] > 0
    assert root.resource["host.name"]
    assert len(run.trace_id) == 32
    assert run.trace_id == run.trace_id.lower()
    assert set(otlp.collected.transports) == {"grpc" if otlp.protocol == "grpc" else "http"}


def test_failure_sets_error_status_and_records_the_exception(otlp):
    run = start()
    run.subtask_started(1, "transform")
    try:
        raise KeyError("missing column")
    except KeyError as exc:
        error = exc
    run.subtask_ended(1, "FAILED", error=error)
    run.run_ended("FAILED", error=error)

    spans = by_name(flush_and_collect(otlp, 2))
    for span in (spans["transform"], spans["DAILY_LOAD"]):
        assert span.status_code == STATUS_ERROR
        assert "missing column" in span.status_message
        assert span.attributes["error.type"] == "KeyError"
        (exception,) = [e for e in span.events if e[0] == "exception"]
        assert exception[2]["exception.type"] == "KeyError"
        assert "raise KeyError" in exception[2]["exception.stacktrace"]
    assert spans["transform"].attributes["cicd.pipeline.task.run.result"] == "failure"
    assert spans["DAILY_LOAD"].attributes["cicd.pipeline.result"] == "failure"


def test_error_text_reaches_the_trace_backend_with_secrets_masked(otlp):
    secret = "Sup3rS3cret-span"
    run = start()
    run.subtask_started(1, "connect")
    try:
        raise ConnectionError(f"no postgresql://etl:{secret}@db/x")
    except ConnectionError as exc:
        error = exc
    run.subtask_ended(1, "FAILED", error=error)
    run.run_ended("FAILED", error=error, message=f"failed: password={secret}")
    spans = by_name(flush_and_collect(otlp, 2))
    for span in spans.values():
        (exception,) = [e for e in span.events if e[0] == "exception"]
        assert "etl:****@db" in exception[2]["exception.message"]
        texts = [span.status_message, *(str(v) for v in exception[2].values())]
        assert not [text for text in texts if secret in text], texts
    assert spans["DAILY_LOAD"].status_message == "failed: password=****"


def test_failure_of_a_wrapped_command_is_typed_by_its_exit_code(otlp):
    run = start()
    run.run_ended("FAILED", exit_code=3, message="command exited with 3")

    (root,) = flush_and_collect(otlp, 1)
    assert root.attributes["error.type"] == "exit_code"
    assert root.attributes["pipetrack.exit_code"] == 3
    assert root.status_message == "command exited with 3"


def test_cancellation_is_marked_and_closes_open_subtasks(otlp):
    run = start()
    run.subtask_started(1, "outer")
    run.subtask_started(2, "inner", parent_index=1)
    run.run_ended("CANCELLED", message="SIGTERM")

    spans = by_name(flush_and_collect(otlp, 3))
    root = spans["DAILY_LOAD"]
    assert root.attributes["cicd.pipeline.result"] == "cancellation"
    assert root.attributes["pipetrack.status"] == "CANCELLED"
    assert root.status_code == STATUS_ERROR
    assert root.status_message == "cancelled: SIGTERM"
    assert "error.type" not in root.attributes
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    for name in ("outer", "inner"):
        assert spans[name].attributes["cicd.pipeline.task.run.result"] == "cancellation"
        assert spans[name].end_ns <= root.end_ns


def test_a_subtask_without_a_parent_is_a_child_of_the_run(otlp):
    run = start()
    run.subtask_started(1, "first")
    run.subtask_started(2, "second, on another thread")
    run.subtask_ended(2, "COMPLETED")
    run.subtask_ended(1, "COMPLETED")
    run.run_ended("FINISHED")

    spans = by_name(flush_and_collect(otlp, 3))
    root = spans["DAILY_LOAD"]
    assert spans["first"].parent_span_id == root.span_id
    assert spans["second, on another thread"].parent_span_id == root.span_id


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_messages_become_events_at_most_once_a_second_keeping_the_last(otlp):
    telemetry = _config.current()
    assert telemetry is not None
    assert telemetry.tracer is not None
    clock = FakeClock()
    spans = RunSpans(
        telemetry.tracer, run_id=new_run_id(), task_name="T", stage="UNKNOWN", clock=clock
    )
    spans.subtask_started(1, "loop")
    for i in range(50):  # 50 messages within 0.49 s: only the first is written at once
        spans.message(f"row {i}", index=1, percent=float(i))
        clock.now += 0.01
    clock.now += 1.0
    spans.message("row 50", index=1, percent=50.0)  # a second later: written
    spans.message("row 51", index=1, percent=51.0)  # held back...
    spans.subtask_ended(1, "COMPLETED")  # ...and written when the subtask ends
    spans.message("after the subtask", percent=None)  # the run span's own event
    spans.run_ended("FINISHED")

    named = by_name(flush_and_collect(otlp, 2))
    events = [e for e in named["loop"].events if e[0] == MESSAGE_EVENT]
    assert [e[2]["message"] for e in events] == ["row 0", "row 50", "row 51"]
    assert events[2][2]["pipetrack.percent_complete"] == 51.0
    assert events[1][1] <= events[2][1]  # the held-back event keeps its own time
    assert named["loop"].attributes["pipetrack.messages.held_back"] == 49
    assert [e[2]["message"] for e in named["T"].events] == ["after the subtask"]


def test_service_name_and_resource_attributes_come_from_the_standard_variables(monkeypatch):
    with pointed_receiver(monkeypatch, "http/protobuf") as receiver:
        monkeypatch.setenv("OTEL_SERVICE_NAME", "nightly-etl")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
        run = start()
        run.run_ended("FINISHED")
        (root,) = flush_and_collect(receiver, 1)
    assert root.resource["service.name"] == "nightly-etl"
    assert root.resource["deployment.environment"] == "prod"
    assert root.resource["process.pid"] > 0


def test_a_span_whose_run_ended_ignores_late_calls(otlp):
    run = start()
    run.run_ended("FINISHED")
    run.subtask_started(1, "late")
    run.message("late")
    run.run_ended("FAILED")

    (root,) = flush_and_collect(otlp, 1)
    assert root.attributes["cicd.pipeline.result"] == "success"
    assert root.events == []


def test_headers_from_the_standard_variable_reach_the_collector(otlp, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20t0k")
    run = start()
    run.run_ended("FINISHED")
    flush_and_collect(otlp, 1)
    assert otlp.collected.headers[0]["x-tenant"] == "acme"
    assert otlp.collected.headers[0]["authorization"] == "Bearer t0k"
