"""Permission errors that say which privilege to grant.

PostgreSQL answers a missing privilege with SQLSTATE 42501 and a message naming the object
("permission denied for schema public", "must be owner of table users"). The provider's session
adds the statement a DBA runs to fix it, for the role that ran the step: locally the connection's
role, on the remote (an error postgres_fdw relays, its context reads "remote SQL command") the
user mapping's remote role. docs/security.md lists every grant up front.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from airflow_provider_fdw.exceptions import INSUFFICIENT_PRIVILEGE, FdwError
from airflow_provider_fdw.session import LocalSession

_DENIED = re.compile(
    r"permission denied for (database|schema|foreign-data wrapper|foreign server) \"?([^\"\s]+)"
)
_DENIED_RELATION = re.compile(
    r"permission denied for (table|view|materialized view|sequence|foreign table|relation) \"?([^\"\s]+)"
)
_OWNER = re.compile(r"must be owner of ([a-z -]+?) \"?([^\"\s]+)\"?$")
_REMOTE_COMMAND = re.compile(r"remote SQL command: (\w+)(.*)", re.S)
_CREATING = ("create", "add", "stag", "import", "move", "prepare", "copy", "index", "rename")
_GRANT_ON = {
    "database": "CREATE ON DATABASE {name}",
    "foreign-data wrapper": "USAGE ON FOREIGN DATA WRAPPER {name}",
    "foreign server": "USAGE ON FOREIGN SERVER {name}",
}


class PrivilegeHintingSession(LocalSession):
    """A :class:`LocalSession` whose permission errors end with the GRANT to run."""

    def __init__(
        self, conn: Any, log: Any, secrets: Any = (), remote_role: Callable[[], str | None] | None = None
    ) -> None:
        super().__init__(conn, log, secrets)
        self.remote_role = remote_role  # looked up only when a remote permission error needs it

    def error(self, step: str, exc: BaseException) -> FdwError:
        err = super().error(step, exc)
        if err.sqlstate != INSUFFICIENT_PRIVILEGE:
            return err
        diag = getattr(exc, "diag", None)
        context = (getattr(diag, "context", None) or "") if diag is not None else ""
        remote_role = self.remote_role() if self.remote_role and "remote SQL command" in context else None
        hint = privilege_hint(step, str(err), _local_role(self.conn), context, remote_role)
        return FdwError(self.redact(f"{err} {hint}"), step=err.step, sqlstate=err.sqlstate)


def privilege_hint(
    step: str, message: str, role: str, context: str = "", remote_role: str | None = None
) -> str:
    """The sentence naming the privilege to grant (and to whom) for one permission error."""
    remote = _REMOTE_COMMAND.search(context)
    if remote:
        verb, rest = remote.group(1).upper(), remote.group(2)
        who = remote_role or "the user mapping's remote role"
        found = _DENIED_RELATION.search(message)
        target = _qualified(found.group(2), rest) if found else "the remote table"
        privilege = verb if verb in ("SELECT", "INSERT", "UPDATE", "DELETE") else "SELECT"
        return (
            f"On the remote server, grant the user mapping's role what this step needs: "
            f"GRANT {privilege} ON {target} TO {who} (and USAGE on its schema)."
        )
    found = _DENIED.search(message)
    if found:
        kind, name = found.groups()
        if kind == "schema":
            creating = any(word in step.lower() for word in _CREATING)
            grant = f"{'CREATE' if creating else 'USAGE'} ON SCHEMA {name}"
        else:
            grant = _GRANT_ON[kind].format(name=name)
        return f"Grant it in the local database: GRANT {grant} TO {role}."
    found = _DENIED_RELATION.search(message)
    if found:
        return (
            f"Grant the role what this step needs on {found.group(2)} in the local database: "
            f"GRANT SELECT / INSERT / UPDATE / DELETE (as the step reads or writes) ON {found.group(2)} "
            f"TO {role}, or run the task as the table's owner."
        )
    found = _OWNER.search(message)
    if found:
        kind, name = found.groups()
        return (
            f"Only the owner may do this: run the task as the owner of {kind} {name}, or "
            f"ALTER {kind.upper()} {name} OWNER TO {role}."
        )
    if "to create extension" in message:
        return "A superuser must run CREATE EXTENSION postgres_fdw in this database once."
    return (
        f"The role {role} lacks a privilege for this step; docs/security.md lists the grants each step needs."
    )


def _qualified(name: str, remote_sql: str) -> str:
    """The schema-qualified spelling of ``name`` in the remote statement, when it has one."""
    for match in re.finditer(r"((?:\"[^\"]+\"|\w+)\.(?:\"[^\"]+\"|\w+))", remote_sql):
        if match.group(1).rsplit(".", 1)[1].strip('"') == name:
            return match.group(1)
    return name


def _local_role(conn: Any) -> str:
    info = getattr(conn, "info", None)
    return getattr(info, "user", None) or "the task's role"
