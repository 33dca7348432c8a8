-- Per-subtask history: one row per subtask of a run, so durations per step, bottlenecks and ETAs
-- can be computed in SQL. subtask_index numbers subtasks in the order they were entered (1-based);
-- parent_index points at the enclosing subtask for nested ones.

CREATE TABLE pipeline_subtask (
    run_id UUID NOT NULL REFERENCES pipeline_status (run_id) ON DELETE CASCADE,
    subtask_index INTEGER NOT NULL,
    parent_index INTEGER,
    subtask_name VARCHAR(500) NOT NULL,
    subtask_status VARCHAR(20) NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    items_total BIGINT,
    items_complete BIGINT,
    message TEXT,
    seq BIGINT NOT NULL DEFAULT 0,

    PRIMARY KEY (run_id, subtask_index),
    CONSTRAINT chk_subtask_row_status CHECK (subtask_status IN
        ('NOT_STARTED', 'RUNNING', 'COMPLETED', 'FAILED')),
    CONSTRAINT chk_subtask_index CHECK (subtask_index >= 1),
    CONSTRAINT chk_parent_before_child CHECK (parent_index >= 1 AND parent_index < subtask_index),
    CONSTRAINT chk_subtask_items CHECK (items_total >= 0 AND items_complete >= 0),
    CONSTRAINT chk_subtask_end_after_start CHECK (ended_at >= started_at),
    CONSTRAINT chk_subtask_seq CHECK (seq >= 0)
);

COMMENT ON TABLE pipeline_subtask IS 'pipetrack: one row per subtask (genter/gexit block) of a run';

-- "which step is the bottleneck of task X": subtask durations by name across runs
CREATE INDEX idx_pipeline_subtask_name ON pipeline_subtask (subtask_name);
