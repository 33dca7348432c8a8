"""Sustained coalesced writes: the writer path's rate against the batched-update ceiling.

One process tracks N simulated runs (default 1,000), each inside one subtask: one
Tracker, one writer thread. The main thread advances every run once and flushes (the writer
writes every run in one cycle, and the flush returns once it has), and again, so that the
writer cycles back to back and each cycle finds every run changed. A written run is a
snapshot: its status row and its subtask row, written under a new ``seq``. Measured, in the
same run, on the same database:

  writer   snapshots per second the writer path commits (model -> snapshot -> statements
           with one binary array parameter per column, over psycopg in pipeline mode: each
           batch sent while the server applies the one before), over a window that starts
           after every run's first write; afterwards every run's rows are checked against the
           model (seq and item counts), and the table's ``seq`` values against the writer's own
           count (nothing spooled, lost or refused)
  ceiling  the same N status rows and N subtask rows rewritten (a new version of each row,
           as each snapshot makes), every column, by the database alone: per transaction, one
           ``UPDATE ... FROM`` per table over a batch encoded before the clock starts (no
           model, no encoding). The faster of two forms:
           ``json_populate_recordset`` over one JSON parameter, and ``COPY`` into a temporary
           table followed by ``UPDATE ... FROM`` it
  ratio    writer / ceiling (the issue's target: >= 65 %)

Writer and ceiling windows alternate (writer, ceiling, writer, ...), so that autovacuum and the
machine's load land on both. The rates are the medians over the windows; the ratio is the median
over the pairs (a writer window and the ceiling window after it) of writer / ceiling, because a
shared machine's speed drifts between windows more than between the two halves of a pair, and
its range over the pairs is printed too.

    .venv/bin/python bench/bench_writes.py                   # 1,000 runs (a few minutes)
    .venv/bin/python bench/bench_writes.py --runs 1000,10000 --window 3
    .venv/bin/python bench/bench_writes.py --dsn postgresql://...   # a migrated database

Without --dsn a temporary embedded PostgreSQL is started (and stopped) in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import psycopg.sql
from bench_support import bench_database

import tracker
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget
from tracker._model.columns import STATUS_NAMES as STATUS_COLUMNS
from tracker._model.columns import SUBTASK_NAMES as SUBTASK_COLUMNS
from tracker._record.writer import Writer
from tracker._sampling import SampleCadence

_STATUS_KEY = ("run_id",)
_SUBTASK_KEY = ("run_id", "subtask_index")
_NEVER_SET = ("run_id", "task_name", "execution_start")


def _update_from(table: str, source: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """``UPDATE table`` setting every column but ``seq`` from the rows of ``source``.

    ``seq`` stays: the writer's next snapshots must still be newer than the rows, or its
    guarded updates would match nothing and measure no-ops.
    """
    sets = ", ".join(f"{c} = v.{c}" for c in columns if c not in (*key, *_NEVER_SET, "seq"))
    match = " AND ".join(f"t.{c} = v.{c}" for c in key)
    return f"UPDATE {table} AS t SET {sets} FROM {source} AS v WHERE {match}"


class Ceiling:
    """The database rewriting the bench's rows in batches, with no client-side work."""

    def __init__(self, dsn: str, task_prefix: str) -> None:
        self.conn = connect(DatabaseTarget(conninfo=dsn, source="bench"), autocommit=False)
        run_ids = "SELECT run_id FROM pipeline_status WHERE task_name LIKE %s"
        pattern = task_prefix + "%"
        self.status_json = self._one(
            "SELECT json_agg(p)::text FROM pipeline_status AS p WHERE task_name LIKE %s", pattern
        )
        self.subtask_json = self._one(
            f"SELECT json_agg(s)::text FROM pipeline_subtask AS s WHERE run_id IN ({run_ids})",
            pattern,
        )
        self.status_copy = self._copy_out(
            f"SELECT {', '.join(STATUS_COLUMNS)} FROM pipeline_status WHERE task_name LIKE %s",
            pattern,
        )
        self.subtask_copy = self._copy_out(
            f"SELECT {', '.join(SUBTASK_COLUMNS)} FROM pipeline_subtask "
            f"WHERE run_id IN ({run_ids})",
            pattern,
        )
        with self.conn.cursor() as cur:
            for table, columns in (
                ("pipeline_status", STATUS_COLUMNS),
                ("pipeline_subtask", SUBTASK_COLUMNS),
            ):
                # The columns and their types, no constraints: a staging table.
                cur.execute(
                    f"CREATE TEMP TABLE batch_{table} ON COMMIT DELETE ROWS AS "
                    f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA"
                )
        self.conn.commit()

    def _one(self, query: str, pattern: str) -> str:
        row = self.conn.execute(query, (pattern,)).fetchone()
        self.conn.commit()
        if row is None or row[0] is None:
            raise RuntimeError("no rows to rewrite")
        return str(row[0])

    def _copy_out(self, query: str, pattern: str) -> bytes:
        literal = psycopg.sql.Literal(pattern).as_string(self.conn)
        with self.conn.cursor() as cur:
            statement = query.replace("%s", literal)
            with cur.copy(f"COPY ({statement}) TO STDOUT") as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
        self.conn.commit()
        return data

    def json_batch(self) -> None:
        with self.conn.cursor() as cur:
            for table, columns, key, payload in (
                ("pipeline_status", STATUS_COLUMNS, _STATUS_KEY, self.status_json),
                ("pipeline_subtask", SUBTASK_COLUMNS, _SUBTASK_KEY, self.subtask_json),
            ):
                source = f"json_populate_recordset(NULL::{table}, %s::json)"
                cur.execute(_update_from(table, source, columns, key), (payload,))
        self.conn.commit()

    def copy_batch(self) -> None:
        with self.conn.cursor() as cur:
            for table, columns, key, payload in (
                ("pipeline_status", STATUS_COLUMNS, _STATUS_KEY, self.status_copy),
                ("pipeline_subtask", SUBTASK_COLUMNS, _SUBTASK_KEY, self.subtask_copy),
            ):
                with cur.copy(f"COPY batch_{table} ({', '.join(columns)}) FROM STDIN") as copy:
                    copy.write(payload)
                cur.execute(_update_from(table, f"batch_{table}", columns, key))
        self.conn.commit()

    def rate(self, runs: int, window: float) -> float:
        """Rows rewritten per second (status + subtask counted as one, like a snapshot)."""
        best = 0.0
        for batch in (self.json_batch, self.copy_batch):
            batches, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < window / 2:
                batch()
                batches += 1
            best = max(best, batches * runs / elapsed)
        return best

    def close(self) -> None:
        self.conn.close()


