"""How Debezium 3.6.1 reads the table names cdc hands it, and how cdc spells them. Pure.

Read in Debezium's source at tag v3.6.1.Final (debezium-connector-common, -postgres, -util):

* Regex settings -- table.include.list, message.key.columns, replica.identity.autoset.values,
  the reselect column list -- are matched with ``matches()`` against the UNQUOTED identifier
  "schema.table" (TableId.toString; ColumnId "schema.table.column"; reselect
  "schema.table:column"), case-insensitively (Predicates.includes compiles with
  CASE_INSENSITIVE). Lists split on "," (Strings.RegExSplitter), message.key.columns also on
  ";" then ":" and joins table and column regex with "." (Key.CustomKeyMapper), autoset entries
  must match ``[^\\s:]+:FULL``. So every name is regex-escaped (java_regex_escape spells
  blanks and , ; : as \\xNN), NOT anchored (a "$" before the joined ".column" can never match),
  and starts with ``(?-i)``: Postgres names are case-sensitive.
* The execute-snapshot signal (ExecuteSnapshot -> AbstractIncrementalSnapshotChangeEventSource.
  expandAndDedupeDataCollectionIds -> AbstractIncrementalSnapshotContext.buildDataCollection):
  each data-collections entry is compiled as a Java regex and matched against every captured
  table's unquoted identifier; a match is replaced by that identifier, else the entry is kept.
  Then TableId.parse (TableIdParser; two parts = schema, table): parts split on ".", a part
  may be quoted with " ' or ` (the quote doubled inside), whitespace ends an unquoted part, and
  afterwards '' "" `` become one character in every part. What does not parse is logged
  ("Unable to parse table identifier from ... Skipping it.") and dropped: the bug of issue 11.
  So a table is sent as "schema"."table" (quotes doubled), which parses and never matches an
  identifier as a regex -- as long as it compiles as a Java regex; when it might not (regex
  metacharacters), the escaped identifier is sent and Debezium swaps in the identifier.
* replica.identity.autoset.values runs ``ALTER TABLE <schema.table unquoted> REPLICA IDENTITY
  FULL`` (PostgresConnection.setReplicaIdentityForTable): a syntax error for blanks and keywords,
  and for capitals a statement on the lowercase name, i.e. possibly ANOTHER table. cdc sets FULL
  itself before adding a table; the setting is rendered only for names unquoted SQL spells
  unchanged (autoset_safe). Debezium reads the current identity with bound parameters first, so
  on a table already FULL it runs nothing.
* But an incremental snapshot keeps the tables still to read in the connector's offsets as
  unquoted identifiers (SnapshotDataCollection, "TODO Handle non-standard table ids") and
  parses them back after EVERY offset commit (PostgresConnectorTask.performCommit ->
  OffsetContext.Loader) and at task start. Seen here: a 200,000-row table "Big One"."Rows" killed
  the task within a second ("IllegalArgumentException: Unexpected input: O"); a name with a
  dot parses into three parts, i.e. another table, after a restart. So such tables (a part with
  a blank, a dot, a leading quote or a doubled quote: snapshot_type) get a BLOCKING snapshot
  (ExecuteSnapshot type "blocking" -> ChangeEventSourceCoordinator.doBlockingSnapshot): streaming
  pauses while the table is read, its data-collections entry is a regex matched against the
  unquoted identifier (RelationalSnapshotChangeEventSource.determineDataCollectionsToBeSnapshotted),
  and nothing about the table goes into the offsets. Neither kind survives a task restart in
  the middle (a blocking one is not resumed), so cdc does not restart the task while any
  snapshot runs (cdc.mirrors.snapshot.wait_idle).
"""

from __future__ import annotations

import re

_REGEX_META = set("\\[]{}*+?|")      # may make a string an invalid Java regex (parentheses: checked)
_QUOTES = "\"'`"
_AUTOSET_SAFE = re.compile(r"[a-z_][a-z0-9_]*")


def java_regex_escape(text: str) -> str:
    """Escape for a Java regex: backslash every ASCII non-alphanumeric except '_'.

    Java treats a backslash before any non-alphabetic character as that literal character,
    and Debezium's list splitter turns the resulting "\\," back into a literal comma."""
    def esc(ch: str) -> str:
        if ch.isspace() or ch in ":,;":
            # Debezium's list parsers split on these or reject whitespace outright
            # (replica.identity.autoset.values), so spell them as \\xNN / \\uNNNN.
            return f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
        return f"\\{ch}" if ch.isascii() and not (ch.isalnum() or ch == "_") else ch
    return "".join(esc(ch) for ch in text)


def identifier(schema: str, table: str) -> str:
    """Debezium's identifier of a Postgres table (TableId.identifier()): unquoted, as it appears
    in notifications and logs."""
    return f"{schema}.{table}"


def table_regex(schema: str, table: str) -> str:
    """Case-sensitive regex matching exactly the table's unquoted identifier."""
    return "(?-i)" + java_regex_escape(identifier(schema, table))


def column_regex(column: str) -> str:
    return java_regex_escape(column)


def autoset_safe(schema: str, table: str) -> bool:
    """True when Debezium's unquoted ALTER TABLE names this very table (lowercase ASCII)."""
    return bool(_AUTOSET_SAFE.fullmatch(schema) and _AUTOSET_SAFE.fullmatch(table))


def _java_regex_ok(text: str) -> bool:
    """Conservative: no metacharacter that can make a Java regex invalid, balanced parentheses."""
    if set(text) & _REGEX_META:
        return False
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def _parses_unquoted(part: str) -> bool:
    """TableIdParser reads this part back unchanged when it is not quoted."""
    return bool(part) and "." not in part and not any(ch.isspace() for ch in part) \
        and part[0] not in _QUOTES and not any(q * 2 in part for q in _QUOTES)


def snapshot_type(schema: str, table: str) -> str:
    """"incremental" when Debezium can keep the table in an incremental snapshot's offsets (its
    unquoted identifier parses back unchanged), else "blocking" (see module doc)."""
    return "incremental" if _parses_unquoted(schema) and _parses_unquoted(table) else "blocking"


def signal_data_collection(schema: str, table: str, kind: str) -> str:
    """The table as an execute-snapshot signal's data-collections entry of that type."""
    if kind == "blocking":
        return table_regex(schema, table)       # a regex on the unquoted identifier: any name
    if snapshot_type(schema, table) != "incremental":
        raise ValueError(f"{identifier(schema, table)!r} needs a blocking snapshot")
    quoted = ".".join('"' + p.replace('"', '""') + '"' for p in (schema, table))
    return quoted if _java_regex_ok(quoted) else "^" + java_regex_escape(identifier(schema, table)) + "$"


def condition_regex(schema: str, table: str, entry: str) -> str:
    """The "data-collection" of an additional condition for the table sent as `entry`.
    Debezium 3.6.1 matches it (Pattern.matches) against the data-collections entry as it
    stands after its regex expansion (AbstractIncrementalSnapshotContext.buildDataCollection):
    the entry itself, or the unquoted identifier it was swapped for; this matches both."""
    return "(?:" + java_regex_escape(entry) + "|" + java_regex_escape(identifier(schema, table)) + ")"

