"""A bench run's own ``AIRFLOW_HOME`` (unless one is set), removed when the run ends.

Set ``os.environ["AIRFLOW_HOME"] = airflow_home()`` before anything imports Airflow: it reads the
variable once.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def airflow_home() -> str:
    """The ``AIRFLOW_HOME`` already set, else a new directory removed at exit."""
    if os.environ.get("AIRFLOW_HOME"):
        return os.environ["AIRFLOW_HOME"]
    home = tempfile.mkdtemp(prefix="fdw-bench-airflow-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home
