"""Name validation and parsing, before any SQL runs."""

from __future__ import annotations

import pytest

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import (
    QualifiedName,
    check_identifier,
    check_identifiers,
    check_role,
    parse_qualified_name,
)


@pytest.mark.parametrize("bad", ["", None, 5, "a\x00b", "x" * 64])
def test_bad_identifiers_are_refused(bad):
    with pytest.raises(FdwConfigError):
        check_identifier(bad, "server_name")


def test_any_characters_are_fine_in_an_identifier():
    for name in ['we"ird', "with space", "CamelCase", "données_ü", "x" * 63]:
        assert check_identifier(name, "n") == name


def test_a_bare_string_is_not_a_list_of_tables():
    with pytest.raises(FdwConfigError, match="must be a list"):
        check_identifiers("users", "limit_to")
    with pytest.raises(FdwConfigError, match="must not be empty"):
        check_identifiers([], "limit_to")


def test_only_the_exact_role_keywords_are_keywords():
    assert check_role("CURRENT_USER") == "CURRENT_USER"
    assert check_role("public") == "PUBLIC"  # the catalogs' spelling; no role may be named public
    assert check_role("Analyst") == "Analyst"
    for role_name in ("current_user", "Current_User", "user", "Public", "PuBlIc"):
        assert check_role(role_name) == role_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("analytics.users", ("analytics", "users")),
        ("Analytics.Users", ("analytics", "users")),
        ('"Sales Data"."Q1 ""final"""', ("Sales Data", 'Q1 "final"')),
        ('public."Tbl.With.Dots"', ("public", "Tbl.With.Dots")),
        (("My Schema", "T"), ("My Schema", "T")),
    ],
)
def test_qualified_names_parse_like_postgresql(text, expected):
    assert parse_qualified_name(text, "views") == QualifiedName(*expected)


@pytest.mark.parametrize("bad", ["users", "a.b.c", '"open.x', "a.", ".a", "a .b", ""])
def test_malformed_qualified_names_are_refused(bad):
    with pytest.raises(FdwConfigError):
        parse_qualified_name(bad, "views")


def test_str_of_a_qualified_name_round_trips():
    for name in [QualifiedName("analytics", "users"), QualifiedName("Sales Data", 'Q"1')]:
        assert parse_qualified_name(str(name), "x") == name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("public.ÜBER", QualifiedName("public", "Über")),
        ("public.İstanbul", QualifiedName("public", "İstanbul")),
        ("Straße.MAẞE", QualifiedName("straße", "maẞe")),
        ('"ÜBER".Ünïcode_ABC', QualifiedName("ÜBER", "Ünïcode_abc")),
        ("ΣΊΣΥΦΟΣ.t", QualifiedName("ΣΊΣΥΦΟΣ", "t")),
    ],
)
def test_unquoted_names_fold_only_ascii_letters_like_postgresql(text, expected):
    assert parse_qualified_name(text, "table") == expected
