"""The status row's state columns a run's snapshot reads (``tracker._model.columns`` names these
``_row_*`` attributes as the columns' sources): each the run's state as the row spells it.
A mixin of ``RunCore``, which holds the state they read."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tracker._model.snapshot import utc

if TYPE_CHECKING:
    from tracker._model.counts import Counts
    from tracker._model.subtask import SubtaskCore


class StatusRow:
    """The ``_row_*`` sources of the status row's state columns."""

    if TYPE_CHECKING:  # what RunCore holds and does, as these read it
        end_mono: float | None
        shown: SubtaskCore | None
        overall_message: str | None
        cpu_percent: float | None
        error_message: str | None
        error_detail: str | None
        last_update: float
        last_progress: float | None
        counts: Counts

        @property
        def current_subtask(self) -> int | None: ...
        def wall(self, mono: float) -> float: ...
        def overall_percent(self) -> float | None: ...
        def cleaned(self, column: str, value: str | None) -> str | None: ...

    @property
    def _row_ended(self) -> datetime | None:
        return None if self.end_mono is None else utc(self.wall(self.end_mono))

    @property
    def _row_current_subtask(self) -> int | None:
        return self.current_subtask

    @property
    def _row_shown_name(self) -> str | None:
        shown = self.shown
        return None if shown is None else self.cleaned("subtask_name", shown.name or None)

    @property
    def _row_shown_status(self) -> str | None:
        return None if self.shown is None else self.shown.status

    @property
    def _row_overall_percent(self) -> float | None:
        percent = self.overall_percent()
        return None if percent is None else float(percent)

    @property
    def _row_overall_message(self) -> str | None:
        return self.cleaned("overall_progress_message", self.overall_message)

    @property
    def _row_shown_percent(self) -> float | None:
        return None if self.shown is None else self.shown.percent()

    @property
    def _row_shown_message(self) -> str | None:
        shown = self.shown
        return None if shown is None else self.cleaned("subtask_progress_message", shown.message)

    @property
    def _row_shown_items_total(self) -> int | None:
        return None if self.shown is None else self.shown._total

    @property
    def _row_shown_items_complete(self) -> int | None:
        return None if self.shown is None else self.shown._complete

    @property
    def _row_cpu_percent(self) -> float | None:
        return None if self.cpu_percent is None else float(self.cpu_percent)

    @property
    def _row_counts(self) -> str | None:
        return self.counts.json()

    @property
    def _row_error_message(self) -> str | None:
        return self.cleaned("error_message", self.error_message)

    @property
    def _row_error_detail(self) -> str | None:
        return self.cleaned("error_detail", self.error_detail)

    @property
    def _row_updated(self) -> datetime:
        return utc(self.last_update)

    @property
    def _row_progressed(self) -> datetime | None:
        return None if self.last_progress is None else utc(self.last_progress)
