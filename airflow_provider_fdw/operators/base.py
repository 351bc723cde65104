"""What every operator of this provider shares: the local connection and how it gets its hook."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

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

    An operator with a feature plan names its builder in ``planner``: the arguments of the same names
    are kept as attributes (rendered in place when templated) and :meth:`plan` builds the plan from
    them, which is where every argument is checked. A new argument of the feature is added to the
    plan, to the operator's signature and to its docstring; nothing else.

    :param postgres_conn_id: the ``postgres`` connection of the LOCAL database.
    :param connect_timeout: seconds a database login may take (default 10; see ``timeouts``).
    """

    planner: ClassVar[Callable[..., Any] | None] = None

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

    def keep_plan_arguments(self, arguments: Mapping[str, Any]) -> None:
        """Keep the planner's arguments (from the operator's ``locals()``) as attributes."""
        for name in self._plan_parameters():
            setattr(self, name, arguments[name])

    def plan(self) -> Any:
        """The feature's plan from the (rendered) arguments; raises on bad input before any SQL."""
        arguments = {name: getattr(self, name) for name in self._plan_parameters()}
        return self.planner(**arguments)  # type: ignore[misc]

    def _plan_parameters(self) -> list[str]:
        if self.planner is None:
            raise TypeError(f"{type(self).__name__} has no planner")
        return list(inspect.signature(self.planner).parameters)

    def validate(self) -> None:
        """Check arguments; called in ``__init__`` when none is templated, and again in ``execute``."""
        if self.planner is not None:
            self.plan()

    def validate_if_static(self, *values: Any) -> None:
        if not any(is_templated(v) for v in values):
            self.validate()


def _current_context() -> Any:
    from airflow.sdk import get_current_context

    try:
        return get_current_context()
    except Exception:  # called outside a running task (tests, scripts): no task identity
        return {}
