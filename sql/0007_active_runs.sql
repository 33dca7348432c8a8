-- Stalled and lost runs, readable by anyone with SELECT (the CLI, Grafana, the exporter's role).
--   1. pipeline_task_schedule.stall_after: a declared task's own stall threshold (NULL: the
--      default below). Set it in the tasks file (`stall_after = "2h"`, docs/tasks.md).
--   2. pipeline_active_runs: every STARTED/RUNNING run with its heartbeat and progress ages and
--      two exclusive flags, computed from fixed thresholds the exporter also uses by default:
--        lost     no heartbeat for more than 60 s (four 15 s heartbeats: what the reaper reaps)
--        stalled  heartbeating, but progress (or, before any, the start) older than the task's
--                 stall_after, else 30 minutes
--      A lost run is never also stalled: a silent process says nothing about its progress.

ALTER TABLE pipeline_task_schedule ADD COLUMN stall_after INTERVAL;
ALTER TABLE pipeline_task_schedule ADD CONSTRAINT chk_schedule_stall_after
    CHECK (stall_after > INTERVAL '0');

CREATE VIEW pipeline_active_runs AS
    SELECT s.run_id, s.task_name, s.task_stage, s.hostname, s.process_id, s.execution_status,
           s.execution_start, s.last_update, s.last_progress, s.overall_percent_complete,
           s.current_subtask, s.total_subtasks, s.subtask_name,
           now() - s.last_update AS heartbeat_age,
           now() - coalesce(s.last_progress, s.execution_start) AS progress_age,
           coalesce(t.stall_after, INTERVAL '30 minutes') AS stall_after,
           now() - s.last_update > INTERVAL '60 seconds' AS lost,
           now() - s.last_update <= INTERVAL '60 seconds'
               AND now() - coalesce(s.last_progress, s.execution_start)
                   > coalesce(t.stall_after, INTERVAL '30 minutes') AS stalled
    FROM pipeline_status AS s
    LEFT JOIN pipeline_task_schedule AS t ON t.task_name = s.task_name
    WHERE s.execution_status IN ('STARTED', 'RUNNING');

COMMENT ON VIEW pipeline_active_runs IS
    'pipetrack: running runs with heartbeat/progress ages; lost after 60 s silent, stalled after stall_after (30 min)';

-- sql/roles.sql grants SELECT on what exists when it runs; a database where it already ran gets
-- the view readable too (default privileges cover tables created later, not views by this owner
-- in every setup, so say it explicitly).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_reader') THEN
        GRANT SELECT ON pipeline_active_runs TO pipetrack_reader;
    END IF;
END;
$$;
