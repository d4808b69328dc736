"""How table names are spelled for Debezium 3.6.1 (cdc.mapping.dbz_names).

`parse_table_id` below re-implements TableIdParser + TableId.parse(str, false) of Debezium
3.6.1 (debezium-connector-common, io.debezium.relational) as read, so the signal spelling is
checked against the parser's rules, not against the function that produced it."""

from __future__ import annotations

import re

import pytest

from cdc.core.errors import ConfigError
from cdc.mapping import dbz_names

ODD = [("Sales", "Order Lines"), ("weird.schema", 'Tab"le'), ("public", "select"), ("Ünïcødé", "Grüße"),
       ("public", "it's"), ("a b", 'x""y'), ("public", "a(b"), ("Sales (EU)", "Orders"), ("s", "t,u;v:w")]


def parse_table_id(text: str) -> tuple[str | None, str] | None:
    """TableIdParser: parts split on '.', quoted with " ' or ` (doubled inside), whitespace ends
    an unquoted part; then '' "" `` -> one char in each part. None where Debezium throws."""
    parts, i, n = [], 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] in "\"'`":
            q, i, buf = text[i], i + 1, ""
            while True:
                if i >= n:
                    return None
                if text[i] == q:
                    if i + 1 < n and text[i + 1] == q:
                        buf, i = buf + q + q, i + 2
                        continue
                    i += 1
                    break
                buf, i = buf + text[i], i + 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] != ".":
                i += 1
            buf = text[start:i]
            if not buf:
                return None
        parts.append(buf.replace("''", "'").replace('""', '"').replace("``", "`"))
        while i < n and text[i].isspace():
            i += 1
        if i < n:
            if text[i] != ".":
                return None
            i += 1
            if i >= n:
                return None
    if len(parts) == 2:
        return parts[0], parts[1]
    return (None, parts[0]) if len(parts) == 1 else None


def java_like_fullmatch(regex: str, text: str) -> bool:
    """Our escapes (\\xNN, \\uNNNN, \\<punct>, (?-i)) mean the same in Python's re."""
    return re.fullmatch(regex.replace("(?-i)", ""), text) is not None


def test_the_parser_model_reproduces_the_bug() -> None:
    assert parse_table_id("Sales.Order Lines") is None                    # "Unable to parse ... Skipping it."
    assert parse_table_id('weird.schema.Tab"le') is None                  # three parts: not this table


@pytest.mark.parametrize("schema,table", ODD)
def test_signal_entry_parses_back_to_the_table(schema: str, table: str) -> None:
    entry = dbz_names.signal_data_collection(schema, table)
    if entry.startswith("^"):       # the regex form: Debezium replaces it by the identifier it matches
        assert java_like_fullmatch(entry, f"{schema}.{table}")
        assert parse_table_id(f"{schema}.{table}") == (schema, table)
    else:
        assert parse_table_id(entry) == (schema, table)


def test_quoted_form_is_used_for_blanks_dots_quotes_and_unicode() -> None:
    assert dbz_names.signal_data_collection("Sales", "Order Lines") == '"Sales"."Order Lines"'
    assert dbz_names.signal_data_collection("weird.schema", 'Tab"le') == '"weird.schema"."Tab""le"'
    assert dbz_names.signal_data_collection("Ünïcødé", "Grüße") == '"Ünïcødé"."Grüße"'
    assert dbz_names.signal_data_collection("public", "a(b").startswith("^")   # unbalanced: regex form


@pytest.mark.parametrize("schema,table", [("a b", "c*d"), ("x.y", "[z"), ("s", "it''s"), ("s", "``")])
def test_names_debezium_cannot_read_are_refused_with_a_fix(schema: str, table: str) -> None:
    with pytest.raises(ConfigError) as ei:
        dbz_names.signal_data_collection(schema, table)
    assert "rename" in (ei.value.hint or "") and "new source" in (ei.value.hint or "")


@pytest.mark.parametrize("schema,table", ODD)
def test_table_regex_matches_only_that_table(schema: str, table: str) -> None:
    rx = dbz_names.table_regex(schema, table)
    assert rx.startswith("(?-i)") and not re.search(r"[\s,;:]", rx.replace("(?-i)", ""))
    assert java_like_fullmatch(rx, f"{schema}.{table}")
    assert not java_like_fullmatch(rx, f"{schema}.{table}".lower()) or f"{schema}.{table}".islower()
    assert not java_like_fullmatch(rx, f"{schema}x{table}")


def test_autoset_only_for_names_unquoted_sql_spells_unchanged() -> None:
    assert dbz_names.autoset_safe("public", "orders")
    for schema, table in ODD + [("Public", "orders"), ("public", "Orders")]:
        if (schema, table) != ("public", "select"):
            assert not dbz_names.autoset_safe(schema, table), (schema, table)
