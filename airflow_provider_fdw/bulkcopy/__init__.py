"""The copy engine: a foreign table into a local table (replace, append, upsert).

:mod:`.plan` checks the arguments once (:func:`plan_copy`); :mod:`.engine` runs the copy top-down
(inspect through :mod:`.inspect`, load through :mod:`.load`, apply through :mod:`.apply`/:mod:`.merge`,
:mod:`.verify`); ``mode='mirror'`` runs :mod:`.mirror` instead.
"""

from airflow_provider_fdw.bulkcopy.engine import BulkCopy
from airflow_provider_fdw.bulkcopy.plan import MODES, VERIFY_MODES, CopyPlan, CopyResult, plan_copy
from airflow_provider_fdw.bulkcopy.relay import PsqlRelay, endpoint, server_message

__all__ = [
    "MODES",
    "VERIFY_MODES",
    "BulkCopy",
    "CopyPlan",
    "CopyResult",
    "PsqlRelay",
    "endpoint",
    "plan_copy",
    "server_message",
]
