"""The Task detail dashboard's "I/O and counts" row: disk and network throughput, connections,
each run's samples over time, what each subtask used, and the work the latest run counted."""

from __future__ import annotations

from _grafana import Board, by_name, prom, sql


def io_and_counts(b: Board) -> None:
    """Disk and network I/O, connections and work counts: now (Prometheus), and over the runs
    and subtasks of the time range (PostgreSQL samples, kept after the run ends)."""
    b.row("I/O and counts")
    b.add(
        "timeseries",
        "Disk and network throughput",
        "Bytes per second the task's running runs read and wrote on storage, and received and "
        "sent over TCP, between their last two samples (sum).",
        [
            prom('max(pipetrack_task_disk_read_bytes_per_second{task="$task"})', "disk read"),
            prom('max(pipetrack_task_disk_write_bytes_per_second{task="$task"})', "disk write"),
            prom('max(pipetrack_task_tcp_receive_bytes_per_second{task="$task"})', "tcp received"),
            prom('max(pipetrack_task_tcp_send_bytes_per_second{task="$task"})', "tcp sent"),
        ],
        unit="Bps",
        size=(12, 7),
    )
    b.add(
        "timeseries",
        "Connections and open files",
        "Database connections (well-known database ports, the configured DSN, PostgreSQL and "
        "MySQL sockets) and open file descriptors of the task's running runs (sum).",
        [
            prom('max(pipetrack_task_db_connections{task="$task"})', "database connections"),
            prom('max(pipetrack_task_open_file_descriptors{task="$task"})', "open files"),
        ],
        unit="short",
        size=(12, 7),
    )
    b.add(
        "timeseries",
        "I/O of each run over time (PostgreSQL)",
        "Disk and TCP bytes per second of the task's runs in the time range, from their "
        "resource samples (every 10 s for a run's first hour, then every 60 s): a download that "
        "stalled shows as a flat zero here long after the run ended.",
        [
            sql(
                """
                WITH runs AS (
                    SELECT run_id FROM pipetrack.pipeline_runs
                    WHERE task_name = '$task' AND $__timeFilter(execution_start)
                ), samples AS (
                    SELECT s.*, EXTRACT(EPOCH FROM s.sampled_at - lag(s.sampled_at)
                                OVER w) AS span,
                           s.disk_read_bytes - lag(s.disk_read_bytes) OVER w AS disk_read,
                           s.disk_write_bytes - lag(s.disk_write_bytes) OVER w AS disk_write,
                           s.tcp_received_bytes - lag(s.tcp_received_bytes) OVER w AS received,
                           s.tcp_sent_bytes - lag(s.tcp_sent_bytes) OVER w AS sent
                    FROM pipetrack.pipeline_run_samples s JOIN runs USING (run_id)
                    WINDOW w AS (PARTITION BY s.run_id ORDER BY s.sampled_at)
                )
                SELECT sampled_at AS time,
                       GREATEST(disk_read, 0) / span AS "disk read",
                       GREATEST(disk_write, 0) / span AS "disk write",
                       GREATEST(received, 0) / span AS "tcp received",
                       GREATEST(sent, 0) / span AS "tcp sent"
                FROM samples
                WHERE span > 0
                ORDER BY 1
                """,
                time_series=True,
            )
        ],
        unit="Bps",
        size=(12, 8),
    )
    b.add(
        "timeseries",
        "Memory and CPU of each run over time (PostgreSQL)",
        "Resident memory and CPU of the task's runs in the time range, from their resource "
        "samples: where a run peaked, and in which subtask (see the table below).",
        [
            sql(
                """
                SELECT s.sampled_at AS time, s.rss_bytes AS memory,
                       s.cpu_percent / 100 AS cpu
                FROM pipetrack.pipeline_run_samples s
                JOIN pipetrack.pipeline_runs r USING (run_id)
                WHERE r.task_name = '$task' AND $__timeFilter(r.execution_start)
                ORDER BY 1
                """,
                time_series=True,
            )
        ],
        unit="bytes",
        size=(12, 8),
        overrides=[by_name("cpu", unit="percentunit")],
    )
    b.add(
        "table",
        "What each subtask of the latest run used (PostgreSQL)",
        "Per subtask of the task's latest run: CPU time, peak memory, disk and TCP bytes and "
        "work counts while it was open, the heaviest first: the bottleneck by resource.",
        [
            sql(
                """
                WITH latest AS (
                    SELECT run_id FROM pipetrack.pipeline_latest_run WHERE task_name = '$task'
                ), subtasks AS (
                    SELECT run_id, subtask_index, subtask_name, cpu_seconds, peak_rss_bytes,
                           disk_read_bytes, disk_write_bytes, tcp_received_bytes,
                           tcp_sent_bytes, counts
                    FROM pipetrack.pipeline_subtask
                    UNION ALL
                    SELECT run_id, subtask_index, subtask_name, cpu_seconds, peak_rss_bytes,
                           disk_read_bytes, disk_write_bytes, tcp_received_bytes,
                           tcp_sent_bytes, counts
                    FROM pipetrack.pipeline_subtask_history
                )
                SELECT s.subtask_index AS "#", s.subtask_name AS subtask,
                       s.cpu_seconds AS "cpu", s.peak_rss_bytes AS "peak memory",
                       s.disk_read_bytes AS "disk read", s.disk_write_bytes AS "disk write",
                       s.tcp_received_bytes AS "tcp received", s.tcp_sent_bytes AS "tcp sent",
                       s.counts::text AS counts
                FROM latest JOIN subtasks s USING (run_id)
                ORDER BY s.cpu_seconds DESC NULLS LAST, s.subtask_index
                """
            )
        ],
        unit="bytes",
        size=(16, 8),
        overrides=[
            by_name("#", unit="none"),
            by_name("cpu", unit="s"),
            by_name("counts", unit="string"),
        ],
    )
    b.add(
        "bargauge",
        "Work counted by the latest ended run",
        "What the latest ended run counted under each name (run.count, pipetrack count).",
        [
            prom(
                'max by (count) (pipetrack_task_last_ended_run_work_counted{task="$task"})',
                "{{count}}",
                instant=True,
            )
        ],
        unit="short",
        size=(8, 8),
        options={"orientation": "horizontal", "reduceOptions": {"calcs": ["lastNotNull"]}},
    )
