"""Database plumbing shared by the tracker, the exporter and the CLI: where the database is,
how to connect without leaking secrets, the embedded server, and schema migrations."""

DSN_HELP = (
    "PostgreSQL connection string or URI (default: $PIPETRACK_DSN, then libpq's PG* variables, "
    "then the embedded server)"
)
"""The ``--dsn`` flag's help, for every command that takes one (here, not in ``dsn``: the
command's light subcommands import no more than this)."""