class Fleet:
    """N runs tracked by one process, each inside a subtask, all changed every cycle."""

    def __init__(self, dsn: str, runs: int, spool: Path, task_prefix: str) -> None:
        # No heartbeat: it would rewrite every run during a ceiling window, competing with it
        # for the rows (and the CPU) the ceiling measures.
        self.tracker = tracker.Tracker(
            dsn=dsn, lifecycle=False, console=False, spool_dir=spool, heartbeat_interval=3600
        )
        # Nor a sample row every 10 s (the default cadence), for the same reason: every run
        # kept one at once, and rewrote its status row with it, while the ceiling held its rows
        # (a deadlock between the two). The runs' first and last samples are still taken.
        self.tracker._writer = Writer(
            self.tracker.settings, cadence=SampleCadence(((0.0, 24 * 3600.0),))
        )
        # Plain lists, not an ExitStack: its closures would add a third to the objects the
        # garbage collector walks, which are the runs' own.
        self.runs = [
            self.tracker.run(f"{task_prefix}{i:05d}", total_subtasks=1, stage="DAILY")
            for i in range(runs)
        ]
        self.subtasks = [run.subtask("work", items_total=10**12) for run in self.runs]
        self.writer = self.tracker.writer
        self.prefix = task_prefix
        self.sweep_and_wait()  # every run's first write (INSERT) happens before the window

    def sweep_and_wait(self) -> None:
        """Change every run, then have the writer write them (one cycle) and wait for it."""
        for st in self.subtasks:
            st.advance()
        if not self.tracker.flush(120):
            raise RuntimeError("the writer stopped writing")

    def rate(self, window: float) -> float:
        written, started = self.writer.written, time.perf_counter()
        while time.perf_counter() - started < window:
            self.sweep_and_wait()
        return (self.writer.written - written) / (time.perf_counter() - started)

    def mismatches(self, dsn: str) -> int:
        """Runs whose rows, after a flush, differ from the model in seq or item count."""
        if not self.tracker.flush(120):
            raise RuntimeError("the writer stopped writing")
        with psycopg.connect(dsn, autocommit=True) as conn:
            stored = {
                str(run_id): (seq, status_count, subtask_count)
                for run_id, seq, status_count, subtask_count in conn.execute(
                    "SELECT p.run_id, p.seq, p.subtask_items_complete, s.items_complete"
                    " FROM pipetrack.pipeline_status AS p JOIN pipetrack.pipeline_subtask AS s"
                    " USING (run_id) WHERE p.task_name LIKE %s",
                    (self.prefix + "%",),
                )
            }
        return sum(
            stored.get(st._run.run_id) != (st._run.seq, st.items_complete, st.items_complete)
            for st in self.subtasks
        )

    def close(self) -> None:
        for subtask, run in zip(self.subtasks, self.runs, strict=True):
            subtask.close()
            run.finish()
        self.tracker.shutdown(60)


