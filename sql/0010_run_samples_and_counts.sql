-- Resources over time, per run and per subtask, and work counts (issue 17).
--   1. pipeline_run_sample: one row per kept resource sample of a run (tracker._sampling; the
--      writer keeps one per 10 s for a run's first hour, then one per 60 s). Cumulative
--      figures count from the run's first sample, so rates are differences of two rows.
--   2. Totals on the run row (what its last sample said) and on each subtask row (what the
--      process tree did while the subtask was open: "which step is the bottleneck").
--   3. counts: the run's and each subtask's work counts, {"name": non-negative integer, ...},
--      at most 32 names (run.count("rows_written", n), `pipetrack count NAME N`).
--   4. History and retention as for runs and subtasks: archived with their run into monthly
--      partitions by the run's execution_start, dropped with the run's partition.
-- Bytes are bigint (9.2 EB); CPU figures double precision, finite and non-negative.

CREATE TABLE pipeline_run_sample (
    run_id UUID NOT NULL REFERENCES pipeline_status (run_id) ON DELETE CASCADE,
    sampled_at TIMESTAMPTZ NOT NULL,
    subtask_index INTEGER,              -- the innermost subtask open then; NULL outside any
    processes INTEGER,                  -- processes in the tree sampled
    rss_bytes BIGINT,                   -- resident memory of the tree then
    cpu_percent DOUBLE PRECISION,       -- CPU seconds per second since the previous sample, x100
    cpu_seconds DOUBLE PRECISION,       -- cumulative
    disk_read_bytes BIGINT,             -- cumulative, from storage
    disk_write_bytes BIGINT,            -- cumulative, to storage
    tcp_received_bytes BIGINT,          -- cumulative payload of the tree's TCP connections
    tcp_sent_bytes BIGINT,              -- cumulative, sent and acknowledged
    db_connections INTEGER,             -- open connections to a database then
    other_connections INTEGER,          -- other open TCP connections then
    open_fds INTEGER,

    PRIMARY KEY (run_id, sampled_at),
    CONSTRAINT chk_sample_subtask_index CHECK (subtask_index >= 1),
    CONSTRAINT chk_sample_counts CHECK (
        processes >= 0 AND rss_bytes >= 0 AND disk_read_bytes >= 0 AND disk_write_bytes >= 0
        AND tcp_received_bytes >= 0 AND tcp_sent_bytes >= 0 AND db_connections >= 0
        AND other_connections >= 0 AND open_fds >= 0),
    -- NaN sorts above infinity in PostgreSQL: "< 'Infinity'" refuses both.
    CONSTRAINT chk_sample_cpu CHECK (
        cpu_percent >= 0 AND cpu_percent < 'Infinity'
        AND cpu_seconds >= 0 AND cpu_seconds < 'Infinity')
);

COMMENT ON TABLE pipeline_run_sample IS
    'pipetrack: resource samples of a run over time (thinned: 10 s for the first hour, then 60 s)';

ALTER TABLE pipeline_run_sample SET (fillfactor = 100);  -- rows are written once, never updated

-- The run's totals (its last sample's figures) and its work counts. The same columns, in the
-- same order, on the history table: the archiver copies rows with SELECT *.
ALTER TABLE pipeline_status
    ADD COLUMN cpu_seconds DOUBLE PRECISION,
    ADD COLUMN disk_read_bytes BIGINT,
    ADD COLUMN disk_write_bytes BIGINT,
    ADD COLUMN tcp_received_bytes BIGINT,
    ADD COLUMN tcp_sent_bytes BIGINT,
    ADD COLUMN counts JSONB;
ALTER TABLE pipeline_status_history
    ADD COLUMN cpu_seconds DOUBLE PRECISION,
    ADD COLUMN disk_read_bytes BIGINT,
    ADD COLUMN disk_write_bytes BIGINT,
    ADD COLUMN tcp_received_bytes BIGINT,
    ADD COLUMN tcp_sent_bytes BIGINT,
    ADD COLUMN counts JSONB;

