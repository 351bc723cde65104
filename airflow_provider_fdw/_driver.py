"""Old name of :mod:`airflow_provider_fdw.compat`, kept while modules switch their imports to it."""

from __future__ import annotations

from airflow_provider_fdw.compat import USE_PSYCOPG3, DriverError, error_fields, make_conninfo, sql

__all__ = ["USE_PSYCOPG3", "DriverError", "error_fields", "make_conninfo", "sql"]
