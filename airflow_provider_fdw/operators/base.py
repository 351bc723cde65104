"""What every operator of this provider shares: the local connection and how it gets its hook."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from airflow_provider_fdw.hooks.fdw import FdwHook


def is_templated(value: Any) -> bool:
    """A value Jinja will render at run time: validate it then, not at DAG parse time."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, list | tuple):
        return any(is_templated(v) for v in value)
    if isinstance(value, dict):
        return any(is_templated(v) for v in value.values())
    return False


class FdwBaseOperator(BaseOperator):
    """Base of the provider's operators: no database access in ``__init__``; all work goes to FdwHook.

    :param postgres_conn_id: the ``postgres`` connection of the LOCAL database.
    """

    def __init__(self, *, postgres_conn_id: str = "postgres_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id

    def get_hook(self, fdw_conn_id: str | None = None) -> FdwHook:
        return FdwHook(fdw_conn_id=fdw_conn_id, postgres_conn_id=self.postgres_conn_id)

    def validate(self) -> None:
        """Check arguments; called in ``__init__`` when none is templated, and again in ``execute``."""

    def validate_if_static(self, *values: Any) -> None:
        if not any(is_templated(v) for v in values):
            self.validate()
