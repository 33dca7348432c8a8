"""Every SQL query of the dashboards' PostgreSQL panels runs against the real schema, as the
read-only role Grafana uses, with Grafana's macros expanded the way Grafana expands them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from tests.prom_helpers import dashboard_queries, dashboards, seed_pipeline
from tracker._db.migrate import sql_dir

SQL_QUERIES = dashboard_queries("rawSql")
ANNOTATIONS = [
    (name, annotation["name"], annotation["target"])
    for name, board in dashboards().items()
    for annotation in board["annotations"]["list"]
]


def expand_macros(raw: str, *, start: datetime, end: datetime, task: str) -> str:
    """Grafana's PostgreSQL macros and template variables, as Grafana substitutes them."""
    frm, to = (f"'{moment.isoformat()}'" for moment in (start, end))
    text = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {frm} AND {to}", raw)
    text = text.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
    text = text.replace("$task", task)
    assert "$" not in text.replace("E'\\n'", ""), f"unexpanded macro in: {text}"
    return text


@pytest.fixture
def reader(db):
    """The seeded test database, seen through pipetrack_reader with no search_path help."""
    seed_pipeline(db)
    db.execute((sql_dir() / "roles.sql").read_bytes())
    # Grafana's login has the default search_path: the queries must name the schema.
    db.execute("SET search_path = public")
    db.execute("SET ROLE pipetrack_reader")
    yield db
    db.execute("RESET ROLE")


def test_every_dashboard_has_postgres_panels():
    boards = {board for board, _title, _target in SQL_QUERIES}
    assert len(boards) == 4
    assert len(SQL_QUERIES) >= 12


@pytest.mark.parametrize(
    ("board", "title", "target"), SQL_QUERIES, ids=[f"{b}:{t}" for b, t, _ in SQL_QUERIES]
)
def test_postgres_panel_query_runs_as_the_reader_and_returns_rows(reader, board, title, target):
    now = datetime.now(timezone.utc)
    # the dashboards' widest default range; the seeded history fits in it
    query = expand_macros(
        target["rawSql"], start=now - timedelta(days=7), end=now, task="DAILY_01_extract"
    )
    cursor = reader.execute(query)
    columns = [column.name for column in cursor.description]
    rows = cursor.fetchall()
    assert rows, f"{board} / {title}: no rows from the seeded history"
    assert len(set(columns)) == len(columns), columns
    if target["format"] == "time_series":
        # Grafana needs a time column, and a metric column or numeric value columns
        assert columns[0] == "time"
        assert all(isinstance(row[0], datetime) for row in rows)
    if "trace" in columns:
        traces = [row[columns.index("trace")] for row in rows]
        assert all(re.fullmatch(r"[0-9a-f]{32}", str(t)) for t in traces if t is not None)


@pytest.mark.parametrize(
    ("board", "name", "target"), ANNOTATIONS, ids=[f"{b}:{n}" for b, n, _ in ANNOTATIONS]
)
def test_annotation_query_runs_as_the_reader_and_marks_failures(reader, board, name, target):
    now = datetime.now(timezone.utc)
    query = expand_macros(
        target["rawSql"], start=now - timedelta(days=7), end=now, task="DAILY_01_extract"
    )
    cursor = reader.execute(query)
    columns = [column.name for column in cursor.description]
    rows = cursor.fetchall()
    assert rows, f"{board} / {name}: no failures marked"
    assert columns == ["time", "tags", "text"]
    assert all(" failed: " in row[2] for row in rows)


def test_reader_role_cannot_write_through_a_panel(reader):
    from psycopg import errors

    with pytest.raises(errors.InsufficientPrivilege):
        reader.execute("DELETE FROM pipetrack.pipeline_status")
