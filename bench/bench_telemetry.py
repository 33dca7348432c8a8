"""What telemetry costs: the progress hot path with it on and off in one process, and the price of
a span per subtask and of a message event.

    .venv/bin/python bench/bench_telemetry.py [--items 1000000] [--subtasks 1500] [--rounds 5]

Telemetry exports over OTLP/gRPC to the test suite's real receiver, run in its own process on a
free localhost port (so export work happens as it would against a collector, and decoding it does
not count against pipetrack). The canonical record goes to the spool (the
DSN points at a closed port) so the database does not weigh on the figures. Off and on alternate
``--rounds`` times; the best round of each is reported.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracker._runtime.trackers import Tracker  # noqa: E402
from tracker._telemetry import _config  # noqa: E402
from tracker._telemetry._spans import RunSpans  # noqa: E402

RECEIVER = """
import sys
from tests.otlp_receiver import running_receiver
with running_receiver() as r:
    print(r.grpc_port, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    print(len(r.collected.spans()), flush=True)
"""


@contextmanager
def receiver_process() -> Iterator[tuple[str, list[int]]]:
    """The OTLP receiver in a child process: (gRPC endpoint, [spans it received, at the end])."""
    child = subprocess.Popen(
        [sys.executable, "-c", RECEIVER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    received: list[int] = []
    try:
        yield f"http://127.0.0.1:{child.stdout.readline().strip()}", received
    finally:
        child.stdin.close()
        received.append(int(child.stdout.readline() or 0))
        child.wait(30)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def telemetry(on: bool, endpoint: str) -> None:
    _config.shutdown(5)
    if on:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
    else:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)


def per_call_ns(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / calls


def hot_path(t: Tracker, items: int) -> tuple[float, float]:
    """ns per ``advance()`` and per item of ``run.progress()``."""
    with t.run("BENCH_HOT", total_subtasks=2) as run:
        with run.subtask("advance", items_total=items) as step:
            advance = step.advance

            def loop() -> None:
                for _ in range(items):
                    advance()

            advance_ns = per_call_ns(loop, items)

        def iterate() -> None:
            for _ in run.progress(range(items), "progress"):
                pass

        progress_ns = per_call_ns(iterate, items)
    return advance_ns, progress_ns


def subtasks(t: Tracker, count: int) -> float:
    """µs per subtask (enter + exit), spans included when telemetry is on."""
    with t.run("BENCH_SUBTASKS", total_subtasks=count) as run:

        def loop() -> None:
            for i in range(count):
                with run.subtask(f"step {i}"):
                    pass

        return per_call_ns(loop, count) / 1000


def messages(t: Tracker, count: int) -> float:
    """µs per ``run.message()`` inside one subtask (events rate-limited to 1/s)."""
    with t.run("BENCH_MESSAGES") as run, run.subtask("chatty"):
        return per_call_ns(lambda: [run.message(f"m {i}") for i in range(count)], count) / 1000


def raw_events(count: int) -> tuple[float, float]:
    """µs per message at the span level: every one an event, and rate-limited (held back)."""
    current = _config.current()
    assert current is not None
    assert current.tracer is not None
    out = []
    for interval in (0.0, 1.0):
        spans = RunSpans(
            current.tracer,
            run_id="bench",
            task_name="BENCH_EVENTS",
            stage="UNKNOWN",
            min_event_interval=interval,
        )
        spans.subtask_started(1, "s")

        # Span events are capped per span by the SDK (128 by default); a fresh subtask every
        # 100 messages keeps every call a real add_event.
        def loop(spans: RunSpans = spans) -> None:
            for i in range(count):
                if i and i % 100 == 0:
                    spans.subtask_ended(i // 100, "COMPLETED")
                    spans.subtask_started(i // 100 + 1, "s")
                spans.message("working", percent=50.0)

        out.append(per_call_ns(loop, count) / 1000)
        spans.run_ended("FINISHED")
    return out[0], out[1]


def bare_spans(count: int) -> float:
    """µs per span straight from the SDK's tracer (start + end, no attributes), for scale."""
    current = _config.current()
    assert current is not None
    assert current.tracer is not None
    tracer = current.tracer

    def loop() -> None:
        for _ in range(count):
            tracer.start_span("bare").end()

    cost = per_call_ns(loop, count) / 1000
    current.flush(30)
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    # Below the batch processor's default queue (2048 spans), so no span is dropped unmeasured.
    parser.add_argument("--subtasks", type=int, default=1_500)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data, receiver_process() as (endpoint, received):
        os.environ["PIPETRACK_DATA_DIR"] = data
        os.environ["PIPETRACK_CONSOLE"] = "0"
        os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "1000"
        t = Tracker(dsn=f"postgresql://127.0.0.1:{closed_port()}/none", lifecycle=False)
        best: dict[str, dict[str, float]] = {"off": {}, "on": {}}
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                telemetry(mode == "on", endpoint)
                advance_ns, progress_ns = hot_path(t, args.items)
                figures = {
                    "advance_ns": advance_ns,
                    "progress_ns": progress_ns,
                    "subtask_us": subtasks(t, args.subtasks),
                    "message_us": messages(t, args.messages),
                }
                for key, value in figures.items():
                    best[mode][key] = min(best[mode].get(key, value), value)
        telemetry(True, endpoint)
        event_us, held_us = raw_events(args.messages)
        bare_us = min(bare_spans(args.subtasks) for _ in range(args.rounds))
        _config.shutdown(10)
        t.shutdown(5)

    off, on = best["off"], best["on"]
    print(f"python {sys.version.split()[0]}, best of {args.rounds} rounds, OTLP/gRPC to localhost")
    print(f"{'':34}{'off':>10}{'on':>10}{'on/off':>8}")
    rows = [
        ("advance() per call, ns", "advance_ns"),
        ("progress() per item, ns", "progress_ns"),
        ("subtask enter+exit, us", "subtask_us"),
        ("run.message(), us", "message_us"),
    ]
    for label, key in rows:
        print(f"{label:34}{off[key]:10.1f}{on[key]:10.1f}{on[key] / off[key]:8.2f}")
    print(f"span per subtask (on - off), us:    {on['subtask_us'] - off['subtask_us']:.1f}")
    print(f"  of which the SDK's bare span, us:   {bare_us:.1f}")
    print(f"message event, written, us:         {event_us:.2f}")
    print(f"message event, rate-limited, us:    {held_us:.2f}")
    print(f"spans received by the OTLP receiver: {received[0]}")


if __name__ == "__main__":
    main()
