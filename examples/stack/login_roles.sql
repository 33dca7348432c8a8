-- Login roles for the docker-compose stack, each a member of one of sql/roles.sql's group roles:
--   exporter and Grafana read (pipetrack_reader); the demo pipeline writes (pipetrack_writer).
-- Run after `pipetrack db upgrade` and sql/roles.sql, as the database owner, with psql:
--   psql -v ON_ERROR_STOP=1 -v exporter_password=… -v grafana_password=… -v demo_password=… \
--        -f sql/roles.sql -f examples/stack/login_roles.sql
-- Idempotent: roles are created once (they are cluster-wide) and get the given password each time.

SELECT format('CREATE ROLE pipetrack_exporter LOGIN IN ROLE pipetrack_reader')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_exporter') \gexec
SELECT format('CREATE ROLE pipetrack_grafana LOGIN IN ROLE pipetrack_reader')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_grafana') \gexec
SELECT format('CREATE ROLE pipetrack_demo LOGIN IN ROLE pipetrack_writer')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipetrack_demo') \gexec

SELECT format('ALTER ROLE pipetrack_exporter PASSWORD %L', :'exporter_password') \gexec
SELECT format('ALTER ROLE pipetrack_grafana PASSWORD %L', :'grafana_password') \gexec
SELECT format('ALTER ROLE pipetrack_demo PASSWORD %L', :'demo_password') \gexec

-- Grafana's queries name the schema; this only spares people typing SQL in Explore.
ALTER ROLE pipetrack_grafana SET search_path = pipetrack, public;
-- A runaway dashboard query must not hold the database for long.
ALTER ROLE pipetrack_grafana SET statement_timeout = '30s';
