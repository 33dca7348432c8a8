"""The metrics the exporter serves: names, types, labels and HELP text, in one place.

docs/metrics.md documents the same list; a test checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

TASK_LABELS = ("task", "task_stage")
STATUSES = ("STARTED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")
FINAL_STATUSES = ("FINISHED", "FAILED", "CANCELLED")
RUNNING_STATUSES = ("STARTED", "RUNNING")
UNKNOWN_STAGE = "UNKNOWN"
QUANTILES = (0.5, 0.9, 1.0)
RECENT_RUNS = 20  # the length of pipeline_task_last_outcome.recent_durations (sql/0005)
MAX_COUNT_NAMES = 32  # a run's work counts (sql/0010): the bound of the "count" label

Family = GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "gauge", "counter" or "summary" (quantiles only, its last label "quantile")
    help: str
    labels: tuple[str, ...] = ()

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        """A fresh, empty gauge or counter family of this metric, to fill with ``add_metric``."""
        if self.kind == "summary":
            raise TypeError(f"{self.name} is a summary: its family is empty_family()'s")
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)

    def empty_family(self) -> Family:
        """A fresh, empty family of this metric of any kind, to fill with samples."""
        if self.kind == "summary":
            # "quantile" is the summary's own label, not one of the family's label names.
            return SummaryMetricFamily(self.name, self.help, labels=self.labels[:-1])
        return self.family()


def _task(name: str, help_text: str, *extra: str, kind: str = "gauge") -> MetricSpec:
    return MetricSpec(name, kind, help_text, (*TASK_LABELS, *extra))


LAST_RUN_STATUS = _task(
    "pipetrack_task_last_run_status",
    "1 for the status of the task's latest run, 0 for the other statuses.",
    "status",
)
RUNNING_RUNS = _task("pipetrack_task_running_runs", "Runs of the task now STARTED or RUNNING.")
OVERALL_PROGRESS = _task(
    "pipetrack_task_overall_progress_ratio",
    "Overall progress of the task's current run, 0-1 (the newest running run).",
)
SUBTASK_PROGRESS = _task(
    "pipetrack_task_subtask_progress_ratio",
    "Progress of the current run within its current subtask, 0-1.",
)
CURRENT_SUBTASK = _task(
    "pipetrack_task_current_subtask",
    "Number (1-based) of the subtask the current run is in.",
)
SUBTASKS_COMPLETED = _task(
    "pipetrack_task_subtasks_completed", "Subtasks the current run has completed."
)
# Not "_total": that suffix is a counter's, and this is a gauge.
SUBTASKS = _task("pipetrack_task_subtasks", "Subtasks the current run declared it has in total.")
LAST_START = _task(
    "pipetrack_task_last_start_timestamp_seconds",
    "Start of the task's latest run, Unix time.",
)
LAST_END = _task(
    "pipetrack_task_last_end_timestamp_seconds",
    "End of the task's latest ended run (any final status), Unix time.",
)
LAST_SUCCESS = _task(
    "pipetrack_task_last_success_timestamp_seconds",
    "End of the task's latest FINISHED run, Unix time.",
)
LAST_FAILURE = _task(
    "pipetrack_task_last_failure_timestamp_seconds",
    "End of the task's latest FAILED run, Unix time.",
)
LAST_DURATION = _task(
    "pipetrack_task_last_duration_seconds",
    "Duration of the task's latest ended run.",
)
LAST_HEARTBEAT = _task(
    "pipetrack_task_last_heartbeat_timestamp_seconds",
    "Last update (heartbeat) of the task's current run, Unix time.",
)
LAST_PROGRESS = _task(
    "pipetrack_task_last_progress_timestamp_seconds",
    "When the progress of the task's current run last moved, Unix time.",
)
MEMORY = _task(
    "pipetrack_task_memory_bytes",
    "Resident memory of the task's running runs, summed.",
)
CPU = _task(
    "pipetrack_task_cpu_ratio",
    "CPU use of the task's running runs, summed (1 = one core busy).",
)
DISK_READ_RATE = _task(
    "pipetrack_task_disk_read_bytes_per_second",
    "Storage bytes the task's running runs read per second, between their last two samples, "
    "summed.",
)
DISK_WRITE_RATE = _task(
    "pipetrack_task_disk_write_bytes_per_second",
    "Storage bytes the task's running runs wrote per second, between their last two samples, "
    "summed.",
)
TCP_RECEIVE_RATE = _task(
    "pipetrack_task_tcp_receive_bytes_per_second",
    "TCP payload bytes the task's running runs received per second, between their last two "
    "samples, summed.",
)
TCP_SEND_RATE = _task(
    "pipetrack_task_tcp_send_bytes_per_second",
    "TCP payload bytes the task's running runs sent per second, between their last two "
    "samples, summed.",
)
DB_CONNECTIONS = _task(
    "pipetrack_task_db_connections",
    "Open database connections of the task's running runs at their last sample, summed.",
)
OPEN_FDS = _task(
    "pipetrack_task_open_file_descriptors",
    "Open file descriptors of the task's running runs at their last sample, summed.",
)
ENDED_CPU = _task(
    "pipetrack_task_last_ended_run_cpu_seconds",
    "CPU time the task's latest ended run used (its process tree, user + system).",
)
ENDED_PEAK_MEMORY = _task(
    "pipetrack_task_last_ended_run_peak_memory_bytes",
    "Peak resident memory of the task's latest ended run.",
)
ENDED_DISK_READ = _task(
    "pipetrack_task_last_ended_run_disk_read_bytes",
    "Storage bytes the task's latest ended run read.",
)
ENDED_DISK_WRITE = _task(
    "pipetrack_task_last_ended_run_disk_write_bytes",
    "Storage bytes the task's latest ended run wrote.",
)
ENDED_TCP_RECEIVED = _task(
    "pipetrack_task_last_ended_run_tcp_received_bytes",
    "TCP payload bytes the task's latest ended run received.",
)
ENDED_TCP_SENT = _task(
    "pipetrack_task_last_ended_run_tcp_sent_bytes",
    "TCP payload bytes the task's latest ended run sent.",
)
ENDED_WORK = _task(
    "pipetrack_task_last_ended_run_work_counted",
    "Work the task's latest ended run counted under each name (run.count, pipetrack count).",
    "count",
)
PREDICTED_END = _task(
    "pipetrack_task_predicted_end_timestamp_seconds",
    "Predicted finish of the task's current run, its progress blended with its history, Unix time.",
)
STALLED = _task(
    "pipetrack_task_stalled",
    "1 if the task's current run heartbeats but its progress has not moved for its stall "
    "threshold, else 0.",
)
STALL_AFTER = _task(
    "pipetrack_task_stall_threshold_seconds",
    "How long the current run's progress may stand still before it counts as stalled.",
)
NEXT_EXPECTED_START = _task(
    "pipetrack_task_next_expected_start_timestamp_seconds",
    "Next start of the declared task's schedule, Unix time.",
)
LAST_EXPECTED_START = _task(
    "pipetrack_task_last_expected_start_timestamp_seconds",
    "Latest start of the declared task's schedule at or before now, Unix time.",
)
START_GRACE = _task(
    "pipetrack_task_start_grace_seconds",
    "How late a declared task may start before its start counts as missed.",
)
MAX_DURATION = _task(
    "pipetrack_task_max_duration_seconds",
    "The longest a run of the declared task may take.",
)
MISSED_START = _task(
    "pipetrack_task_missed_start",
    "1 if no run of the declared task started within its grace after its last expected "
    "start, else 0.",
)
STARTS_SINCE_EXPECTED = _task(
    "pipetrack_task_runs_started_since_expected_start",
    "Runs of the declared task started since its last expected start.",
)
BEFORE_DEPENDENCY = _task(
    "pipetrack_task_started_before_dependency",
    "1 if the declared task's latest run started before a task it depends on had succeeded, "
    "else 0.",
)
RUNS = _task(
    "pipetrack_task_runs",
    "Runs of the task that reached a final status; monotonic across archiving.",
    "status",
    kind="counter",
)
# A summary of quantiles only: the record keeps the last 20 durations, not a running sum, and
# a _sum/_count of a sliding window would not be the counters those samples must be. The count
# of FINISHED runs is pipetrack_task_runs_total{status="FINISHED"}.
RECENT_DURATION = _task(
    "pipetrack_task_recent_duration_seconds",
    f"Quantiles of the durations of the task's last {RECENT_RUNS} FINISHED runs.",
    "quantile",
    kind="summary",
)
REAPED_RUNS = MetricSpec(
    "pipetrack_reaped_runs",
    "counter",
    "Runs this exporter's reaper marked FAILED because their heartbeat stopped.",
)
DATABASE_UP = MetricSpec(
    "pipetrack_database_up", "gauge", "1 if the last scrape reached the database, else 0."
)
SCRAPE_DURATION = MetricSpec(
    "pipetrack_scrape_duration_seconds", "gauge", "Time the last read of the database took."
)
LAST_SCRAPE_ERROR = MetricSpec(
    "pipetrack_last_scrape_error",
    "gauge",
    "1 if the last read of the database failed (unreachable, timeout, missing rights), else 0.",
)
IN_RECOVERY = MetricSpec(
    "pipetrack_database_in_recovery",
    "gauge",
    "1 if the database the exporter reads is a standby in recovery (a replica), else 0.",
)
REPLICA_LAG = MetricSpec(
    "pipetrack_database_replica_lag_seconds",
    "gauge",
    "How far the standby the exporter reads is behind: now minus the commit time of the last "
    "transaction it replayed, 0 when it has replayed all it received.",
)
BUILD_INFO = MetricSpec(
    "pipetrack_exporter_build_info", "gauge", "Version of the exporter; always 1.", ("version",)
)

TASK_METRICS = (
    LAST_RUN_STATUS,
    RUNNING_RUNS,
    OVERALL_PROGRESS,
    SUBTASK_PROGRESS,
    CURRENT_SUBTASK,
    SUBTASKS_COMPLETED,
    SUBTASKS,
    LAST_START,
    LAST_END,
    LAST_SUCCESS,
    LAST_FAILURE,
    LAST_DURATION,
    LAST_HEARTBEAT,
    LAST_PROGRESS,
    MEMORY,
    CPU,
    DISK_READ_RATE,
    DISK_WRITE_RATE,
    TCP_RECEIVE_RATE,
    TCP_SEND_RATE,
    DB_CONNECTIONS,
    OPEN_FDS,
    ENDED_CPU,
    ENDED_PEAK_MEMORY,
    ENDED_DISK_READ,
    ENDED_DISK_WRITE,
    ENDED_TCP_RECEIVED,
    ENDED_TCP_SENT,
    ENDED_WORK,
    PREDICTED_END,
    RUNS,
    RECENT_DURATION,
    STALLED,
    STALL_AFTER,
    NEXT_EXPECTED_START,
    LAST_EXPECTED_START,
    START_GRACE,
    MAX_DURATION,
    MISSED_START,
    STARTS_SINCE_EXPECTED,
    BEFORE_DEPENDENCY,
)
SELF_METRICS = (
    REAPED_RUNS,
    DATABASE_UP,
    SCRAPE_DURATION,
    LAST_SCRAPE_ERROR,
    IN_RECOVERY,
    REPLICA_LAG,
    BUILD_INFO,
)
ALL_METRICS = TASK_METRICS + SELF_METRICS


def describe_all() -> list[Family]:
    """Empty families of every metric, for registration without touching the database."""
    return [spec.empty_family() for spec in ALL_METRICS]
