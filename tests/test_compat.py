"""compat: every psycopg 2 / psycopg 3 difference behind one interface, proved on BOTH drivers against the
real target server (a subprocess each: the driver is chosen when providers-postgres is imported)."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import TARGET_DB, python_json

COMPAT_FLOW = textwrap.dedent(
    """
    import json, sys
    if sys.argv[1] == "psycopg2":
        sys.modules["psycopg"] = None  # as on an install without psycopg 3: PostgresHook uses psycopg2
    from airflow_provider_fdw import compat
    from airflow_provider_fdw.compat import sql
    from fdw_testing.pgcluster import connect

    conn = connect(json.loads(sys.argv[2]), autocommit=False)
    out = {"psycopg3": compat.USE_PSYCOPG3, "module": type(conn).__module__}
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid(), current_setting('server_version_num')::int")
    pid, version = cur.fetchone()
    conn.rollback()
    out["pid_matches"] = compat.backend_pid(conn) == pid
    out["version_matches"] = compat.server_version(conn) == version
    out["scs"] = compat.parameter_status(conn, "standard_conforming_strings")
    out["accepted"] = compat.prepare_only(conn, "SELECT 1 WHERE true LIMIT 0")
    out["refused"] = compat.prepare_only(conn, "SELECT 1 WHERE 42 LIMIT 0")
    cur = conn.cursor()
    cur.execute("CREATE TEMP TABLE compat_src (id int, t text)")
    # rows larger than libpq's 8 kB send buffer: the first row (through Copy.write) and the last
    cur.execute("INSERT INTO compat_src VALUES (-1, repeat('x', 300000))")
    compat.copy_from_bytes(
        conn, sql.SQL("COPY {} FROM STDIN").format(sql.Identifier("compat_src")),
        b"".join(b"%d\\tr%d\\n" % (i, i) for i in range(25_000)),
    )
    cur.execute("INSERT INTO compat_src VALUES (-2, repeat('y', 200000))")
    reports = []
    # The relay's two ends: this session's temp table out, a regular table (named by pid) in.
    table = sql.Identifier(f"compat_dst_{pid}")
    setup = connect(json.loads(sys.argv[2]), autocommit=True)
    setup.cursor().execute(sql.SQL("CREATE TABLE {} (id int, t text)").format(table))
    try:
        local = connect(json.loads(sys.argv[2]), autocommit=False)
        out["copied"] = compat.copy_between(
            conn, local, sql.SQL("COPY compat_src TO STDOUT"), sql.SQL("COPY {} FROM STDIN").format(table),
            reports.append,
        )
        local.commit()
        cur = setup.cursor()
        cur.execute(
            sql.SQL(
                "SELECT count(*), sum(id), max(t) FILTER (WHERE id >= 0), "
                "string_agg(left(t, 1) || length(t), ',' ORDER BY id) FILTER (WHERE id < 0) FROM {}"
            ).format(table)
        )
        out["rows"] = list(cur.fetchone())
        # every row whole (the relay puts rows into libpq's buffer itself)
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE id >= 0 AND t IS DISTINCT FROM 'r' || id").format(table)
        )
        out["torn"] = cur.fetchone()[0]
        out["reports"] = reports
        local.close()
    finally:
        setup.cursor().execute(sql.SQL("DROP TABLE {}").format(table))
        setup.close()
    conn.close()
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_compat_gives_the_same_answers_on_both_drivers(target, driver):
    conninfo = target.conninfo(TARGET_DB)
    out = python_json(COMPAT_FLOW, driver, json.dumps(conninfo))
    assert out["psycopg3"] is (driver == "psycopg3")
    assert out["module"].split(".")[0] == ("psycopg2" if driver == "psycopg2" else "psycopg")
    assert out["pid_matches"] and out["version_matches"]
    assert out["scs"] == "on"
    assert out["accepted"] is None
    assert "argument of WHERE must be type boolean" in out["refused"]
    assert out["copied"] == 25_002
    assert out["rows"] == [25_002, sum(range(25_000)) - 3, "r9999", "y200000,x300000"]
    assert out["reports"] == [10_000, 10_000]
    assert out["torn"] == 0
