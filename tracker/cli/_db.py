"""``pipetrack db …``: set up, inspect and run the database pipetrack writes to."""

from __future__ import annotations

import argparse

from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget, resolve_target
from tracker._db.ready import ready_target
from tracker.cli._common import EXIT_NOT_OK, EXIT_OK, add_dsn_option, say


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser(
        "db",
        help="set up and inspect the database",
        description="Set up and inspect the database that holds the canonical record.",
    )
    sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")

    upgrade = sub.add_parser(
        "upgrade",
        help="apply pending schema migrations",
        description="Apply pending schema migrations (safe to repeat, and to run concurrently).",
    )
    add_dsn_option(upgrade)
    upgrade.set_defaults(handler=_upgrade)

    status = sub.add_parser(
        "status",
        help="show which migrations are applied",
        description="Show applied and pending migrations. Exits 1 if any is pending or modified.",
    )
    add_dsn_option(status)
    status.set_defaults(handler=_status)

    start = sub.add_parser(
        "start",
        help="start the embedded PostgreSQL and bring its schema up to date",
        description="Start the embedded PostgreSQL (if not running) and apply migrations to it.",
    )
    start.set_defaults(handler=_start)

    stop = sub.add_parser(
        "stop", help="stop the embedded PostgreSQL", description="Stop the embedded PostgreSQL."
    )
    stop.set_defaults(handler=_stop)

    url = sub.add_parser(
        "url",
        help="print the URL of the database in use",
        description=(
            "Print the connection URL of the database pipetrack uses (the embedded server's, "
            "started if needed, when nothing is configured). Passwords are shown as ****."
        ),
    )
    add_dsn_option(url)
    url.set_defaults(handler=_url)


def _upgrade(args: argparse.Namespace) -> int:
    from tracker._db import migrate

    target = ready_target(args.dsn)
    with connect(target) as conn:
        applied = migrate.upgrade(conn)
        states = migrate.status(conn)
    latest = max(s.version for s in states if s.state == "applied")
    if applied:
        for migration in applied:
            say(f"applied {migration.label}")
    say(f"schema is at version {latest} ({target.redacted})")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from tracker._db import migrate

    target = ready_target(args.dsn)
    with connect(target) as conn:
        states = migrate.status(conn)
    say(f"database: {target.redacted}")
    for state in states:
        when = state.applied_at.isoformat(timespec="seconds") if state.applied_at else ""
        say(f"{state.version:04d}  {state.name:<28} {state.state:<8} {when}".rstrip())
    behind = [s for s in states if s.state in ("pending", "modified")]
    return EXIT_NOT_OK if behind else EXIT_OK


def _start(args: argparse.Namespace) -> int:
    from tracker._db import embedded, migrate

    if not resolve_target(None).embedded:
        say("note: a database is configured, so pipetrack itself does not use the embedded one")
    embedded_target = DatabaseTarget(
        conninfo=embedded.ensure_running(), source="embedded", embedded=True
    )
    with connect(embedded_target) as conn:
        migrate.upgrade(conn)
    say(embedded_target.conninfo)
    return EXIT_OK


def _stop(args: argparse.Namespace) -> int:
    from tracker._db import embedded

    if embedded.stop():
        say(f"stopped the embedded PostgreSQL in {embedded.pgdata_dir()}")
    else:
        say("the embedded PostgreSQL is not running")
    return EXIT_OK


def _url(args: argparse.Namespace) -> int:
    target = ready_target(args.dsn)
    say(target.conninfo if target.embedded else target.redacted)
    return EXIT_OK
