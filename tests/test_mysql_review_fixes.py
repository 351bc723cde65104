"""Regressions of an adversarial review of mysql_fdw support (tests/test_wrapper_review.py there): a copy
or an import that reported success with a target that differed from MySQL."""

from __future__ import annotations

import uuid

import pytest
from conftest import local

from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Pair

# -- sql_mode: modes that change what a pushed-down constant means --------------------------------------


def test_an_empty_string_in_a_where_matches_the_empty_rows_whatever_the_connections_sql_mode(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_BACKSLASH_ESCAPES is refused because it changes what a pushed-down string constant means;
    MariaDB's EMPTY_STRING_IS_NULL does too ('' becomes NULL): where="note = ''" then matched no row
    in MySQL, and the copy (verify count agreeing) reported success with the empty-note rows missing."""
    from test_mysql_session_settings import copy as session_copy
    from test_mysql_session_settings import mysql_table

    target = f"public.e_{uuid.uuid4().hex[:8]}"
    try:
        table, foreign = mysql_table(
            mariadb,
            monkeypatch,
            "id int PRIMARY KEY, note varchar(10)",
            sql_mode="ANSI_QUOTES,EMPTY_STRING_IS_NULL",
        )
        mariadb.execute(
            f"INSERT INTO {table} VALUES (1, ''), (2, 'x'), (3, NULL), (4, '')", database=mariadb.database
        )
        session_copy(foreign, target, mode="replace", where="note = ''", verify="count")
    except Exception as exc:  # refused (like NO_BACKSLASH_ESCAPES): acceptable
        assert "EMPTY_STRING_IS_NULL" in str(exc)
        return
    assert [r[0] for r in local(pair, "SELECT id FROM {t} ORDER BY id", t=target)] == [1, 4]
