"""The monitor's routes: each page, its ``/api`` JSON twin, and the static files.

    /  or /now           Now: every task's latest run, by stage       /api/now
    /run/RUN_ID          Run: subtasks, resources, related runs        /api/run/RUN_ID
    /task/TASK           Task history: durations, outcomes, subtasks   /api/task/TASK
    /dependencies        Dependencies: the declared graph              /api/dependencies
    /failures            Failures: failed, lost, cancelled by error    /api/failures

A page is its template (Jinja2, autoescape on) with its ``/api`` payload embedded as JSON in a
non-executable script element; the page's script draws it and then polls the same ``/api``
route (text goes in through ``textContent`` only). Every answer carries a strict Content
Security Policy (scripts and styles from this server only, nothing inline), ``nosniff`` and
no caching. There is no write endpoint: the server answers GET and HEAD only.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import uuid
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from exporter._server import Response
from monitor import _payloads
from monitor._database import MonitorDatabase, Unavailable
from monitor.filters import failure_filter, history_filter, now_filter
from monitor.queries import (
    dependency_graph,
    failures,
    jsonable,
    latest_runs,
    run_detail,
    task_history,
)
from monitor.queries._common import text_filter
from tracker.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg
    from jinja2 import Environment

logger = logging.getLogger("monitor")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_NO_STORE = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"
_MAX_QUERY = 4096
_LIVE_POLL_MS = 1000  # Now and Run: a 0.5 s write + a 1 s poll show progress within 2 s
_SLOW_POLL_MS = 10000  # history, dependencies, failures change slowly

Query = dict[str, list[str]]
Builder = Callable[["psycopg.Connection[Any]", str, Query], "dict[str, Any] | None"]


class NotFound(Exception):
    """No such run (or a path that cannot name one)."""


def _first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _dumps(data: object, **kwargs: Any) -> str:
    kwargs.setdefault("sort_keys", True)
    return json.dumps(data, default=jsonable, **kwargs)


def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("monitor", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # |tojson escapes <, >, & and ' as \\u escapes, so embedded data never ends its element.
    env.policies["json.dumps_function"] = _dumps
    return env


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of monitor/static by name, read once (nothing else is ever served from disk)."""
    files = {}
    for entry in resources.files("monitor").joinpath("static").iterdir():
        if entry.is_file():
            kind = mimetypes.guess_type(entry.name)[0] or "text/plain"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            files[entry.name] = (entry.read_bytes(), kind)
    return files


class MonitorRoutes:
    """The monitor as ``routes`` of an ExporterServer. ``at_root``: serve the Now page at /
    too (``pipetrack ui``; the exporter keeps its landing page there)."""

    def __init__(
        self,
        database: MonitorDatabase,
        *,
        jaeger_url: str | None = None,
        at_root: bool = True,
    ) -> None:
        self._database = database
        self._jaeger_url = jaeger_url
        self._at_root = at_root
        self._templates = _environment()
        self._static = _static_files()
        self._views: dict[str, tuple[Builder, int, str]] = {
            "now": (self._now, _LIVE_POLL_MS, "Now"),
            "run": (self._run, _LIVE_POLL_MS, "Run"),
            "task": (self._task, _SLOW_POLL_MS, "Task history"),
            "dependencies": (self._dependencies, _SLOW_POLL_MS, "Dependencies"),
            "failures": (self._failures, _SLOW_POLL_MS, "Failures"),
        }

    def __call__(self, path: str, query: str) -> Response | None:
        if path.startswith("/static/"):
            found = self._static.get(path.removeprefix("/static/"))
            if found is None:
                return None
            headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
            return Response(200, found[0], found[1], headers)
        if path == "/" and self._at_root:
            path = "/now"
        match = re.fullmatch(r"/(api/)?(now|dependencies|failures|run|task)(?:/(.*))?", path)
        if match is None:
            return None
        api, view, argument = bool(match.group(1)), match.group(2), match.group(3)
        if (argument is None) != (view in ("now", "dependencies", "failures")):
            return None
        return self._answer(view, argument or "", query, api=api, path=path)

    def _answer(self, view: str, argument: str, raw: str, *, api: bool, path: str) -> Response:
        builder, poll, title = self._views[view]
        try:
            if len(raw) > _MAX_QUERY:
                raise ConfigurationError(f"the query string is longer than {_MAX_QUERY} characters")
            query = parse_qs(raw, max_num_fields=64, errors="strict")
            with self._database.reading() as conn:
                data = builder(conn, argument, query)
        except (ConfigurationError, ValueError) as exc:  # a bad filter or a malformed query
            return self._error(400, str(exc), api=api)
        except NotFound as exc:
            return self._error(404, str(exc), api=api)
        except Unavailable as exc:
            return self._error(503, str(exc), api=api)
        if data is None:
            return self._error(404, "not found", api=api)
        if api:
            body = _dumps(data, sort_keys=False, separators=(",", ":"))  # polled: cheap first
            return Response(200, body.encode(), _JSON, _NO_STORE)
        api_path = "/api" + path + (f"?{raw}" if raw else "")
        page = self._templates.get_template(f"{view}.html").render(
            page=view,
            title=title,
            data=data,
            api=api_path,
            poll=poll,
            query={key: values[-1] for key, values in parse_qs(raw).items()},
            argument=argument,
        )
        return Response(200, page.encode(), _HTML, _NO_STORE)

    def _error(self, status: int, message: str, *, api: bool) -> Response:
        if api:
            return Response(status, _dumps({"error": message}).encode(), _JSON, _NO_STORE)
        page = self._templates.get_template("error.html").render(
            page="error", title=f"Error {status}", status=status, message=message
        )
        return Response(status, page.encode(), _HTML, _NO_STORE)

    # -- the views ----------------------------------------------------------------------
    def _now(self, conn: psycopg.Connection[Any], _: str, query: Query) -> dict[str, Any]:
        wanted = now_filter(
            stages=query.get("stage", []),
            statuses=query.get("status", []),
            task=_first(query, "task") or None,
            hosts=query.get("host", []),
            since=_first(query, "since") or None,
            problems=(_first(query, "problems") or "").lower() in ("1", "on", "true", "yes"),
        )
        return _payloads.now_payload(latest_runs(conn, wanted, full=False))

    def _run(self, conn: psycopg.Connection[Any], argument: str, _: Query) -> dict[str, Any]:
        try:
            run_id = uuid.UUID(argument)
        except ValueError:
            raise NotFound(f"{argument[:80]!r} is not a run id") from None
        detail = run_detail(conn, run_id)
        if detail is None:
            raise NotFound(f"no run {run_id}")
        return _payloads.run_payload(detail, jaeger_url=self._jaeger_url)

    def _task(self, conn: psycopg.Connection[Any], argument: str, query: Query) -> dict[str, Any]:
        task = text_filter(unquote(argument, errors="strict"), what="task")
        if not task:
            raise NotFound("no task named")
        wanted = history_filter(
            statuses=query.get("status", []),
            since=_first(query, "since") or None,
            until=_first(query, "until") or None,
            limit=_first(query, "limit"),
        )
        return _payloads.history_payload(task_history(conn, task, wanted))

    def _dependencies(self, conn: psycopg.Connection[Any], _: str, __: Query) -> dict[str, Any]:
        return _payloads.dependencies_payload(dependency_graph(conn))

    def _failures(self, conn: psycopg.Connection[Any], _: str, query: Query) -> dict[str, Any]:
        wanted = failure_filter(
            since=_first(query, "since") or None,
            until=_first(query, "until") or None,
            outcomes=query.get("outcome", []),
        )
        return _payloads.failures_payload(failures(conn, wanted))
