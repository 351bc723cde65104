"""One plan per feature: the operator builds it once from its arguments and the hook takes it whole."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from airflow_provider_fdw.backfill import BackfillPlan, plan_backfill
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks import fdw as fdw_module
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.embedding import EmbeddingBackfillOperator
from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.refresh import MatviewPlan, plan_refresh
from airflow_provider_fdw.reimport import ImportPlan, plan_import

OPERATORS = [
    (RefreshMaterializedViewOperator, plan_refresh),
    (ImportForeignSchemaOperator, plan_import),
    (EmbeddingBackfillOperator, plan_backfill),
]


class RecordingHook:
    """Stands in for FdwHook: records what the operator hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __enter__(self) -> RecordingHook:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def import_foreign_schema(self, *args: Any) -> list[str]:
        self.calls.append(("import_foreign_schema", args))
        return ["users"]

    def refresh_materialized_views(self, *args: Any) -> list[dict[str, Any]]:
        self.calls.append(("refresh_materialized_views", args))
        return []

    def backfill_embeddings(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("backfill_embeddings", args))
        return {}


@pytest.mark.parametrize(("operator", "planner"), OPERATORS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_plan_argument_is_an_operator_argument_with_the_same_default(operator, planner):
    operator_params = inspect.signature(operator.__init__).parameters
    for name, param in inspect.signature(planner).parameters.items():
        assert name in operator_params, f"{operator.__name__} lacks {name}"
        assert operator_params[name].default == param.default, name


def test_import_operator_hands_the_hook_the_plan_it_built(monkeypatch):
    hook = RecordingHook()
    op = ImportForeignSchemaOperator(
        task_id="imp",
        server_name="src",
        remote_schema="app",
        local_schema="proxy",
        limit_to=["users"],
        analyze=True,
    )
    monkeypatch.setattr(op, "get_hook", lambda *a: hook)
    result = op.execute({})
    ((method, (plan,)),) = hook.calls
    assert method == "import_foreign_schema"
    assert plan == plan_import("src", "app", "proxy", limit_to=["users"], analyze=True)
    assert isinstance(plan, ImportPlan) and plan.analyze
    assert result == {
        "server": "src",
        "remote_schema": "app",
        "local_schema": "proxy",
        "tables": ["users"],
        "analyzed": True,
    }


def test_refresh_operator_hands_the_hook_the_plan_it_built(monkeypatch):
    hook = RecordingHook()
    op = RefreshMaterializedViewOperator(task_id="ref", views=["a.v1", "a.v2"], lock_timeout="5s")
    monkeypatch.setattr(op, "get_hook", lambda *a: hook)
    op.execute({})
    ((method, (plan,)),) = hook.calls
    assert method == "refresh_materialized_views"
    assert isinstance(plan, MatviewPlan)
    assert plan == plan_refresh(["a.v1", "a.v2"], lock_timeout="5s")


def test_backfill_operator_hands_the_hook_the_plan_it_built(monkeypatch):
    hook = RecordingHook()
    op = EmbeddingBackfillOperator(
        task_id="emb", table="public.docs", text_column="body", embedder="pgml", batch_size=7
    )
    monkeypatch.setattr(op, "get_hook", lambda *a: hook)
    op.execute({})
    ((method, (plan, _embedder, dimensions)),) = hook.calls
    assert method == "backfill_embeddings"
    assert isinstance(plan, BackfillPlan)
    assert plan == plan_backfill("public.docs", "body", batch_size=7)
    assert dimensions == 384


def test_templated_arguments_are_checked_when_the_plan_is_built_at_run_time(monkeypatch):
    op = ImportForeignSchemaOperator(
        task_id="imp",
        server_name="{{ params.s }}",
        remote_schema="app",
        local_schema="proxy",
        limit_to=["a"],
        exclude=["b"],
    )  # templated: not checked at parse time
    monkeypatch.setattr(op, "get_hook", lambda *a: RecordingHook())
    op.server_name = "src"  # what rendering does
    with pytest.raises(FdwConfigError, match="either limit_to or exclude"):
        op.execute({})


def test_hook_turns_arguments_into_the_same_plan_as_the_operator(monkeypatch):
    seen: list[Any] = []
    monkeypatch.setattr(fdw_module, "refresh_views", lambda session, plan, log: seen.append(plan) or [])
    monkeypatch.setattr(fdw_module, "import_schema", lambda session, plan, log: seen.append(plan) or [])
    monkeypatch.setattr(FdwHook, "session", None)
    hook = FdwHook(postgres_conn_id="unused")
    hook.refresh_materialized_views("a.v", concurrently=False)
    hook.refresh_materialized_views(plan_refresh("a.v", concurrently=False))
    hook.import_foreign_schema("src", "app", "proxy", exclude=["x"])
    hook.import_foreign_schema(plan_import("src", "app", "proxy", exclude=["x"]))
    assert seen[0] == seen[1] and seen[2] == seen[3]