-- What the subtask's process tree did between its start and its end.
ALTER TABLE pipeline_subtask
    ADD COLUMN cpu_seconds DOUBLE PRECISION,
    ADD COLUMN peak_rss_bytes BIGINT,
    ADD COLUMN disk_read_bytes BIGINT,
    ADD COLUMN disk_write_bytes BIGINT,
    ADD COLUMN tcp_received_bytes BIGINT,
    ADD COLUMN tcp_sent_bytes BIGINT,
    ADD COLUMN counts JSONB;
ALTER TABLE pipeline_subtask_history
    ADD COLUMN cpu_seconds DOUBLE PRECISION,
    ADD COLUMN peak_rss_bytes BIGINT,
    ADD COLUMN disk_read_bytes BIGINT,
    ADD COLUMN disk_write_bytes BIGINT,
    ADD COLUMN tcp_received_bytes BIGINT,
    ADD COLUMN tcp_sent_bytes BIGINT,
    ADD COLUMN counts JSONB;

-- The same rules on the hot tables and their history (a partitioned table's CHECK constraints
-- hold on every partition). counts: an object of at most 32 names of 1 to 200 characters, each
-- an integer from 0 to 2^63-1. jsonpath keeps this a plain expression (a CHECK takes no
-- subquery), and its silent mode answers NULL rather than failing on a non-object.
ALTER TABLE pipeline_status
    ADD CONSTRAINT chk_run_totals CHECK (
        disk_read_bytes >= 0 AND disk_write_bytes >= 0
        AND tcp_received_bytes >= 0 AND tcp_sent_bytes >= 0
        AND cpu_seconds >= 0 AND cpu_seconds < 'Infinity'),
    ADD CONSTRAINT chk_run_counts CHECK (
        jsonb_typeof(counts) = 'object'
        AND jsonb_array_length(jsonb_path_query_array(counts, '$.keyvalue()', '{}', true)) <= 32
        AND NOT jsonb_path_exists(counts, '$.keyvalue() ? (!(@.key like_regex "^.{1,200}$" flag "s")
            || @.value.type() != "number" || @.value < 0 || @.value > 9223372036854775807
            || @.value.floor() != @.value)', '{}', true));
ALTER TABLE pipeline_status_history
    ADD CONSTRAINT chk_run_totals CHECK (
        disk_read_bytes >= 0 AND disk_write_bytes >= 0
        AND tcp_received_bytes >= 0 AND tcp_sent_bytes >= 0
        AND cpu_seconds >= 0 AND cpu_seconds < 'Infinity'),
    ADD CONSTRAINT chk_run_counts CHECK (
        jsonb_typeof(counts) = 'object'
        AND jsonb_array_length(jsonb_path_query_array(counts, '$.keyvalue()', '{}', true)) <= 32
        AND NOT jsonb_path_exists(counts, '$.keyvalue() ? (!(@.key like_regex "^.{1,200}$" flag "s")
            || @.value.type() != "number" || @.value < 0 || @.value > 9223372036854775807
            || @.value.floor() != @.value)', '{}', true));
ALTER TABLE pipeline_subtask
    ADD CONSTRAINT chk_subtask_totals CHECK (
        peak_rss_bytes >= 0 AND disk_read_bytes >= 0 AND disk_write_bytes >= 0
        AND tcp_received_bytes >= 0 AND tcp_sent_bytes >= 0
        AND cpu_seconds >= 0 AND cpu_seconds < 'Infinity'),
    ADD CONSTRAINT chk_subtask_counts CHECK (
        jsonb_typeof(counts) = 'object'
        AND jsonb_array_length(jsonb_path_query_array(counts, '$.keyvalue()', '{}', true)) <= 32
        AND NOT jsonb_path_exists(counts, '$.keyvalue() ? (!(@.key like_regex "^.{1,200}$" flag "s")
            || @.value.type() != "number" || @.value < 0 || @.value > 9223372036854775807
            || @.value.floor() != @.value)', '{}', true));
ALTER TABLE pipeline_subtask_history
    ADD CONSTRAINT chk_subtask_totals CHECK (
        peak_rss_bytes >= 0 AND disk_read_bytes >= 0 AND disk_write_bytes >= 0
        AND tcp_received_bytes >= 0 AND tcp_sent_bytes >= 0
        AND cpu_seconds >= 0 AND cpu_seconds < 'Infinity'),
    ADD CONSTRAINT chk_subtask_counts CHECK (
        jsonb_typeof(counts) = 'object'
        AND jsonb_array_length(jsonb_path_query_array(counts, '$.keyvalue()', '{}', true)) <= 32
        AND NOT jsonb_path_exists(counts, '$.keyvalue() ? (!(@.key like_regex "^.{1,200}$" flag "s")
            || @.value.type() != "number" || @.value < 0 || @.value > 9223372036854775807
            || @.value.floor() != @.value)', '{}', true));

CREATE TABLE pipeline_run_sample_history (
    LIKE pipeline_run_sample INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    execution_start TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, sampled_at, execution_start)
) PARTITION BY RANGE (execution_start);

COMMENT ON TABLE pipeline_run_sample_history IS
    'pipetrack: samples of archived runs; execution_start is the run''s, so partitions align';

-- The partitions of all three history tables for the month holding `at`. Replacing the function
-- keeps its owner and rights (EXECUTE revoked from PUBLIC by 0009); its search_path is pinned
-- here again because CREATE OR REPLACE sets the configuration the definition gives.
CREATE OR REPLACE FUNCTION ensure_history_partition(at TIMESTAMPTZ) RETURNS TEXT
LANGUAGE plpgsql
SET search_path = pipetrack, pg_temp
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
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF pipeline_run_sample_history FOR VALUES FROM (%L) TO (%L)',
        'pipeline_run_sample_history_' || suffix, lower_bound, upper_bound);
    RETURN 'pipeline_status_history_' || suffix;
END;
$$;

-- Months archived before this migration get their sample partition now, so every month has
-- all three and retention drops them together.
DO $$
DECLARE
    mid_month TIMESTAMPTZ;
BEGIN
    FOR mid_month IN  -- the 15th: inside the UTC month whatever the session's time zone
        SELECT to_timestamp(substring(c.relname FROM '(\d{6})$') || '15', 'YYYYMMDD')
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'pipeline_status_history'::regclass
          AND c.relname ~ '^pipeline_status_history_\d{6}$'
    LOOP
        PERFORM ensure_history_partition(mid_month);
    END LOOP;
END;
$$;

-- Every run, hot or archived, and the newest run of each task: recreated so that they have the
-- new columns (a view expands * when it is created; new columns come last, as they must).
CREATE OR REPLACE VIEW pipeline_runs AS
    SELECT * FROM pipeline_status
    UNION ALL
    SELECT * FROM pipeline_status_history;

CREATE OR REPLACE VIEW pipeline_latest_run AS
    SELECT r.*
    FROM pipeline_task_latest AS l
    CROSS JOIN LATERAL (
        SELECT s.* FROM pipeline_status AS s WHERE s.run_id = l.run_id
        UNION ALL
        SELECT h.* FROM pipeline_status_history AS h
        WHERE h.run_id = l.run_id AND h.execution_start = l.execution_start
        LIMIT 1
    ) AS r;

-- Every sample, hot or archived.
CREATE VIEW pipeline_run_samples AS
    SELECT run_id, sampled_at, subtask_index, processes, rss_bytes, cpu_percent, cpu_seconds,
           disk_read_bytes, disk_write_bytes, tcp_received_bytes, tcp_sent_bytes,
           db_connections, other_connections, open_fds
    FROM pipeline_run_sample
    UNION ALL
    SELECT run_id, sampled_at, subtask_index, processes, rss_bytes, cpu_percent, cpu_seconds,
           disk_read_bytes, disk_write_bytes, tcp_received_bytes, tcp_sent_bytes,
           db_connections, other_connections, open_fds
    FROM pipeline_run_sample_history;

-- sql/roles.sql grants these on a fresh install; a database where it already ran gets them here.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_writer') THEN
        GRANT SELECT, INSERT ON pipeline_run_sample TO pipetrack_writer;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_reader') THEN
        GRANT SELECT ON pipeline_run_sample, pipeline_run_sample_history, pipeline_run_samples
            TO pipetrack_reader;
    END IF;
END;
$$;
