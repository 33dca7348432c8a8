"""When telemetry is on, and through what: the standard variables, pipetrack's switch, and the
application's own providers."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from tracker._telemetry import _config

ENDPOINT = "http://127.0.0.1:4318"


def run_python(code: str, env_extra: dict[str, str] | None = None, timeout: float = 60):
    import os

    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, _config.OFF),
        (
            {"OTEL_SERVICE_NAME": "x", "TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
            _config.OFF,
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, _config.Plan("otlp", "otlp")),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT}, _config.Plan("otlp", "otlp")),
        ({"PIPETRACK_TELEMETRY": "on"}, _config.Plan("otlp", "otlp")),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, _config.Plan("otlp", None)),
        ({"PIPETRACK_TELEMETRY": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, _config.OFF),
        ({"OTEL_SDK_DISABLED": "true", "PIPETRACK_TELEMETRY": "on"}, _config.OFF),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_METRICS_EXPORTER": "none"},
            _config.Plan("otlp", None),
        ),
        ({"PIPETRACK_TELEMETRY": "auto"}, _config.OFF),
    ],
)
def test_plan_follows_the_standard_variables_and_the_switch(env, expected):
    assert _config.plan(env) == expected


def test_a_bad_switch_value_is_logged_and_treated_as_auto(caplog):
    with caplog.at_level(logging.WARNING, logger="tracker"):
        assert _config.plan({"PIPETRACK_TELEMETRY": "maybe"}) == _config.OFF
    assert "PIPETRACK_TELEMETRY" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            "http/protobuf",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/protobuf"),
    ],
)
def test_protocol_is_chosen_per_signal_with_the_specification_default(env, expected):
    assert _config.protocol("traces", env) == expected


def test_exit_timeout_falls_back_on_a_bad_value(caplog):
    assert _config.exit_timeout({}) == _config.DEFAULT_EXIT_TIMEOUT
    assert _config.exit_timeout({"PIPETRACK_TELEMETRY_EXIT_TIMEOUT": "0.5"}) == 0.5
    with caplog.at_level(logging.WARNING, logger="tracker"):
        assert _config.exit_timeout({"PIPETRACK_TELEMETRY_EXIT_TIMEOUT": "nan"}) == 2.0
    assert "PIPETRACK_TELEMETRY_EXIT_TIMEOUT" in caplog.text


def test_importing_tracker_imports_no_opentelemetry():
    result = run_python(
        """
        import sys
        import tracker, tracker._telemetry
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "grpc", "google"))))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_an_application_provider_is_used_and_never_replaced():
    result = run_python(
        """
        import uuid
        from opentelemetry import trace, metrics
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        metrics.set_meter_provider(meter_provider)

        from tracker._telemetry import RunTelemetry, _config
        from tracker._telemetry._run import ProgressRatios
        assert _config.plan() == _config.Plan("application", "application"), _config.plan()
        with trace.get_tracer("app").start_as_current_span("app work"):
            run = RunTelemetry(run_id=str(uuid.uuid4()), task_name="T", stage="UNKNOWN",
                               progress=lambda: ProgressRatios(0.25, None))
            run.subtask_started(1, "step")
            run.subtask_ended(1, "COMPLETED")
            run.run_ended("FINISHED")
        assert trace.get_tracer_provider() is provider
        assert metrics.get_meter_provider() is meter_provider
        names = sorted(s.name for s in spans.get_finished_spans())
        assert names == ["T", "app work", "step"], names
        got = {m.name for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
        assert {"cicd.pipeline.run.duration", "cicd.pipeline.run.active"} <= got, got
        # pipetrack built no providers of its own, so it has nothing to flush at exit
        assert _config.current()._owned == []
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert result.stderr == ""
