"""Building blocks for pipetrack's Grafana dashboards: data sources, variables, queries, panels.

Dashboards are written in Python (build_dashboards.py) so every panel gets the same data source
variable, units, descriptions and trace links; the generated JSON is what Grafana provisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

# Fixed uids of the provisioned data sources (grafana/provisioning/datasources/pipetrack.yml).
PROMETHEUS_UID = "pipetrack-prometheus"
POSTGRES_UID = "pipetrack-postgres"
JAEGER_UID = "pipetrack-jaeger"
POSTGRES_TYPE = "grafana-postgresql-datasource"

PROM: JSON = {"type": "prometheus", "uid": "${datasource}"}
PG: JSON = {"type": POSTGRES_TYPE, "uid": "${postgres}"}

# What the tracker heartbeats against (every 15 s): older than this, a run counts as lost. Kept
# equal to PipetrackRunLost's threshold in prometheus/rules/pipetrack.alerts.yml.
LOST_AFTER_SECONDS = 180

STATUS_COLORS = {
    "STARTED": "blue",
    "RUNNING": "blue",
    "FINISHED": "green",
    "FAILED": "red",
    "CANCELLED": "orange",
}


def status_mappings() -> list[JSON]:
    """Colour the five run statuses wherever a panel shows them as text."""
    options = {
        status: {"color": color, "index": index, "text": status}
        for index, (status, color) in enumerate(STATUS_COLORS.items())
    }
    return [{"type": "value", "options": options}]


def failure_annotation(where: str) -> JSON:
    """Marks failed runs on every time axis of a board, with the first line of their error."""
    return {
        "name": "Failed runs",
        "enable": True,
        "iconColor": "red",
        "datasource": PG,
        "target": dict(
            refId="Anno",
            **sql(
                f"""
            SELECT execution_end AS time, task_name AS tags,
                   task_name || ' failed: ' || split_part(error_message, E'\\n', 1) AS text
            FROM pipetrack.pipeline_runs
            WHERE execution_status = 'FAILED' AND $__timeFilter(execution_end) {where}
            ORDER BY execution_end
            """
            ),
        ),
    }


def thresholds(*steps: tuple[float | None, str]) -> JSON:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


# --- template variables ---------------------------------------------------------------------


def datasource_variable(name: str, label: str, plugin: str, uid: str, text: str) -> JSON:
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": plugin,
        "current": {"selected": False, "text": text, "value": uid},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def standard_variables() -> list[JSON]:
    """The data source variables every pipetrack dashboard has, and the Jaeger UI address."""
    return [
        datasource_variable("datasource", "Prometheus", "prometheus", PROMETHEUS_UID, "Prometheus"),
        datasource_variable("postgres", "PostgreSQL", POSTGRES_TYPE, POSTGRES_UID, "PostgreSQL"),
        {
            "name": "jaeger_url",
            "label": "Jaeger UI",
            "type": "textbox",
            "query": "http://localhost:16686",
            "current": {"selected": False, "text": "http://localhost:16686"},
            "hide": 0,
            "description": "Address of the Jaeger UI that trace links open (the compose stack's).",
            "options": [],
        },
    ]


def label_variable(
    name: str, label: str, metric: str, label_name: str, *, multi: bool, description: str
) -> JSON:
    """A variable listing the values of one label of a pipetrack metric."""
    definition = f"label_values({metric}, {label_name})"
    variable: JSON = {
        "name": name,
        "label": label,
        "type": "query",
        "description": description,
        "datasource": PROM,
        "definition": definition,
        "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "regex": "",
        "hide": 0,
        "multi": multi,
        "includeAll": multi,
        "options": [],
    }
    if multi:
        # Regex matchers (=~"$stage") take ".*" for All, instead of a long alternation.
        variable["allValue"] = ".*"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


# --- queries --------------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> JSON:
    """A Prometheus query. Tables are instant queries in table format."""
    target: JSON = {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not (instant or table),
        "instant": instant or table,
    }
    if table:
        target["format"] = "table"
    return target


def sql(raw: str, *, time_series: bool = False) -> JSON:
    """A PostgreSQL query (raw SQL; Grafana macros such as $__timeFilter expanded by Grafana)."""
    return {
        "datasource": PG,
        "editorMode": "code",
        "format": "time_series" if time_series else "table",
        "rawQuery": True,
        "rawSql": " ".join(raw.split()),
    }


# --- field overrides ------------------------------------------------------------------------


def by_name(field_name: str, **properties: Any) -> JSON:
    """Override the properties of one column or series, by its display name."""
    return {
        "matcher": {"id": "byName", "options": field_name},
        "properties": [
            {"id": key.replace("_", "."), "value": value} for key, value in properties.items()
        ],
    }


def trace_link(field_name: str = "trace") -> JSON:
    """Turn a trace-id column into a link to that trace in Jaeger."""
    return {
        "matcher": {"id": "byName", "options": field_name},
        "properties": [
            {
                "id": "links",
                "value": [
                    {
                        "title": "Open trace in Jaeger",
                        "url": "${jaeger_url}/trace/${__value.raw}",
                        "targetBlank": True,
                    }
                ],
            }
        ],
    }


def task_link(field_name: str = "task") -> JSON:
    """Turn a task-name column into a link to its Task detail dashboard, keeping the time range."""
    return {
        "matcher": {"id": "byName", "options": field_name},
        "properties": [
            {
                "id": "links",
                "value": [
                    {
                        "title": "Task detail",
                        "url": "/d/pipetrack-task/pipetrack-task-detail"
                        "?var-task=${__value.raw}&${__url_time_range}",
                    }
                ],
            }
        ],
    }


def merge_and_rename(
    renames: dict[str, str], order: list[str] | None = None, exclude: tuple[str, ...] = ()
) -> list[JSON]:
    """Transformations that join several instant table queries into one row per series."""
    hidden = dict.fromkeys(("Time", "job", "instance", *exclude), True)
    organize: JSON = {"excludeByName": hidden, "renameByName": renames}
    if order:
        organize["indexByName"] = {name: index for index, name in enumerate(order)}
    return [{"id": "merge", "options": {}}, {"id": "organize", "options": organize}]


# --- panels and layout ----------------------------------------------------------------------


@dataclass
class Board:
    """A dashboard under construction: panels flow left to right, then down, 24 columns wide."""

    uid: str
    title: str
    description: str
    variables: list[JSON]
    time_from: str = "now-24h"
    panels: list[JSON] = field(default_factory=list)
    annotations: list[JSON] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_height: int = 0

    def _place(self, width: int, height: int) -> JSON:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + self._row_height
            self._row_height = 0
        grid = {"h": height, "w": width, "x": self._x, "y": self._y}
        self._x += width
        self._row_height = max(self._row_height, height)
        return grid

    def row(self, title: str) -> None:
        self._x, self._y = 0, self._y + self._row_height
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1
        self._row_height = 0

    def add(
        self,
        kind: str,
        title: str,
        description: str,
        targets: list[JSON],
        *,
        unit: str,
        size: tuple[int, int],
        options: JSON | None = None,
        overrides: list[JSON] | None = None,
        mappings: list[JSON] | None = None,
        steps: JSON | None = None,
        transformations: list[JSON] | None = None,
        minmax: tuple[float, float] | None = None,
        custom: JSON | None = None,
        extra: JSON | None = None,
    ) -> None:
        datasource = targets[0]["datasource"]
        refs = "ABCDEFGHIJ"
        defaults: JSON = {"unit": unit, "mappings": mappings or []}
        if steps:
            defaults["thresholds"] = steps
            defaults["color"] = {"mode": "thresholds"}
        if minmax:
            defaults["min"], defaults["max"] = minmax
        if custom:
            defaults["custom"] = custom
        panel: JSON = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": datasource,
            "gridPos": self._place(*size),
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
            "targets": [dict(t, refId=refs[i]) for i, t in enumerate(targets)],
        }
        if transformations:
            panel["transformations"] = transformations
        if extra:
            panel.update(extra)
        self.panels.append(panel)

    def render(self) -> JSON:
        for number, panel in enumerate(self.panels, start=1):
            panel["id"] = number
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["pipetrack"],
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": self.time_from, "to": "now"},
            "timezone": "browser",
            "annotations": {"list": self.annotations},
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["pipetrack"],
                    "asDropdown": True,
                    "includeVars": False,
                    "keepTime": True,
                    "title": "pipetrack",
                }
            ],
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


# --- shared pieces of the dashboards --------------------------------------------------------

STAGE = label_variable(
    "stage",
    "Stage",
    "pipetrack_task_last_run_status",
    "task_stage",
    multi=True,
    description="Stages to show (from the task name prefix: DAILY_, PREREQ_, ANNUAL_DEC_, ...).",
)
TASK = label_variable(
    "task",
    "Task",
    "pipetrack_task_last_run_status",
    "task",
    multi=False,
    description="The task (script) to show.",
)

PERCENT_BAR = {"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}
RATIO = (0.0, 1.0)
RED_AT_ONE = thresholds((None, "green"), (1, "red"))
