"""PostgresFdwHook: the ``postgres_fdw`` connection type (the REMOTE database), as Airflow sees it.

What ``Connection.get_hook()`` returns for a ``postgres_fdw`` connection and what the connection form's
Test button calls. Every inherited ``PostgresHook`` method (``get_conn``, ``run``, ``get_records`` …)
talks to THAT connection's database, reached from Airflow with its libpq options; the FDW fields
(``fetch_size`` …) are server options for the LOCAL server and are never passed to the driver.

The shape another wrapper's connection type follows: a field table in ``connection_form`` (the form),
one parser in ``connection`` (fields -> server and user-mapping options), and a hook here with
``conn_name_attr = "fdw_conn_id"`` that connects with the parsed options and implements
``test_connection``. :class:`~airflow_provider_fdw.hooks.fdw.FdwHook` (the LOCAL database) reads the
remote through :attr:`PostgresFdwHook.remote`.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk.log import mask_secret

from airflow_provider_fdw._driver import DriverError, error_fields
from airflow_provider_fdw.cancel import APP_PREFIX
from airflow_provider_fdw.connection import RemoteServer, remote_server_from_connection
from airflow_provider_fdw.connection_form import POSTGRES_FDW
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.timeouts import with_network_defaults

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


class PostgresFdwHook(PostgresHook):
    """The REMOTE database of a ``postgres_fdw`` connection: its fields, validation and Test button.

    :param fdw_conn_id: the ``postgres_fdw`` connection (default ``postgres_fdw_default``).
    :param connect_timeout: seconds a login may take (default 10; see :mod:`airflow_provider_fdw.timeouts`).
    """

    conn_name_attr = "fdw_conn_id"
    default_conn_name = "postgres_fdw_default"
    conn_type = POSTGRES_FDW.conn_type
    hook_name = POSTGRES_FDW.hook_name
    fdw_conn_id: str  # set by DbApiHook.__init__ from conn_name_attr

    def __init__(self, *args: Any, connect_timeout: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout

    @cached_property
    def remote(self) -> RemoteServer:
        """The validated connection (raises :class:`FdwConfigError` naming the bad field)."""
        remote = remote_server_from_connection(self.connection)
        if remote.password:
            mask_secret(remote.password)
        return remote

    def get_conn(self) -> Any:
        """A bounded connection to the remote database, from the connection's libpq options + login."""
        args = with_network_defaults(self.remote.libpq_params(), self.connect_timeout)
        args.setdefault("application_name", APP_PREFIX)
        self.conn = self._create_connection(args)
        return self.conn

    @property
    def sqlalchemy_url(self) -> URL:
        """The same database for SQLAlchemy users (``get_sqlalchemy_engine``, ``get_df``)."""
        from sqlalchemy.engine import URL

        params = self.remote.libpq_params()
        return URL.create(
            drivername=self.sqlalchemy_scheme,
            username=params.pop("user", None),
            password=params.pop("password", None),
            host=params.pop("host", None),
            port=int(params.pop("port")) if params.get("port") else None,
            database=params.pop("dbname", None),
            query={k: str(v) for k, v in params.items() if k != "port"},
        )

    def test_connection(self) -> tuple[bool, str]:
        """Connection form's Test button: validate the FDW fields and log in to the remote as Airflow.

        This proves the credentials and fields; whether the LOCAL server can reach the remote (its
        network view may differ) is what ``FdwHook.check_remote`` and ``CreateForeignServerOperator``
        prove. The password never appears in the message.
        """
        secret = ""
        try:
            secret = self.connection.password or ""
            conn = self.get_conn()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT current_setting('server_version'), current_user")
                    version, user = cur.fetchone()
            finally:
                conn.close()
        except FdwConfigError as exc:
            return False, _masked(str(exc), secret)
        except DriverError as exc:
            return False, _masked(error_fields(exc)["message"], secret)
        return True, f"Connected to PostgreSQL {version} as {user}; FDW fields are valid."


def _masked(message: str, secret: str) -> str:
    return message.replace(secret, "***") if secret else message
