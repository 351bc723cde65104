"""What every operator of this provider shares: the local connection and how it gets its hook."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from airflow_provider_fdw.cancel import task_identity
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

    ``on_kill`` (worker shutdown, ``execution_timeout``) cancels every statement the task's hooks
    are running, on the local and the remote server, and kills their child processes.

    :param postgres_conn_id: the ``postgres`` connection of the LOCAL database.
    :param connect_timeout: seconds a database login may take (default 10; see ``timeouts``).
    """

    def __init__(
        self, *, postgres_conn_id: str = "postgres_default", connect_timeout: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.connect_timeout = connect_timeout
        self._hooks: list[FdwHook] = []

    def get_hook(self, fdw_conn_id: str | None = None) -> FdwHook:
        hook = FdwHook(
            fdw_conn_id=fdw_conn_id,
            postgres_conn_id=self.postgres_conn_id,
            connect_timeout=self.connect_timeout,
        )
        hook.task_identity = task_identity(_current_context())
        self._hooks.append(hook)
        return hook

    def on_kill(self) -> None:
        for hook in getattr(self, "_hooks", []):
            hook.cancel()

    def validate(self) -> None:
        """Check arguments; called in ``__init__`` when none is templated, and again in ``execute``."""

    def validate_if_static(self, *values: Any) -> None:
        if not any(is_templated(v) for v in values):
            self.validate()


def _current_context() -> Any:
    from airflow.sdk import get_current_context

    try:
        return get_current_context()
    except Exception:  # called outside a running task (tests, scripts): no task identity
        return {}
