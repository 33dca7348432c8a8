-- The SECURITY DEFINER functions could be hijacked by any role allowed to write runs, and any
-- role at all may create temporary tables by default (issue 19, finding 1).
--
-- Their `SET search_path FROM CURRENT` saved `pipetrack` alone. When pg_temp is not named in a
-- search_path, PostgreSQL searches the session's temporary schema FIRST for tables and views. So
-- a writer could create a temp table named pipeline_task_latest, put on it a trigger whose
-- function (in pg_temp) runs ALTER ROLE ... SUPERUSER, and insert one ordinary run: the definer
-- function wrote into the temp table, and the trigger ran with the rights of the migrations'
-- owner. The same held for every table these functions name.
--
-- PostgreSQL's fix ("Writing SECURITY DEFINER Functions Safely"): name pg_temp explicitly, LAST,
-- so it is searched only after pipetrack (where the writer can create nothing) and every table
-- resolves there. pg_temp is never searched for functions or operators, and pg_catalog, not
-- named, is searched first. Migrations 0004-0006 are applied and checksummed, so this one
-- alters the functions in place, on new and existing installs alike.
ALTER FUNCTION pipeline_status_track_latest() SET search_path = pipetrack, pg_temp;
ALTER FUNCTION pipeline_status_count_outcome() SET search_path = pipetrack, pg_temp;
ALTER FUNCTION pipeline_status_track_last_outcome() SET search_path = pipetrack, pg_temp;
ALTER FUNCTION pipeline_status_skip_archived() SET search_path = pipetrack, pg_temp;
-- Runs with the caller's rights, so nothing to gain here; pinned the same way so that every
-- function of the schema reads the same.
ALTER FUNCTION ensure_history_partition(TIMESTAMPTZ) SET search_path = pipetrack, pg_temp;

-- No caller needs to call these. Trigger functions fire whatever the invoking role's EXECUTE
-- rights (PostgreSQL checks EXECUTE when a trigger is created, not when it fires), and without
-- EXECUTE a writer can no longer attach a definer function to a table of its own and feed it
-- forged rows (counters, a latest run) with no run behind them. ensure_history_partition is
-- for `pipetrack archive`, which runs as the owner and keeps its rights.
REVOKE EXECUTE ON FUNCTION
    pipeline_status_track_latest(),
    pipeline_status_count_outcome(),
    pipeline_status_track_last_outcome(),
    pipeline_status_skip_archived(),
    pipeline_status_forbid_rekey(),
    pipeline_status_keep_final(),
    ensure_history_partition(TIMESTAMPTZ)
FROM PUBLIC;
