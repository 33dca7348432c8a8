"""What tracker._db.wire raises, so its callers know when to fall back to psycopg.

WireError
├── WireUnsupported (NotImplementedError)   a setting the small client does not handle: use psycopg
├── WireUnavailable (ConnectionError)   no connection: unreachable, refused login, timeout, lost
└── ServerError   the server refused a statement; the connection stays usable
"""

from __future__ import annotations


class WireError(Exception):
    """Root of the small PostgreSQL client's errors."""


class WireUnsupported(WireError, NotImplementedError):
    """The connection needs something only libpq (psycopg) does; ``reason`` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WireUnavailable(WireError, ConnectionError):
    """The server cannot be reached, refused the login, timed out, or the connection broke.

    ``sqlstate`` is set when the server itself said why (e.g. 28P01, wrong password).
    The message never contains the password.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


class ServerError(WireError):
    """An ErrorResponse to a statement: the batch was rolled back, the connection is usable."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str,
        severity: str,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{severity}: {message} (SQLSTATE {sqlstate})")
        self.message = message
        self.sqlstate = sqlstate
        self.severity = severity
        self.detail = detail
        self.hint = hint
