-- Optional least-privilege roles for pipetrack. Run once per cluster as a superuser or the schema
-- owner, after `pipetrack db upgrade`:  psql "$DSN" -f sql/roles.sql
-- Then give login users membership:  GRANT pipetrack_writer TO etl_user;
--                                    GRANT pipetrack_reader TO grafana, pipetrack_exporter;
--   pipetrack_writer  what tracked scripts need: insert and update runs and subtasks, insert
--                     resource samples, read them
--   pipetrack_reader  the exporter and Grafana: read everything, write nothing
-- Neither role owns anything, so neither can drop or alter the tables. The trigger-maintained
-- tables are written by SECURITY DEFINER functions, so the writer needs no rights on them; those
-- functions pin search_path = pipetrack, pg_temp (migration 0009), so a writer's temporary tables
-- cannot stand in for the real ones, and no role needs EXECUTE on them (triggers fire anyway).
--
-- TEMP on the database is left as it is. PostgreSQL grants it to PUBLIC, and a grant to PUBLIC
-- cannot be taken from one role alone, so denying it to the writer would mean revoking it from
-- every user of the database: wrong for a database that other applications share, and not
-- needed, because the definer functions search pg_temp last. pipetrack itself creates no
-- temporary tables; on a database that is pipetrack's alone you may add, as defence in depth,
--   REVOKE TEMP ON DATABASE <dbname> FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_writer') THEN
        CREATE ROLE pipetrack_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_reader') THEN
        CREATE ROLE pipetrack_reader NOLOGIN;
    END IF;
END;
$$;

REVOKE ALL ON SCHEMA pipetrack FROM PUBLIC;
GRANT USAGE ON SCHEMA pipetrack TO pipetrack_writer, pipetrack_reader;
-- Migration 0009 revokes it too; again here for functions a later migration may add.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pipetrack FROM PUBLIC;

GRANT SELECT, INSERT, UPDATE ON pipetrack.pipeline_status, pipetrack.pipeline_subtask
    TO pipetrack_writer;
GRANT SELECT ON pipetrack.schema_migrations TO pipetrack_writer;
-- Samples are written once and never changed. (A schema older than migration 0010 has no
-- samples table; 0010 grants this itself when it finds the role.)
DO $$
BEGIN
    IF to_regclass('pipetrack.pipeline_run_sample') IS NOT NULL THEN
        GRANT SELECT, INSERT ON pipetrack.pipeline_run_sample TO pipetrack_writer;
    END IF;
END;
$$;

GRANT SELECT ON ALL TABLES IN SCHEMA pipetrack TO pipetrack_reader;
-- History partitions and tables added by later migrations are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA pipetrack GRANT SELECT ON TABLES TO pipetrack_reader;
