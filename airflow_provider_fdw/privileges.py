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

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import INSUFFICIENT_PRIVILEGE, FdwConfigError, FdwError
from airflow_provider_fdw.names import QualifiedName, quote_if_needed
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


# As GRANT spells them (quote_ident: keywords too): the role after any SET ROLE, the relation's schema
# and name; whether the role may use the schema; the columns of ``columns`` it may not SELECT.
_READABLE_QUERY = sql.SQL(
    "SELECT pg_catalog.quote_ident(current_user), pg_catalog.quote_ident(n.nspname), "
    "pg_catalog.quote_ident(c.relname), pg_catalog.has_schema_privilege(n.oid, 'USAGE'), "
    "ARRAY(SELECT pg_catalog.quote_ident(a.attname) FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = c.oid AND a.attname = ANY(%s::text[]) "
    "AND NOT pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT') ORDER BY a.attnum) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s"
)
_CHECK = "check the source's privileges"


def check_readable(
    s: LocalSession, name: QualifiedName, oid: int, columns: list[str], where: str | None = None
) -> None:
    """Refuse, before anything changes, to read what the task's role may not SELECT of ``name``: the
    ``columns`` and, when given, the columns the (already parsed) ``where`` condition reads.

    A copy reads a foreign table through a private one in ``pg_temp`` (its own fetch size), and the
    direct path reads the remote table itself: neither names ``name``, so PostgreSQL would not check
    the grants a DBA put on it (or took away). The run reads as if the role had written the SELECT.
    """
    role, schema, table, usage, denied = s.fetchrow(_CHECK, _READABLE_QUERY, (columns, oid))
    where_to = "Grant it in the local database:"
    if not usage:
        message = (
            f"role {role} may not use schema {schema}. {where_to} GRANT USAGE ON SCHEMA {schema} TO {role}."
        )
    elif denied:
        listed = ", ".join(denied)
        message = (
            f"role {role} may not read columns {listed} of {schema}.{table}. "
            f"{where_to} GRANT SELECT ({listed}) ON {schema}.{table} TO {role}."
        )
    elif where:
        try:  # EXPLAIN checks the privileges of the statement without running it
            s.execute(_CHECK, q.sql.SQL("EXPLAIN {}").format(q.where_probe(name, where)), quiet=True)
            return
        except FdwError as exc:
            if exc.sqlstate != INSUFFICIENT_PRIVILEGE:
                raise
        message = (
            f"role {role} may not evaluate where on {schema}.{table}. {where_to} SELECT on the columns "
            f"it names, GRANT SELECT (…) ON {schema}.{table} TO {role}, or EXECUTE on the functions it calls."
        )
    else:
        return
    raise FdwError(f"permission denied: {message}", step=_CHECK, sqlstate=INSUFFICIENT_PRIVILEGE)


# Row-level security of the table %(oid)s and of the tables whose foreign keys a delete from it fires
# (as declared: a partitioned referencing table's own policies are those its rows are read through),
# for this role (after any SET ROLE): per table, whether its policies apply to the role and whether,
# for each of SELECT, INSERT, UPDATE and DELETE (of a referencing table: SELECT, which its check
# needs), a permissive policy of the role reaches every row (USING true, WITH CHECK true or none) and
# no restrictive one of the role narrows it (policies apply to the roles whose privileges the role
# has, as pg_has_role's USAGE).
_ROW_SECURITY_QUERY = sql.SQL(
    "WITH t AS (SELECT %(oid)s::oid AS rel, true AS target UNION SELECT conrelid, false "
    "  FROM pg_catalog.pg_constraint WHERE contype = 'f' AND conparentid = 0 AND conrelid <> %(oid)s "
    "  AND confrelid IN " + q.REFERENCED_RELATIONS + "), "
    "p AS (SELECT polrelid, polcmd, polpermissive, "
    "  coalesce(pg_catalog.pg_get_expr(polqual, polrelid), 'true') = 'true' "
    "  AND coalesce(pg_catalog.pg_get_expr(polwithcheck, polrelid), 'true') = 'true' AS every_row "
    "  FROM pg_catalog.pg_policy WHERE polrelid IN (SELECT rel FROM t) AND (0 = ANY(polroles) OR EXISTS "
    "  (SELECT 1 FROM unnest(polroles) AS r WHERE pg_catalog.pg_has_role(current_user, r, 'USAGE')))) "
    "SELECT t.rel::regclass::text, t.target, current_user, "
    "  (SELECT bool_and(EXISTS (SELECT 1 FROM p WHERE p.polrelid = t.rel AND p.polpermissive "
    "      AND p.polcmd IN (c.cmd, '*') AND p.every_row) "
    "    AND NOT EXISTS (SELECT 1 FROM p WHERE p.polrelid = t.rel AND NOT p.polpermissive "
    "      AND p.polcmd IN (c.cmd, '*') AND NOT p.every_row)) "
    "   FROM unnest(CASE WHEN t.target THEN '{r,a,w,d}' ELSE '{r}' END::\"char\"[]) AS c(cmd)) "
    "FROM t WHERE pg_catalog.row_security_active(t.rel) ORDER BY NOT t.target, 1"
)


def check_policies_do_not_apply(
    s: LocalSession, name: QualifiedName, oid: int, run: str, deletes: bool = False
) -> None:
    """Refuse, before anything changes, a ``run`` that reads the table ``name`` to decide what to write
    when row-level security may hide rows of it from the task's role, or (``deletes``: the run may
    delete or re-key rows) rows of a table referencing it.

    The policies would filter what the run reads and silently skip the rows they protect from its
    UPDATE and DELETE: a replace in place or a mirror would keep rows the source deleted (or add
    hidden rows again), an append would start below the hidden rows and copy them a second time; and
    the check for rows referencing a deleted row would not see them, while the foreign key's ON
    DELETE action (which bypasses the policies) reaches them. Policies that give the role every row
    for every command are not a reason.
    """
    for table, is_target, role, every_row in s.fetchall(
        "check row-level security", _ROW_SECURITY_QUERY, {"oid": oid}
    ):
        if every_row or not (is_target or deletes):
            continue
        policy = f"CREATE POLICY … ON {table} TO {role} USING (true) WITH CHECK (true)"
        if is_target:
            why = (
                f"{name} has row-level security that applies to role {role}, and no policy of it "
                f"reaches every row: {run} reads {name} to decide what to write, and would see and change "
                f"only the rows the policies let {role} reach, committing a table that is not the source."
            )
        else:
            why = (
                f"{table} references {name} and has row-level security that applies to role {role}: "
                f"{run} could not see which of its rows reference a row it deletes, and the foreign "
                f"key's ON DELETE action would reach them anyway."
            )
        raise FdwConfigError(
            f"{why} Run it as the table's owner (without FORCE ROW LEVEL SECURITY) or as a role with "
            f"BYPASSRLS, or give {role} a policy that reaches every row ({policy}). Nothing was changed."
        )


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
    """The connection's role as a GRANT spells it."""
    user = getattr(getattr(conn, "info", None), "user", None)
    return quote_if_needed(user) if user else "the task's role"
