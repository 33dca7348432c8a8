"""The resource and work-count instruments a run sends over OTLP, under the semantic
conventions' names: from a resource source, and end to end from a tracked run's samples."""

from __future__ import annotations

import os

import pytest

from tests.telemetry_support import PROTOCOLS, new_run_id, pointed_receiver
from tracker._runtime.trackers import Tracker
from tracker._telemetry import RunTelemetry, _config
from tracker._telemetry._metrics import (
    CONNECTIONS,
    CPU_TIME,
    DISK_IO,
    NETWORK_IO,
    OPEN_FDS,
    RUN_WORK,
)
from tracker._telemetry._run import ProgressRatios, Resources

MIB = 1 << 20


@pytest.fixture(params=PROTOCOLS)
def otlp(request, monkeypatch):
    with pointed_receiver(monkeypatch, request.param) as receiver:
        yield receiver


def flushed(receiver, metric):
    telemetry = _config.current()
    assert telemetry is not None
    assert telemetry.flush(10)
    assert receiver.collected.wait_for(lambda: receiver.collected.points(metric))
    return receiver.collected.points(metric)


def latest(receiver, metric):
    """The last point of each attribute set of ``metric``."""
    points = {}
    for point in flushed(receiver, metric):
        points[tuple(sorted(point.attributes.items()))] = point
    return {dict(key).get(_direction(metric), ""): p for key, p in points.items()}


def _direction(metric):
    return {
        DISK_IO: "disk.io.direction",
        NETWORK_IO: "network.io.direction",
        CONNECTIONS: "pipetrack.connection.kind",
        RUN_WORK: "pipetrack.count.name",
    }.get(metric, "")


FIGURES = Resources(
    cpu_seconds=1.5,
    disk_read_bytes=4096,
    disk_write_bytes=64 * MIB,
    tcp_received_bytes=20 * MIB,
    tcp_sent_bytes=300,
    open_fds=12,
    db_connections=3,
    other_connections=1,
    counts=(("rows_written", 1500), ("files", 3)),
)


def started(task, figures):
    return RunTelemetry(
        run_id=new_run_id(),
        task_name=task,
        stage="DAILY",
        progress=lambda: ProgressRatios(0.5, None),
        resources=lambda: figures,
    )


def test_each_instrument_has_its_convention_name_unit_kind_and_attributes(otlp):
    run = started("DAILY_IO", FIGURES)
    task = {"cicd.pipeline.name": "DAILY_IO", "pipetrack.stage": "DAILY"}

    (cpu,) = latest(otlp, CPU_TIME).values()
    assert (cpu.value, cpu.unit, cpu.kind, cpu.monotonic) == (1.5, "s", "sum", True)
    assert cpu.attributes == task
    disk = latest(otlp, DISK_IO)
    assert (disk["read"].value, disk["write"].value) == (4096, 64 * MIB)
    assert (disk["write"].unit, disk["write"].monotonic) == ("By", True)
    assert disk["write"].attributes == {**task, "disk.io.direction": "write"}
    network = latest(otlp, NETWORK_IO)
    assert (network["receive"].value, network["transmit"].value) == (20 * MIB, 300)
    (fds,) = latest(otlp, OPEN_FDS).values()
    assert (fds.value, fds.unit, fds.kind, fds.monotonic) == (12, "{file_descriptor}", "sum", False)
    connections = latest(otlp, CONNECTIONS)
    assert (connections["database"].value, connections["other"].value) == (3, 1)
    assert connections["database"].unit == "{connection}"
    work = latest(otlp, RUN_WORK)
    assert (work["rows_written"].value, work["files"].value) == (1500, 3)
    assert work["rows_written"].monotonic is True
    assert work["rows_written"].attributes == {**task, "pipetrack.count.name": "rows_written"}
    run.run_ended("FINISHED")


def test_runs_of_one_task_are_summed_and_nothing_unmeasured_is_sent(otlp):
    first = started("DAILY_TWICE", FIGURES)
    second = started("DAILY_TWICE", FIGURES._replace(disk_write_bytes=MIB, counts=()))
    bare = started("DAILY_BARE", Resources())
    assert latest(otlp, DISK_IO)["write"].value == 65 * MIB
    assert latest(otlp, RUN_WORK)["rows_written"].value == 1500
    assert latest(otlp, CONNECTIONS)["database"].value == 6
    named = {p.attributes["cicd.pipeline.name"] for p in otlp.collected.points(CPU_TIME)}
    assert named == {"DAILY_TWICE"}  # the bare run has no figures: no point, not a zero
    for run in (first, second, bare):
        run.run_ended("FINISHED")


def test_an_ended_run_sends_its_final_totals_once_and_its_open_files_no_more(otlp):
    figures = {"now": FIGURES}
    run = RunTelemetry(
        run_id=new_run_id(),
        task_name="DAILY_END",
        stage="DAILY",
        progress=lambda: ProgressRatios(1.0, None),
        resources=lambda: figures["now"],
    )
    figures["now"] = FIGURES._replace(disk_write_bytes=80 * MIB, counts=(("rows_written", 2000),))
    run.run_ended("FINISHED")
    assert latest(otlp, DISK_IO)["write"].value == 80 * MIB
    assert latest(otlp, RUN_WORK)["rows_written"].value == 2000
    assert otlp.collected.points(OPEN_FDS) == []
    before = len(otlp.collected.points(DISK_IO))
    telemetry = _config.current()
    assert telemetry is not None
    assert telemetry.flush(10)
    assert len(otlp.collected.points(DISK_IO)) == before  # once, then the run is forgotten


def test_a_resource_source_that_fails_costs_its_points_only(otlp):
    def broken():
        raise RuntimeError("no figures")

    run = RunTelemetry(
        run_id=new_run_id(),
        task_name="DAILY_BROKEN",
        stage="DAILY",
        progress=lambda: ProgressRatios(0.25, None),
        resources=broken,
    )
    assert flushed(otlp, "pipetrack.run.progress")[-1].value == 0.25
    assert otlp.collected.points(DISK_IO) == []
    run.run_ended("FINISHED")


def test_a_tracked_run_sends_its_measured_writes_and_its_counts(monkeypatch, db_dsn, tmp_path):
    with pointed_receiver(monkeypatch, "grpc") as receiver:
        tracked = Tracker(dsn=db_dsn, lifecycle=False, console=False, spool_dir=tmp_path / "s")
        try:
            with tracked.run("DAILY_OTEL_IO") as run:
                with run.subtask("write") as step:
                    with open(tmp_path / "data", "wb") as file:
                        for _ in range(16):
                            file.write(b"\x42" * MIB)
                        file.flush()
                        os.fsync(file.fileno())
                    step.count("rows_written", 16)
                assert tracked.flush(10)  # the writer has measured the step's end
                disk = latest(receiver, DISK_IO)
                assert disk["write"].value >= 16 * MIB
                assert latest(receiver, RUN_WORK)["rows_written"].value == 16
                assert latest(receiver, OPEN_FDS)[""].value > 0
                assert latest(receiver, CPU_TIME)[""].value > 0
        finally:
            assert tracked.shutdown(10)
