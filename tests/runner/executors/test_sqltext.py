"""Named arguments and statement splitting follow PostgreSQL's lexical rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgquartz.runner.executors import sqltext


def test_the_manuals_insert_binds_both_arguments() -> None:
    query, params = sqltext.bind_named(
        "insert into t1 (id, txt) values(:arg1::integer, :arg2)", {"arg1": "1", "arg2": "A"}
    )
    assert query == "insert into t1 (id, txt) values($1::integer, $2)"
    assert params == ["1", "A"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select :a, :a", "select $1, $1"),  # one name, one parameter
        ("select :name10, :name", "select :name10, $1"),  # :name10 is another (unknown) name
        ("select ':a', :a", "select ':a', $1"),
        ("select 'it''s :a', :a", "select 'it''s :a', $1"),
        ("select E'\\' :a', :a", "select E'\\' :a', $1"),
        ('select ":a" from t where x = :a', 'select ":a" from t where x = $1'),
        ("select 1 -- :a\n, :a", "select 1 -- :a\n, $1"),
        ("select /* :a /* nested :a */ :a */ :a", "select /* :a /* nested :a */ :a */ $1"),
        ("select $$ :a $$, :a", "select $$ :a $$, $1"),
        ("select $body$ :a $$ :a $body$, :a", "select $body$ :a $$ :a $body$, $1"),
        ("select :a::text, x::int", "select $1::text, x::int"),
        ("select arr[1:2], arr[:a]", "select arr[1:2], arr[$1]"),
        ("do $$ begin x := 1; end $$", "do $$ begin x := 1; end $$"),
    ],
)
def test_only_real_named_arguments_are_bound(sql: str, expected: str) -> None:
    assert sqltext.bind_named(sql, {"a": "v", "name": "n"})[0] == expected


def test_without_arguments_the_query_is_untouched() -> None:
    assert sqltext.bind_named("select ':x' :x", {}) == ("select ':x' :x", [])


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_hostile_values_never_reach_the_sql_text(value: str) -> None:
    query, params = sqltext.bind_named("insert into t values (:v)", {"v": value})
    assert query == "insert into t values ($1)"
    assert params == [value]


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        ("select 1; select 2;", ["select 1;", "select 2;"]),
        ("select 1; select 2", ["select 1;", "select 2"]),
        ("select 'a;b'; select 2", ["select 'a;b';", "select 2"]),
        ('select 1 as "x;y"; select 2', ['select 1 as "x;y";', "select 2"]),
        ("select 1; -- a; comment\nselect 2", ["select 1;", "-- a; comment\nselect 2"]),
        ("select 1 /* ; */; select 2", ["select 1 /* ; */;", "select 2"]),
        (
            "create function f() returns int language plpgsql as $$ begin return 1; end $$; select f()",
            ["create function f() returns int language plpgsql as $$ begin return 1; end $$;", "select f()"],
        ),
        (
            "create function g() returns int begin atomic select 1; select case when true then 2 end; end;"
            " select g()",
            [
                "create function g() returns int begin atomic select 1; select case when true then 2 end;"
                " end;",
                "select g()",
            ],
        ),
        ("select E'\\';'; select 2", ["select E'\\';';", "select 2"]),
        (";; \n ; -- only a comment\n", []),
    ],
)
def test_batches_split_on_statement_ends_only(sql: str, statements: list[str]) -> None:
    assert sqltext.split_statements(sql) == statements


_NON_ASCII_SAMPLES = [0x80, 0xAA, 0xFF, 0x100, 0x3B1, 0x4E2D, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF]


@pytest.mark.parametrize(
    ("pattern", "ascii_members"),
    [
        (sqltext._START, "_"),
        (sqltext._PART, "_$0123456789"),
        (sqltext._TAG_PART, "_0123456789"),
    ],
)
def test_identifier_classes_hold_letters_their_extras_and_all_non_ascii(
    pattern: str, ascii_members: str
) -> None:
    import re
    import string

    compiled = re.compile(pattern)
    expected = set(string.ascii_letters + ascii_members)
    assert {chr(code) for code in range(128) if compiled.fullmatch(chr(code))} == expected
    assert all(compiled.fullmatch(chr(code)) for code in _NON_ASCII_SAMPLES)


def test_dollar_quote_tags_and_names_with_non_ascii_letters_are_read_as_postgresql_does() -> None:
    query, params = sqltext.bind_named("select $größe$ :a $größe$, :größe, :a", {"a": "1", "größe": "2"})
    assert query == "select $größe$ :a $größe$, $1, $2"
    assert params == ["2", "1"]
    assert sqltext.split_statements("select $t$;$t$; select $1$x;") == ["select $t$;$t$;", "select $1$x;"]
