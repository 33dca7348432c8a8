-- Room on each page for the next version of a row, so that progress updates are HOT.
--
-- A running run's row is rewritten every half second or so, and none of the columns those
-- writes change is indexed: PostgreSQL can then put the new version on the same page and skip
-- every index (a heap-only tuple update), but only if the page has room for it. At the default
-- fillfactor of 100 it never does, so each progress write also inserted into all six indexes.
-- Only pages written from now on keep the room; VACUUM FULL or pg_repack applies it to the rest.
ALTER TABLE pipeline_status SET (fillfactor = 50);
ALTER TABLE pipeline_subtask SET (fillfactor = 50);
