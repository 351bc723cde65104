"""Errors raised by the provider. Messages name the object and the step, never a secret."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException

# SQLSTATE codes the provider reacts to.
INSUFFICIENT_PRIVILEGE = "42501"
DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"


class FdwError(AirflowException):
    """A database step failed; ``step`` says which, ``sqlstate`` carries the server's code."""

    def __init__(self, message: str, *, step: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.sqlstate = sqlstate


class FdwConfigError(FdwError, ValueError):
    """Bad arguments or connection fields, detected before any SQL runs."""
