"""Everything that writes the canonical record: the writer thread, the store (psycopg), the
statements, the local spool and its replay, and the resources sampled for each write."""
