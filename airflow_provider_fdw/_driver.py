"""Old name of :mod:`airflow_provider_fdw.compat`.

Only bulkcopy/mirror.py (being split on another branch) still imports it: delete it after that merge.
"""

from __future__ import annotations

from airflow_provider_fdw.compat import USE_PSYCOPG3, DriverError, error_fields, make_conninfo, sql

__all__ = ["USE_PSYCOPG3", "DriverError", "error_fields", "make_conninfo", "sql"]
