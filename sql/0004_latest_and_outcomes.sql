-- Structures maintained by triggers so the exporter's questions cost O(tasks), not O(runs):
--   pipeline_task_latest    the newest run of each task ("latest run per task" without DISTINCT ON)
--   pipeline_task_outcomes  runs that reached each final status, never decremented, so counters
--                           stay monotonic when runs are archived or deleted
-- The trigger functions are SECURITY DEFINER: the writer role needs no rights on these tables.

CREATE TABLE pipeline_task_latest (
    task_name VARCHAR(255) PRIMARY KEY,
    run_id UUID NOT NULL,
    execution_start TIMESTAMPTZ NOT NULL
);

CREATE TABLE pipeline_task_outcomes (
    task_name VARCHAR(255) NOT NULL,
    execution_status VARCHAR(20) NOT NULL,
    runs BIGINT NOT NULL,
    last_change TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task_name, execution_status),
    CONSTRAINT chk_outcome_status CHECK (execution_status IN ('FINISHED', 'FAILED', 'CANCELLED')),
    CONSTRAINT chk_outcome_runs CHECK (runs >= 0)
);

CREATE FUNCTION pipeline_status_track_latest() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO pipeline_task_latest AS l (task_name, run_id, execution_start)
    VALUES (NEW.task_name, NEW.run_id, NEW.execution_start)
    ON CONFLICT (task_name) DO UPDATE
        SET run_id = EXCLUDED.run_id, execution_start = EXCLUDED.execution_start
        WHERE (l.execution_start, l.run_id) < (EXCLUDED.execution_start, EXCLUDED.run_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER pipeline_status_latest AFTER INSERT ON pipeline_status
    FOR EACH ROW EXECUTE FUNCTION pipeline_status_track_latest();

-- task_name and execution_start identify where a run sits in the latest-run table and in the
-- history partitions; changing them afterwards would silently corrupt both.
CREATE FUNCTION pipeline_status_forbid_rekey() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'pipeline_status: task_name and execution_start of run % cannot change', OLD.run_id
        USING ERRCODE = 'check_violation';
END;
$$;

CREATE TRIGGER pipeline_status_rekey BEFORE UPDATE OF task_name, execution_start ON pipeline_status
    FOR EACH ROW
    WHEN (OLD.task_name IS DISTINCT FROM NEW.task_name
          OR OLD.execution_start IS DISTINCT FROM NEW.execution_start)
    EXECUTE FUNCTION pipeline_status_forbid_rekey();

CREATE FUNCTION pipeline_status_count_outcome() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO pipeline_task_outcomes AS o (task_name, execution_status, runs)
    VALUES (NEW.task_name, NEW.execution_status, 1)
    ON CONFLICT (task_name, execution_status) DO UPDATE
        SET runs = o.runs + 1, last_change = now();
    RETURN NULL;
END;
$$;

-- Count a run once, when it first reaches a final status.
CREATE TRIGGER pipeline_status_outcome_insert AFTER INSERT ON pipeline_status
    FOR EACH ROW
    WHEN (NEW.execution_status IN ('FINISHED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION pipeline_status_count_outcome();

CREATE TRIGGER pipeline_status_outcome_update AFTER UPDATE OF execution_status ON pipeline_status
    FOR EACH ROW
    WHEN (NEW.execution_status IN ('FINISHED', 'FAILED', 'CANCELLED')
          AND OLD.execution_status NOT IN ('FINISHED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION pipeline_status_count_outcome();

-- Every run, hot or archived. Views expand * when created: a migration that adds a column to
-- pipeline_status must add it to pipeline_status_history too and recreate these views.
CREATE VIEW pipeline_runs AS
    SELECT * FROM pipeline_status
    UNION ALL
    SELECT * FROM pipeline_status_history;

-- The newest run of each task, found through pipeline_task_latest by key (no scan of runs).
CREATE VIEW pipeline_latest_run AS
    SELECT r.*
    FROM pipeline_task_latest AS l
    CROSS JOIN LATERAL (
        SELECT s.* FROM pipeline_status AS s WHERE s.run_id = l.run_id
        UNION ALL
        SELECT h.* FROM pipeline_status_history AS h
        WHERE h.run_id = l.run_id AND h.execution_start = l.execution_start
        LIMIT 1
    ) AS r;