def measure(dsn: str, runs: int, window: float, repeat: int, scratch: Path) -> dict[str, float]:
    prefix = f"BENCH_{uuid.uuid4().hex[:6]}_"
    fleet = Fleet(dsn, runs, scratch / f"spool-{runs}", prefix)
    ceiling: Ceiling | None = None
    mismatched = -1
    writer_rates: list[float] = []
    ceiling_rates: list[float] = []
    try:
        for _ in range(repeat):
            writer_rates.append(fleet.rate(window))
            if ceiling is None:
                ceiling = Ceiling(dsn, prefix)
            ceiling_rates.append(ceiling.rate(runs, window))
        # The rows hold what the model holds. (A sweep
        # first: the ceiling rewrote the rows with the item counts it copied at its start.)
        fleet.sweep_and_wait()
        mismatched = fleet.mismatches(dsn)
    finally:
        if ceiling is not None:
            ceiling.close()
        fleet.close()
    writer = fleet.writer
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sum(seq), count(*) FILTER (WHERE execution_status = 'FINISHED')"
            " FROM pipetrack.pipeline_status WHERE task_name LIKE %s",
            (prefix + "%",),
        ).fetchone()
    seq_total, finished = (int(row[0]), int(row[1])) if row and row[0] is not None else (0, 0)
    pairs = [w / c for w, c in zip(writer_rates, ceiling_rates, strict=True)]
    writer_median = statistics.median(writer_rates)
    ceiling_median = statistics.median(ceiling_rates)
    return {
        "writer": writer_median,
        "ceiling": ceiling_median,
        "ratio": statistics.median(pairs),
        "ratio_low": min(pairs),
        "ratio_high": max(pairs),
        "writer_best": max(writer_rates),
        "ceiling_best": max(ceiling_rates),
        "spooled": writer.spooled,
        "rejected": writer.rejected,
        # Every snapshot took its run's seq one up: the rows' seqs add up to what was written.
        "unaccounted": writer.written - seq_total,
        "unfinished": runs - finished,
        "mismatched": mismatched,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a migrated database (default: temporary embedded server)")
    parser.add_argument("--runs", default="1000", help="comma-separated run counts")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="windows per side (median)")
    args = parser.parse_args()
    sizes = [int(part) for part in args.runs.split(",")]
    print(
        f"pipetrack coalesced-writes benchmark, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, {args.repeat} x {args.window:g} s windows per side"
    )
    print(
        f"{'runs':>7} {'writer/s':>10} {'ceiling/s':>10} {'ratio':>7} {'range':>9}"
        f" {'best w/s':>10} {'best c/s':>10}  checks"
    )
    with bench_database(args.dsn) as dsn, tempfile.TemporaryDirectory() as scratch:
        for runs in sizes:
            r = measure(dsn, runs, args.window, args.repeat, Path(scratch))
            problems = (r["spooled"], r["rejected"], r["unaccounted"], r["unfinished"])
            checks = (
                "ok"
                if problems == (0, 0, 0, 0) and r["mismatched"] == 0
                else f"spooled {r['spooled']:.0f}, rejected {r['rejected']:.0f}, "
                f"seq off by {r['unaccounted']:.0f}, {r['unfinished']:.0f} not FINISHED, "
                f"{r['mismatched']:.0f} rows unlike the model"
            )
            print(
                f"{runs:>7} {r['writer']:>10,.0f} {r['ceiling']:>10,.0f} {r['ratio']:>6.0%}"
                f" {r['ratio_low']:>4.0%}-{r['ratio_high']:<4.0%}"
                f" {r['writer_best']:>10,.0f} {r['ceiling_best']:>10,.0f}"
                f"  {checks}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
