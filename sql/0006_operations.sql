-- Rules that keep the record right whatever order writes arrive in, and the declared-task registry.
--   1. Terminal states are final: once FINISHED/FAILED/CANCELLED, an update that would make the
--      run active again is skipped (a late snapshot, or a process that resumes after the reaper
--      declared it lost). Moving between final states stays possible, so a run that really
--      finished after being reaped keeps its real outcome.
--   2. An archived run is not re-created: a late insert of a run already in the history (a spool
--      replayed after `pipetrack archive` moved the run) is skipped.
--   3. pipeline_task_schedule: the expected tasks, loaded by `pipetrack tasks sync`.

CREATE FUNCTION pipeline_status_keep_final() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN NULL;  -- skip the update; the row keeps its final state
END;
$$;

CREATE TRIGGER pipeline_status_final BEFORE UPDATE ON pipeline_status
    FOR EACH ROW
    WHEN (OLD.execution_status IN ('FINISHED', 'FAILED', 'CANCELLED')
          AND NEW.execution_status NOT IN ('FINISHED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION pipeline_status_keep_final();

CREATE FUNCTION pipeline_status_skip_archived() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    -- (run_id, execution_start) is the history's key: one probe into one partition.
    IF EXISTS (SELECT FROM pipeline_status_history
               WHERE run_id = NEW.run_id AND execution_start = NEW.execution_start) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER pipeline_status_archived BEFORE INSERT ON pipeline_status
    FOR EACH ROW EXECUTE FUNCTION pipeline_status_skip_archived();

CREATE TABLE pipeline_task_schedule (
    task_name VARCHAR(255) PRIMARY KEY,
    task_stage VARCHAR(50),
    schedule TEXT,                -- cron expression (5 fields), NULL for tasks run by hand
    timezone TEXT NOT NULL DEFAULT 'UTC',
    start_grace INTERVAL NOT NULL DEFAULT INTERVAL '15 minutes',
    max_duration INTERVAL,
    depends_on VARCHAR(255)[] NOT NULL DEFAULT '{}',
    description TEXT,
    synced_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT chk_schedule_grace CHECK (start_grace >= INTERVAL '0'),
    CONSTRAINT chk_schedule_max_duration CHECK (max_duration > INTERVAL '0'),
    CONSTRAINT chk_schedule_not_self_dependent CHECK (NOT task_name = ANY (depends_on))
);

COMMENT ON TABLE pipeline_task_schedule IS
    'pipetrack: declared tasks (pipetrack tasks sync): when each should start, how long it may run';
