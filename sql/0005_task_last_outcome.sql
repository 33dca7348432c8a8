-- The last run of each task to reach each final status, and the durations of its recent runs
-- with that status, maintained by a trigger so the exporter's "last success / last failure /
-- recent durations" cost O(tasks), not a scan of runs (hot and archived alike).
--   execution_end     COALESCE(execution_end, last_update) of that run: a run marked final
--                     without an end time still has a moment it was last heard of
--   recent_durations  seconds from start to that end of the last 20 runs to reach the status,
--                     oldest first, in the order the database recorded them
-- Never decremented or deleted by archiving, like pipeline_task_outcomes. SECURITY DEFINER so
-- the writer role needs no rights on the table.

CREATE TABLE pipeline_task_last_outcome (
    task_name VARCHAR(255) NOT NULL,
    execution_status VARCHAR(20) NOT NULL,
    run_id UUID NOT NULL,
    execution_start TIMESTAMPTZ NOT NULL,
    execution_end TIMESTAMPTZ NOT NULL,
    recent_durations DOUBLE PRECISION[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (task_name, execution_status),
    CONSTRAINT chk_last_outcome_status CHECK (execution_status IN ('FINISHED', 'FAILED', 'CANCELLED'))
);

COMMENT ON TABLE pipeline_task_last_outcome IS
    'pipetrack: per task and final status, the latest run to end so and its recent durations';

CREATE FUNCTION pipeline_status_track_last_outcome() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    ended TIMESTAMPTZ := COALESCE(NEW.execution_end, NEW.last_update);
    -- last_update can precede a start written with a skewed clock; a duration is never negative.
    took DOUBLE PRECISION := GREATEST(0, extract(epoch FROM ended - NEW.execution_start))::float8;
BEGIN
    INSERT INTO pipeline_task_last_outcome AS o
        (task_name, execution_status, run_id, execution_start, execution_end, recent_durations)
    VALUES (NEW.task_name, NEW.execution_status, NEW.run_id, NEW.execution_start, ended,
            ARRAY[took])
    ON CONFLICT (task_name, execution_status) DO UPDATE SET
        -- keep the 20 newest: drop from the front what the append pushes past 20
        recent_durations = (o.recent_durations || EXCLUDED.recent_durations)
            [GREATEST(1, cardinality(o.recent_durations) - 18):],
        -- a run that ends after the stored one replaces it; an older one arriving late (a
        -- replayed spool) only adds its duration
        run_id = CASE WHEN (EXCLUDED.execution_end, EXCLUDED.run_id) > (o.execution_end, o.run_id)
                      THEN EXCLUDED.run_id ELSE o.run_id END,
        execution_start = CASE WHEN (EXCLUDED.execution_end, EXCLUDED.run_id)
                                    > (o.execution_end, o.run_id)
                               THEN EXCLUDED.execution_start ELSE o.execution_start END,
        execution_end = GREATEST(o.execution_end, EXCLUDED.execution_end);
    RETURN NULL;
END;
$$;

-- Fire once per run, when it first reaches a final status (the same rule as the outcome counter).
CREATE TRIGGER pipeline_status_last_outcome_insert AFTER INSERT ON pipeline_status
    FOR EACH ROW
    WHEN (NEW.execution_status IN ('FINISHED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION pipeline_status_track_last_outcome();

CREATE TRIGGER pipeline_status_last_outcome_update AFTER UPDATE OF execution_status ON pipeline_status
    FOR EACH ROW
    WHEN (NEW.execution_status IN ('FINISHED', 'FAILED', 'CANCELLED')
          AND OLD.execution_status NOT IN ('FINISHED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION pipeline_status_track_last_outcome();

-- Runs that ended before this migration: one pass over every run, once.
INSERT INTO pipeline_task_last_outcome
    (task_name, execution_status, run_id, execution_start, execution_end, recent_durations)
SELECT task_name, execution_status,
       (array_agg(run_id ORDER BY ended DESC, run_id DESC))[1],
       (array_agg(execution_start ORDER BY ended DESC, run_id DESC))[1],
       max(ended),
       array_agg(GREATEST(0, extract(epoch FROM ended - execution_start))::float8
                 ORDER BY ended, run_id)
FROM (
    SELECT task_name, execution_status, run_id, execution_start,
           COALESCE(execution_end, last_update) AS ended,
           row_number() OVER (PARTITION BY task_name, execution_status
                              ORDER BY COALESCE(execution_end, last_update) DESC, run_id DESC) AS n
    FROM pipeline_runs
    WHERE execution_status IN ('FINISHED', 'FAILED', 'CANCELLED')
) AS ended_runs
WHERE n <= 20
GROUP BY task_name, execution_status;

-- sql/roles.sql grants SELECT on every table when it runs; a database where it already ran
-- gets this table readable too.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_reader') THEN
        GRANT SELECT ON pipeline_task_last_outcome TO pipetrack_reader;
    END IF;
END;
$$;
