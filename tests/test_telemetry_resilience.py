"""Telemetry never gets in the way: off means no sockets, and a dead or silent collector neither
slows the pipeline nor raises."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.otlp_receiver import running_receiver
from tests.telemetry_support import (
    PROTOCOLS,
    black_hole_server,
    closed_port,
    slow_collector_env,
)

# A pipeline that counts every socket connection attempt made from Python (as the HTTP exporter
# makes them) and reports, at the very end of the process, those and what it imported.
PIPELINE = """
import atexit, logging, socket, sys, time, uuid
logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
attempts = []
_connect = socket.socket.connect
def counting_connect(self, address):
    attempts.append(address)
    return _connect(self, address)
socket.socket.connect = counting_connect
socket.socket.connect_ex = lambda self, address: attempts.append(address) or 111

def report():  # registered first, so it runs last: after pipetrack's exit flush
    print("connects", len(attempts))
    print("otel_modules", len([m for m in sys.modules if m.startswith(("opentelemetry", "grpc"))]))
atexit.register(report)

from tracker._telemetry import RunTelemetry
from tracker._telemetry._run import ProgressRatios

started = time.monotonic()
run = RunTelemetry(run_id=str(uuid.uuid4()), task_name="T", stage="UNKNOWN",
                   progress=lambda: ProgressRatios(0.5, None))
for i in range(1, 51):
    run.subtask_started(i, f"step {i}")
    run.message(f"working on {i}")
    run.subtask_ended(i, "COMPLETED")
run.run_ended("FINISHED")
print("pipeline_seconds", round(time.monotonic() - started, 3))
print("trace_id", run.trace_id)
"""


def run_pipeline(env_extra: dict[str, str], timeout: float = 30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PIPELINE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    values = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    return values, result.stderr


def test_with_nothing_configured_no_socket_is_opened_and_nothing_imported():
    values, stderr = run_pipeline({})
    assert values["connects"] == "0"
    assert values["otel_modules"] == "0"
    assert values["trace_id"] == "None"
    assert stderr == ""


def test_the_socket_count_sees_an_exporter_that_does_connect(monkeypatch):
    # The control for the test above: the same pipeline pointed at a receiver does connect.
    with running_receiver() as receiver:
        values, _ = run_pipeline(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            }
        )
        assert receiver.collected.wait_for(lambda: len(receiver.collected.spans()) == 51)
    assert int(values["connects"]) > 0
    assert int(values["otel_modules"]) > 0


def test_switched_off_wins_over_an_endpoint():
    values, stderr = run_pipeline(
        {"PIPETRACK_TELEMETRY": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert values["connects"] == "0"
    assert values["otel_modules"] == "0"
    assert stderr == ""


@pytest.fixture
def black_hole():
    with black_hole_server() as port:
        yield port


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_collector_that_is_down_costs_the_pipeline_nothing(protocol):
    # The subprocess timeout is the assertion: export waits are bounded by the exit timeout
    # (1 s), not the exporter's own (60 s).
    values, stderr = run_pipeline(slow_collector_env(closed_port(), protocol), timeout=30)
    assert len(values["trace_id"]) == 32
    assert "Traceback" not in stderr
    # Logged once, not once per batch or retry.
    assert stderr.count("did not accept data") <= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_collector_that_never_answers_costs_the_pipeline_nothing(black_hole, protocol):
    values, stderr = run_pipeline(slow_collector_env(black_hole, protocol), timeout=30)
    assert len(values["trace_id"]) == 32
    assert "Traceback" not in stderr
    assert stderr.count("did not accept data") <= 1


def test_spans_dropped_by_a_full_queue_are_counted_and_logged_once():
    with running_receiver() as receiver:
        _, stderr = run_pipeline(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
                "OTEL_BSP_MAX_QUEUE_SIZE": "4",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4",
                "OTEL_BSP_SCHEDULE_DELAY": "600000",
            }
        )
        received = len(receiver.collected.spans())
    lost = 51 - received
    assert lost > 0
    assert f"telemetry: {lost} of 51 span(s) and 0 metric export(s) were not delivered" in stderr
    assert stderr.count("Queue full") == 1
