-- The canonical record: one row per run, the columns of the original design (correctly named)
-- plus what correctness needs: seq (idempotent upserts), trace_id, parent_run_id, exit_code,
-- peak_memory_mb. Applied by `pipetrack db upgrade` inside one transaction.

CREATE TABLE pipeline_status (
    -- Primary identification
    execution_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id UUID NOT NULL,

    -- Task identification
    task_name VARCHAR(255) NOT NULL,
    task_stage VARCHAR(50),
    task_type VARCHAR(10),

    -- Execution context
    hostname VARCHAR(255) NOT NULL,
    process_id INTEGER NOT NULL,
    user_name VARCHAR(100),

    -- File paths
    script_path VARCHAR(500),
    script_file VARCHAR(255),
    log_path VARCHAR(500),
    log_file VARCHAR(255),

    -- Timing
    execution_start TIMESTAMPTZ NOT NULL,
    execution_end TIMESTAMPTZ,
    last_update TIMESTAMPTZ NOT NULL DEFAULT now(),   -- refreshed by every write and heartbeat
    last_progress TIMESTAMPTZ,                        -- when progress last moved (stall detection)

    execution_status VARCHAR(20) NOT NULL,

    -- Subtasks (two-level progress: overall across subtasks, then within the current one)
    total_subtasks INTEGER,
    current_subtask INTEGER,
    subtask_name VARCHAR(500),
    subtask_status VARCHAR(20),

    overall_percent_complete NUMERIC(5, 2),
    overall_progress_message TEXT,

    subtask_percent_complete NUMERIC(5, 2),
    subtask_progress_message TEXT,
    subtask_items_total BIGINT,
    subtask_items_complete BIGINT,

    -- Resources. cpu_percent is psutil's per-process figure, which exceeds 100 on several cores,
    -- so it is wider than the original NUMERIC(5,2).
    memory_mb INTEGER,
    peak_memory_mb INTEGER,
    cpu_percent NUMERIC(7, 2),

    -- Errors and outcome
    error_message TEXT,
    error_detail TEXT,
    exit_code INTEGER,

    -- Metadata. git_commit is 64 wide so SHA-256 repositories fit.
    git_commit VARCHAR(64),
    environment JSONB,

    -- Correctness: an upsert applies only when its seq is newer than the row's.
    seq BIGINT NOT NULL DEFAULT 0,
    trace_id VARCHAR(32),
    parent_run_id UUID,

    CONSTRAINT pipeline_status_run_id_key UNIQUE (run_id),
    CONSTRAINT chk_status CHECK (execution_status IN
        ('STARTED', 'RUNNING', 'FINISHED', 'FAILED', 'CANCELLED')),
    CONSTRAINT chk_subtask_status CHECK (subtask_status IS NULL OR subtask_status IN
        ('NOT_STARTED', 'RUNNING', 'COMPLETED', 'FAILED')),
    CONSTRAINT chk_overall_percent CHECK (overall_percent_complete BETWEEN 0 AND 100),
    CONSTRAINT chk_subtask_percent CHECK (subtask_percent_complete BETWEEN 0 AND 100),
    CONSTRAINT chk_subtask_counts CHECK (total_subtasks >= 0 AND current_subtask >= 0),
    CONSTRAINT chk_items CHECK (subtask_items_total >= 0 AND subtask_items_complete >= 0),
    CONSTRAINT chk_resources CHECK (memory_mb >= 0 AND peak_memory_mb >= 0 AND cpu_percent >= 0),
    CONSTRAINT chk_process_id CHECK (process_id >= 0),
    CONSTRAINT chk_seq CHECK (seq >= 0),
    CONSTRAINT chk_trace_id CHECK (trace_id ~ '^[0-9a-f]{32}$'),
    CONSTRAINT chk_end_after_start CHECK (execution_end >= execution_start),
    CONSTRAINT chk_environment_object CHECK (jsonb_typeof(environment) = 'object')
);

COMMENT ON TABLE pipeline_status IS
    'pipetrack: one row per run of a pipeline script; finished runs move to pipeline_status_history';
COMMENT ON COLUMN pipeline_status.seq IS
    'per-run update number; an upsert applies only if newer, so replays never regress a row';

-- "runs by start time" (and the archiver's scan for old finished runs)
CREATE INDEX idx_pipeline_status_start ON pipeline_status (execution_start);
-- a task's run history, newest first
CREATE INDEX idx_pipeline_status_task_start ON pipeline_status (task_name, execution_start DESC);
-- "runs now running" (the exporter, and the reaper looking for its host's pids): small, because
-- finished runs drop out of it
CREATE INDEX idx_pipeline_status_active ON pipeline_status (task_name, hostname)
    WHERE execution_status IN ('STARTED', 'RUNNING');
CREATE INDEX idx_pipeline_status_parent ON pipeline_status (parent_run_id)
    WHERE parent_run_id IS NOT NULL;
