"""Database plumbing shared by the tracker, the exporter and the CLI: where the database is,
how to connect without leaking secrets, the embedded server, and schema migrations."""
