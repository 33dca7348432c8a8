-- Finished runs (and their subtasks) move here from the hot tables, so queries over what runs now
-- never scan years of history. Range-partitioned by month of execution_start; a partitioned
-- table's unique keys must contain the partition key, hence (run_id, execution_start).

CREATE TABLE pipeline_status_history (
    LIKE pipeline_status INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    PRIMARY KEY (run_id, execution_start)
) PARTITION BY RANGE (execution_start);

COMMENT ON TABLE pipeline_status_history IS
    'pipetrack: finished runs moved out of pipeline_status, one partition per month';

CREATE INDEX idx_pipeline_status_history_task_start
    ON pipeline_status_history (task_name, execution_start DESC);

CREATE TABLE pipeline_subtask_history (
    LIKE pipeline_subtask INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    execution_start TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, subtask_index, execution_start)
) PARTITION BY RANGE (execution_start);

COMMENT ON TABLE pipeline_subtask_history IS
    'pipetrack: subtasks of archived runs; execution_start is the run''s, so partitions align';

-- Creates (if missing) the monthly partitions of both history tables that hold `at`, and returns
-- the status partition's name. Months are UTC so every server agrees on the bounds.
CREATE FUNCTION ensure_history_partition(at TIMESTAMPTZ) RETURNS TEXT
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    lower_bound TIMESTAMPTZ := date_trunc('month', at, 'UTC');
    upper_bound TIMESTAMPTZ := lower_bound + INTERVAL '1 month';
    suffix TEXT := to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF pipeline_status_history FOR VALUES FROM (%L) TO (%L)',
        'pipeline_status_history_' || suffix, lower_bound, upper_bound);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF pipeline_subtask_history FOR VALUES FROM (%L) TO (%L)',
        'pipeline_subtask_history_' || suffix, lower_bound, upper_bound);
    RETURN 'pipeline_status_history_' || suffix;
END;
$$;
