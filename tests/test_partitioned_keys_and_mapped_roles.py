"""Foreign keys that touch a partition of the target (or the target's partitioned parent), policies on
the tables referencing the target, and the remote role of a user mapping whose options are hidden
(found by a review of the row-level security checks)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid

import pytest
from conftest import SOURCE_DB, RemoteTable, fdw_sandbox, local, map_role_to_reader
from test_rls_targets import PK_COLUMNS, PLAIN_COLUMNS, ROWS

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.sample_data import TARGET_DB, postgres_connection

# -- A. ON DELETE actions through foreign keys that touch a partition ---------------------------------

SERVER, SANDBOX, SCHEMA = "rev2_src", "rev2", "rev2_data"
ETL, ETL_PASSWORD = "rev2_etl", "Rev2-Etl-Secret-51"


@pytest.fixture(scope="module")
def rev(airflow_connections):
    """As test_rls_targets' fixture: a local role rev2_etl that owns nothing (its own user mapping),
    reached through the connection ``rev2_local``; targets in rev2_data."""
    pair = fdw_sandbox(airflow_connections, SANDBOX, SERVER)
    local(pair, "CREATE ROLE {r} LOGIN PASSWORD {p}", r=ETL, p=sql.Literal(ETL_PASSWORD))
    map_role_to_reader(pair, ETL, SERVER)
    local(pair, "GRANT USAGE ON SCHEMA {s} TO {r}", s=f"proxy_{SANDBOX}", r=ETL)
    local(pair, "CREATE SCHEMA {s}", s=SCHEMA)
    local(pair, "GRANT USAGE, CREATE ON SCHEMA {s} TO {r}", s=SCHEMA, r=ETL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_REV2_LOCAL", postgres_connection(pair.target, TARGET_DB, ETL, ETL_PASSWORD))
        yield pair


class Source(RemoteTable):
    def __init__(self, pair) -> None:
        super().__init__(pair, SANDBOX, SERVER, PLAIN_COLUMNS, remote_columns=PK_COLUMNS)
        self.remote("INSERT INTO {t} SELECT g, 'name ' || g, g %% 7 FROM generate_series(1, %s) g", (ROWS,))
        local(pair, "GRANT SELECT ON {f} TO {r}", f=self.foreign, r=ETL)


def partitioned_target(pair, src: Source, bound: int) -> tuple[str, str, str]:
    """rev2_data.t_<x> PARTITION BY RANGE (id): _a holds ids below ``bound``, _b the rest; the source's
    rows in it; owned (parent and partitions) by rev2_etl, so no policy applies to it."""
    base = f"{SCHEMA}.t_{uuid.uuid4().hex[:8]}"
    low, high = f"{base}_a", f"{base}_b"
    local(pair, "CREATE TABLE {t} (" + PK_COLUMNS + ") PARTITION BY RANGE (id)", t=base)
    local(
        pair, f"CREATE TABLE {{p}} PARTITION OF {{t}} FOR VALUES FROM (MINVALUE) TO ({bound})", p=low, t=base
    )
    local(
        pair, f"CREATE TABLE {{p}} PARTITION OF {{t}} FOR VALUES FROM ({bound}) TO (MAXVALUE)", p=high, t=base
    )
    local(pair, "INSERT INTO {t} SELECT id, name, score FROM {f}", t=base, f=src.foreign)
    for table in (base, low, high):
        local(pair, "ALTER TABLE {t} OWNER TO {r}", t=table, r=ETL)
    return base, low, high


def child_table(pair, references: str, hidden: bool) -> str:
    """A table owned by the superuser whose rows (1, 5) and (2, 6) reference ``references`` ON DELETE
    CASCADE; rev2_etl may read it, and with ``hidden`` a policy hides every row from rev2_etl."""
    child = f"{SCHEMA}.c_{uuid.uuid4().hex[:8]}"
    local(
        pair,
        "CREATE TABLE {c} (id int, parent bigint REFERENCES {t} (id) ON DELETE CASCADE)",
        c=child,
        t=references,
    )
    local(pair, "INSERT INTO {c} VALUES (1, 5), (2, 6)", c=child)
    local(pair, "GRANT SELECT ON {c} TO {r}", c=child, r=ETL)
    if hidden:
        local(pair, "ALTER TABLE {c} ENABLE ROW LEVEL SECURITY", c=child)
        local(pair, "CREATE POLICY only_recent ON {c} FOR SELECT USING (id > 100)", c=child)
    return child


def copy(src: Source, target: str, **kwargs):
    with FdwHook(postgres_conn_id="rev2_local", fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


MODES = pytest.mark.parametrize("mode", ["replace", "mirror"])


@MODES
@pytest.mark.parametrize("hidden", [True, False], ids=["child-rows-hidden", "child-rows-visible"])
@pytest.mark.parametrize("references", ["partition", "parent"])  # "parent": the control, refused today
def test_a_foreign_key_referencing_a_partition_of_the_target_is_seen_before_its_cascade(
    rev, mode, hidden, references
):
    """The target is partitioned; a table references one of its PARTITIONS (``REFERENCES t_a (id) ON
    DELETE CASCADE``). Deleting row 5 through the parent deletes it from t_a and fires the cascade.

    Both checks look for ``pg_constraint.confrelid = <the target>`` only: _ROW_SECURITY_QUERY (so the
    child's policies are never looked at) and REFERENCING_KEYS_QUERY (so check_children /
    check_moved_parents never probe the child). At 9e78c2e: success (``deleted: 1``), and the child's
    row (1, 5) is silently deleted, whether or not the role could see it."""
    src = Source(rev)
    target, low, _ = partitioned_target(rev, src, 50)
    child = child_table(rev, low if references == "partition" else target, hidden)
    src.remote("DELETE FROM {t} WHERE id = 5")
    outcome = None
    with contextlib.suppress(FdwError):
        outcome = copy(src, target, mode=mode)
    assert local(rev, "SELECT id, parent FROM {c} ORDER BY 1", c=child) == [(1, 5), (2, 6)], (
        f"the copy succeeded ({outcome}) and the cascade deleted a referencing row"
    )


@MODES
def test_a_foreign_key_referencing_the_parent_of_a_partition_target_is_seen_before_its_cascade(rev, mode):
    """The target is a PARTITION (t_a) of a partitioned table that a table references (``REFERENCES t
    (id) ON DELETE CASCADE``). PostgreSQL puts the foreign key's action triggers on every partition
    (pg_constraint rows with confrelid = t_a and conparentid <> 0), so deleting row 5 from t_a cascades.

    REFERENCING_KEYS_QUERY keeps ``conparentid = 0`` only, so the referencing-rows checks never probe
    the child. (_ROW_SECURITY_QUERY does see that constraint, so with a policy hiding the child's rows
    the run is refused; without one nothing stops it.) At 9e78c2e: success, row (1, 5) of the child
    deleted by the cascade."""
    src = Source(rev)
    parent, low, _ = partitioned_target(rev, src, 1000)  # every source row is in t_a
    child = child_table(rev, parent, hidden=False)
    src.remote("DELETE FROM {t} WHERE id = 5")
    outcome = None
    with contextlib.suppress(FdwError):
        outcome = copy(src, low, mode=mode)
    assert local(rev, "SELECT id, parent FROM {c} ORDER BY 1", c=child) == [(1, 5), (2, 6)], (
        f"the copy succeeded ({outcome}) and the cascade deleted a referencing row"
    )


@MODES
def test_policies_on_a_partition_of_a_referencing_table_are_no_reason_to_refuse(rev, mode):
    """Minor (a needless refusal, not a wrong target). A partitioned table references the target; one
    of ITS partitions has RLS that hides its rows from rev2_etl, the parent has none. The
    referencing-rows probe reads the parent, where PostgreSQL applies the parent's policies only, so it
    sees every child row (and here no child row references a row the copy deletes). But
    _ROW_SECURITY_QUERY also lists the partition's inherited constraint (conrelid = the partition) and
    refuses: "…_p1 references … and has row-level security that applies to role rev2_etl"."""
    src = Source(rev)
    target = f"{SCHEMA}.t_{uuid.uuid4().hex[:8]}"
    local(rev, "CREATE TABLE {t} (" + PK_COLUMNS + ")", t=target)
    local(rev, "INSERT INTO {t} SELECT id, name, score FROM {f}", t=target, f=src.foreign)
    local(rev, "ALTER TABLE {t} OWNER TO {r}", t=target, r=ETL)
    child = f"{SCHEMA}.c_{uuid.uuid4().hex[:8]}"
    local(
        rev,
        "CREATE TABLE {c} (id int, parent bigint REFERENCES {t} (id) ON DELETE CASCADE) "
        "PARTITION BY RANGE (id)",
        c=child,
        t=target,
    )
    local(
        rev, "CREATE TABLE {p} PARTITION OF {c} FOR VALUES FROM (MINVALUE) TO (100)", p=child + "_p1", c=child
    )
    local(
        rev, "CREATE TABLE {p} PARTITION OF {c} FOR VALUES FROM (100) TO (MAXVALUE)", p=child + "_p2", c=child
    )
    local(rev, "INSERT INTO {c} VALUES (1, 10), (200, 20)", c=child)
    local(rev, "GRANT SELECT ON {c} TO {r}", c=child, r=ETL)
    local(rev, "ALTER TABLE {p} ENABLE ROW LEVEL SECURITY", p=child + "_p1")
    local(rev, "CREATE POLICY hide ON {p} FOR SELECT USING (false)", p=child + "_p1")
    src.remote("DELETE FROM {t} WHERE id = 5")  # no child row references 5
    result = copy(src, target, mode=mode)
    assert result["deleted"] == 1
    assert local(rev, "SELECT id, parent FROM {c} ORDER BY 1", c=child) == [(1, 10), (200, 20)]


# -- B. the remote role learnt through information_schema.enabled_roles --------------------------------

PUB_SERVER, PUB_SCHEMA = "rev2_pub", "rev2pub"
PUB_ETL, PUB_ETL_PASSWORD = "rev2_pub_etl", "Rev2-Pub-Etl-13"
SECOND_SU, SECOND_SU_PASSWORD = "rev2_su", "Rev2-Second-Su-88"
IDLE_ROLE, IDLE_PASSWORD = "rev2_idle", "Rev2-Idle-Reader-4"


@pytest.fixture(scope="module")
def pub(airflow_connections):
    """Two foreign servers to the source with a PUBLIC user mapping each (created by the DBA, so a
    non-owner's pg_user_mappings hides their options, and the direct path asks the remote):

    - ``rev2_pub``: mapped to the source's superuser (``postgres``);
    - ``rev2_idle_pub``: mapped to ``rev2_idle``, a plain remote reader whose sessions have
      ``idle_in_transaction_session_timeout = 1s`` (a common production setting); and
      ``rev2_idle_own`` to the same role through the ETL role's OWN mapping (options visible).

    The local role ``rev2_pub_etl`` (no superuser, owns no server) runs the copies."""
    pair = airflow_connections
    src = pair.source
    src.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(SECOND_SU), sql.Literal(SECOND_SU_PASSWORD)
        )
    )
    src.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(IDLE_ROLE), sql.Literal(IDLE_PASSWORD)
        )
    )
    src.execute(f"ALTER ROLE {IDLE_ROLE} SET idle_in_transaction_session_timeout = '1s'")
    src.execute(f"CREATE SCHEMA {PUB_SCHEMA}", dbname=SOURCE_DB)
    src.execute(f"GRANT USAGE ON SCHEMA {PUB_SCHEMA} TO {IDLE_ROLE}", dbname=SOURCE_DB)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        for server in (PUB_SERVER, "rev2_idle_pub", "rev2_idle_own"):
            hook.create_server(server)
    local(pair, "CREATE ROLE {r} LOGIN PASSWORD {p}", r=PUB_ETL, p=sql.Literal(PUB_ETL_PASSWORD))
    mappings = [
        ("PUBLIC", PUB_SERVER, src.superuser, src.password),
        ("PUBLIC", "rev2_idle_pub", IDLE_ROLE, IDLE_PASSWORD),
        (PUB_ETL, "rev2_idle_own", IDLE_ROLE, IDLE_PASSWORD),
    ]
    for who, server, user, password in mappings:
        local(
            pair,
            "CREATE USER MAPPING FOR " + who + " SERVER {s} OPTIONS (user {u}, password {p})",
            s=server,
            u=sql.Literal(user),
            p=sql.Literal(password),
        )
        local(pair, "GRANT USAGE ON FOREIGN SERVER {s} TO {r}", s=server, r=PUB_ETL)
    local(pair, "CREATE SCHEMA proxy_rev2pub")
    local(pair, "CREATE SCHEMA rev2_out")
    local(pair, "GRANT USAGE ON SCHEMA proxy_rev2pub TO {r}", r=PUB_ETL)
    local(pair, "GRANT USAGE, CREATE ON SCHEMA rev2_out TO {r}", r=PUB_ETL)
    base = json.loads(os.environ["AIRFLOW_CONN_FDW_SOURCE"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(
            "AIRFLOW_CONN_REV2_PUB_ETL",
            postgres_connection(pair.target, TARGET_DB, PUB_ETL, PUB_ETL_PASSWORD),
        )
        mp.setenv(
            "AIRFLOW_CONN_REV2_AS_SECOND_SU",
            json.dumps({**base, "login": SECOND_SU, "password": SECOND_SU_PASSWORD}),
        )
        mp.setenv(
            "AIRFLOW_CONN_REV2_AS_IDLE", json.dumps({**base, "login": IDLE_ROLE, "password": IDLE_PASSWORD})
        )
        yield pair
    src.execute(f"ALTER ROLE {IDLE_ROLE} RESET idle_in_transaction_session_timeout")


def test_two_remote_superusers_are_not_one_role(pub):
    """The PUBLIC mapping logs in as the remote superuser ``postgres``; fdw_conn_id logs in as another
    remote superuser, ``rev2_su``. For a superuser pg_has_role(r, 'USAGE') is true for every role, so
    both see the same information_schema.enabled_roles (every role of the cluster): the probe takes
    them for one role ("Equal sets mean one role") and reads directly. The source is a view that,
    like many multi-tenant views, filters on current_user: through postgres_fdw the foreign table
    shows postgres's row (id 1); the direct path reads rev2_su's row (id 2) and commits it.

    Expected: the direct path is not taken (or reads what the foreign table shows)."""
    pair = pub
    name = f"v_{uuid.uuid4().hex[:8]}"
    pair.source.execute(
        f"CREATE TABLE {PUB_SCHEMA}.{name}_t (id bigint PRIMARY KEY, who name)", dbname=SOURCE_DB
    )
    pair.source.execute(
        f"INSERT INTO {PUB_SCHEMA}.{name}_t VALUES (1, '{pair.source.superuser}'), (2, '{SECOND_SU}')",
        dbname=SOURCE_DB,
    )
    pair.source.execute(
        f"CREATE VIEW {PUB_SCHEMA}.{name} AS SELECT id FROM {PUB_SCHEMA}.{name}_t WHERE who = current_user",
        dbname=SOURCE_DB,
    )
    foreign = f"proxy_rev2pub.{name}"
    local(
        pair,
        f"CREATE FOREIGN TABLE {foreign} (id bigint) SERVER {PUB_SERVER} "
        f"OPTIONS (schema_name '{PUB_SCHEMA}', table_name '{name}')",
    )
    local(pair, "GRANT SELECT ON {f} TO {r}", f=foreign, r=PUB_ETL)
    target = f"rev2_out.{name}"
    with FdwHook(postgres_conn_id="rev2_pub_etl", fdw_conn_id="rev2_as_second_su") as hook:
        shown = sorted(
            hook.session.fetchall(
                "read", sql.SQL("SELECT id FROM {}").format(sql.Identifier("proxy_rev2pub", name))
            )
        )
        hook.session.rollback()
        assert shown == [(1,)]  # what the foreign table shows the task's role
        try:
            result = hook.bulk_copy(plan_copy(foreign, target, transport="copy"))
        except FdwConfigError:
            return  # refused: fine
    assert local(pair, "SELECT id FROM {t}", t=target) == shown, result


@pytest.mark.parametrize("mapping", ["own", "public"])
def test_a_mirror_outlasting_the_remote_idle_timeout_still_commits(pub, mapping):
    """A direct mirror (transport="copy") whose apply takes 3 s (a BEFORE UPDATE trigger on the target
    sleeps), against a remote whose sessions end after 1 s idle in a transaction.

    With the role's OWN mapping (options visible) it commits. With the PUBLIC mapping, fdw_roles
    reads enabled_roles through postgres_fdw inside the mirror's transaction: ROLLBACK TO SAVEPOINT
    ends the remote subtransaction, not postgres_fdw's remote transaction (REPEATABLE READ, with a
    snapshot), which stays idle in transaction until the mirror commits. The remote ends it after 1 s,
    and at COMMIT postgres_fdw's "COMMIT TRANSACTION" fails: the mirror fails after doing all its
    work ("FATAL: terminating connection due to idle-in-transaction timeout ... remote SQL command:
    COMMIT TRANSACTION"). Without the timeout the same session holds back the source's xmin horizon
    for the whole mirror."""
    pair = pub
    name = f"m_{uuid.uuid4().hex[:8]}"
    pair.source.execute(f"CREATE TABLE {PUB_SCHEMA}.{name} ({PK_COLUMNS})", dbname=SOURCE_DB)
    pair.source.execute(
        f"INSERT INTO {PUB_SCHEMA}.{name} SELECT g, 'name ' || g, g % 7 FROM generate_series(1, 69) g",
        dbname=SOURCE_DB,
    )
    pair.source.execute(f"GRANT SELECT ON {PUB_SCHEMA}.{name} TO {IDLE_ROLE}", dbname=SOURCE_DB)
    foreign = f"proxy_rev2pub.{name}"
    server = "rev2_idle_pub" if mapping == "public" else "rev2_idle_own"
    local(
        pair,
        f"CREATE FOREIGN TABLE {foreign} ({PLAIN_COLUMNS}) SERVER {server} "
        f"OPTIONS (schema_name '{PUB_SCHEMA}', table_name '{name}')",
    )
    local(pair, "GRANT SELECT ON {f} TO {r}", f=foreign, r=PUB_ETL)
    target = f"rev2_out.t_{name}"
    local(pair, f"CREATE TABLE {target} ({PK_COLUMNS})")
    local(pair, f"INSERT INTO {target} SELECT g, 'name ' || g, g % 7 FROM generate_series(1, 69) g")
    local(pair, f"ALTER TABLE {target} OWNER TO {PUB_ETL}")
    local(
        pair,
        "CREATE OR REPLACE FUNCTION rev2_out.slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$",
    )
    local(
        pair, f"CREATE TRIGGER slow BEFORE UPDATE ON {target} FOR EACH ROW EXECUTE FUNCTION rev2_out.slow()"
    )
    pair.source.execute(f"UPDATE {PUB_SCHEMA}.{name} SET name = 'changed' WHERE id = 7", dbname=SOURCE_DB)
    with FdwHook(postgres_conn_id="rev2_pub_etl", fdw_conn_id="rev2_as_idle") as hook:
        result = hook.bulk_copy(plan_copy(foreign, target, mode="mirror", transport="copy"))
    assert result["path"] == "direct"
    assert local(pair, f"SELECT name FROM {target} WHERE id = 7") == [("changed",)]
