"""How table names are spelled for Debezium 3.6.1 (cdc.mapping.dbz_names).

`parse_table_id` below re-implements TableIdParser + TableId.parse(str, false) of Debezium
3.6.1 (debezium-connector-common, io.debezium.relational) as read, so the signal spelling is
checked against the parser's rules, not against the function that produced it."""

from __future__ import annotations

import re

import pytest

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


@pytest.mark.parametrize("schema,table", ODD + [("a b", "c*d"), ("x.y", "[z"), ("s", "it''s"), ("s", "``")])
def test_every_name_gets_a_snapshot_debezium_reads(schema: str, table: str) -> None:
    kind = dbz_names.snapshot_type(schema, table)
    entry = dbz_names.signal_data_collection(schema, table, kind)
    ident = f"{schema}.{table}"
    if kind == "incremental":
        # The offsets keep the unquoted identifier and parse it back after every commit.
        assert parse_table_id(ident) == (schema, table)
        if entry.startswith("^"):   # the regex form: Debezium swaps in the identifier it matches
            assert java_like_fullmatch(entry, ident)
        else:
            assert parse_table_id(entry) == (schema, table)
    else:                           # blocking: a regex matched against the identifier, nothing parsed
        assert parse_table_id(ident) != (schema, table)
        assert java_like_fullmatch(entry, ident) and "," not in entry


def test_which_names_need_a_blocking_snapshot() -> None:
    kinds = {(s, t): dbz_names.snapshot_type(s, t) for s, t in ODD}
    assert [k for k, v in kinds.items() if v == "blocking"] == [
        ("Sales", "Order Lines"), ("weird.schema", 'Tab"le'), ("a b", 'x""y'), ("Sales (EU)", "Orders")]
    assert dbz_names.signal_data_collection("Ünïcødé", "Grüße", "incremental") == '"Ünïcødé"."Grüße"'
    assert dbz_names.signal_data_collection("public", "a(b", "incremental") == r"^public\.a\(b$"
    assert dbz_names.signal_data_collection("Sales", "Order Lines", "blocking") == r"(?-i)Sales\.Order\x20Lines"
    with pytest.raises(ValueError):
        dbz_names.signal_data_collection("Sales", "Order Lines", "incremental")


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
