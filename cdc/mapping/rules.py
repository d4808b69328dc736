"""A mirror's column rules (MirrorSpec.rules) as the three artifacts apply them. Pure.

Where each rule acts, and why there:

* include / exclude: in Debezium (``column.exclude.list``), so a column left out never reaches
  a Kafka topic (only Postgres' WAL holds it, which is unavoidable), and then in the flatten
  job and the Pinot schema, which are rendered without it. One connector serves every table
  of a source, so the list names ``schema.table.column`` of every table's left-out columns;
  ``column.include.list`` cannot be used (Debezium refuses both lists together, and an include
  list would silence columns of tables that have no rules). An include list is therefore
  rendered as "exclude everything else", computed when the connector config is rendered. The
  key is always kept: excluding a key column is refused.
* mask: in Debezium too, before the change topic (a column mapper turns the value while the
  event is built), so the clear value is in no topic and not in the mirror.
  ``hash`` = ``column.mask.hash.v2.SHA-256.with.salt.<salt>``: hex SHA-256 of the salt's bytes
  followed by the value's UTF-8 bytes (MaskStrings.HashingByteArrayStrategy.V2), cut to the
  column's declared length for varchar(n)/char(n); equal values hash equal across all tables of
  the source (one salt per source), so joins keep working. ``redact`` =
  ``column.mask.with.8.chars``: every value, NULL included, becomes ``********``.
  Debezium masks character columns only (any other type passes through in clear), and never
  the event key, so masking is refused for other types and for key columns.
  The salt is a per-source secret (STATE_DIR/secrets/<source>.mask-salt, 0600). Debezium takes
  it from the property NAME, which Connect's config providers cannot fill from a file, so it
  is in the connector config (Connect's REST API, its config topic, its log). cdc's own
  outputs (plan, REST API, logs) show it as ``<salt>`` (redact_salt). Debezium's reselect
  post-processor (render.py, TOAST) does not apply column mappers, so masked and excluded
  columns are kept out of its list; cdc makes such tables REPLICA IDENTITY FULL, and where it
  cannot (not the owner) an UPDATE that leaves a masked TOASTed value untouched mirrors the mask
  of Debezium's placeholder, never the clear value.
* row_filter and computed_columns: in the flatten job (module docstring of
  flink_sql/mirror.sql.j2), over a view of the row where every visible column (kept and not
  masked) has its Postgres name and the type of VIEW_TYPES. The same text is evaluated by
  Postgres in `cdc mirror verify` (pg_expression, pg_view), so an expression must read the same
  in both: check_expression accepts a strict subset of SQL (_tokens) and no name of the job's
  own columns (JOB_PREFIX), which the view also carries.
* pinot_indexes: in the Pinot table config.
"""

from __future__ import annotations

import re
from typing import Any

from cdc.core.errors import ConfigError
from cdc.core.models import Column, MirrorRules, MirrorSpec, TableInfo
from cdc.mapping import dbz_names
from cdc.mapping.typemap import RESERVED_COLUMNS, TypeMapping, map_table, normalize_type

HASH_ALGORITHM = "SHA-256"
REDACT_CHARS = 8
REDACTED = "*" * REDACT_CHARS
MIN_HASH_CHARS = 16                  # varchar(n)/char(n): Debezium cuts the hex digest to n characters
MASKABLE_TYPES = frozenset({"text", "varchar", "bpchar"})   # JDBC CHAR/VARCHAR: what Debezium masks
_TEXT_TYPES = frozenset({"text", "varchar", "citext", "name"})   # Flink sees them as STRING (pg_view)
PRIVATE_PREFIX = "__cdc_"            # the flatten job's own aliases (flink_sql/mirror.sql.j2)
COMPUTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_EXPRESSION = 4000
JOB_PREFIX = "__"                    # every column the flatten job adds to the row (__op, __seq, __cdc_c1, ...)
_SALT_KEY = re.compile(r"^(column\.mask\.hash\.v2\.[^.]+\.with\.salt\.)(.+)$")

#: What a row filter or computed expression sees for a column, by Postgres type (others: the
#: value the mirror holds, see cdc/mapping/typemap.py).
VIEW_TYPES = {
    "numeric(p,s), p <= 38": "DECIMAL(p, s)",
    "numeric without precision": "STRING (decimal text; CAST it)",
    "date": "DATE",
    "timestamp, timestamptz": "BIGINT (epoch microseconds, as the mirror holds them)",
}
#: Flink types a computed column may have -> (flat topic type, Pinot type, field kind, pg type for canonical)
_COMPUTED_TYPES: dict[str, tuple[str, str, str, str]] = {
    "TINYINT": ("INT", "INT", "dimension", "int4"), "SMALLINT": ("INT", "INT", "dimension", "int4"),
    "INT": ("INT", "INT", "dimension", "int4"), "INTEGER": ("INT", "INT", "dimension", "int4"),
    "BIGINT": ("BIGINT", "LONG", "dimension", "int8"),
    "FLOAT": ("FLOAT", "FLOAT", "metric", "float4"), "DOUBLE": ("DOUBLE", "DOUBLE", "metric", "float8"),
    "DECIMAL": ("STRING", "BIG_DECIMAL", "metric", "numeric"),
    "BOOLEAN": ("BOOLEAN", "BOOLEAN", "dimension", "bool"),
    "CHAR": ("STRING", "STRING", "dimension", "text"), "VARCHAR": ("STRING", "STRING", "dimension", "text"),
    "STRING": ("STRING", "STRING", "dimension", "text"),
    "DATE": ("STRING", "STRING", "dimension", "date"),
}
_INDEX_LISTS = {"inverted": "invertedIndexColumns", "range": "rangeIndexColumns", "json": "jsonIndexColumns",
                "no_dictionary": "noDictionaryColumns"}


# ---------------------------------------------------------------- which columns

def kept_columns(rules: MirrorRules, table: TableInfo, keys: list[str]) -> list[str]:
    """Postgres columns the mirror carries, in attnum order: include (or all), minus exclude,
    plus the key."""
    include = set(rules.include_columns) if rules.include_columns is not None else None
    return [c.name for c in sorted(table.columns, key=lambda c: c.position)
            if c.name in keys or ((include is None or c.name in include) and c.name not in rules.exclude_columns)]


def visible_columns(rules: MirrorRules, table: TableInfo, keys: list[str]) -> list[str]:
    """Columns a row filter or computed expression may read: kept and not masked (a masked
    value would be compared in Flink as its hash but in Postgres in clear), and not named like
    the job's own columns (JOB_PREFIX), which expressions may not name."""
    return [c for c in kept_columns(rules, table, keys)
            if c not in rules.mask_columns and not c.startswith(JOB_PREFIX)]


def scoped(spec: MirrorSpec) -> bool:
    """The flatten job needs the view scope (a row filter or computed columns)."""
    return bool(spec.rules.row_filter or spec.rules.computed_columns)


# ---------------------------------------------------------------- validation (no servers)

def _listing(items: list[str]) -> str:
    return ", ".join(repr(i) for i in items)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_OPERATORS = ("<>", "<=", ">=", "||", "(", ")", "[", "]", ",", "+", "-", "*", "/", "%", "=", "<", ">")
_QUOTED_NAME = re.compile(r"[\w .-]+")
_SPACE = " \t\r\n"
_REFUSED = {";": "one expression: no ';'", "--": "no comments", "/*": "no comments",
            "//": "no comments (Flink reads // as one)", "\\": "no backslashes (escapes differ between Flink and "
            "Postgres, and with Postgres' standard_conforming_strings)", "$": "no $ (Postgres dollar quoting and "
            "parameters)", '"': "quote identifiers with backticks, `Name` (Flink SQL; verify gives Postgres "
            "double quotes)"}


def _tokens(field: str, text: str) -> list[tuple[str, str]]:
    """(kind, text) of a row filter or computed expression: word, name (backtick-quoted, without
    its quotes), string (with its quotes), number, op. Strict on purpose: only what Flink SQL and
    Postgres read the same way (one tokenizer's view of quotes and comments must be the only
    one), so a ConfigError for anything else: comments of either dialect, ';', backslashes,
    prefixed literals (E'', U&'', X'', N''), $ quoting, double-quoted or odd quoted names,
    qualified names, characters outside ASCII outside quotes."""
    def refuse(what: str, why: str) -> ConfigError:
        return ConfigError(f"{field}: {what} is not allowed in an expression ({why})",
                           hint=f"a filter or computed column is one simple Flink SQL expression; change {text[:80]!r}")
    out: list[tuple[str, str]] = []
    i, depth = 0, 0
    while i < len(text):
        ch = text[i]
        bad = next((t for t in ("--", "/*", "//") if text.startswith(t, i)), None) or \
            (ch if ch in _REFUSED else None)
        if bad is not None:
            raise refuse(repr(bad), _REFUSED[bad])
        if ch in _SPACE:
            i += 1
        elif ch == "'":
            j = i + 1
            while j < len(text) and (text[j] != "'" or text[j + 1:j + 2] == "'"):
                j += 2 if text[j] == "'" else 1
            if j >= len(text):
                raise ConfigError(f"{field}: unbalanced quote ' in {text[:80]!r}",
                                  hint="close every quote inside the expression ('' is a quote inside a string)")
            body = text[i:j + 1]
            if "\\" in body:
                raise refuse(repr("\\"), _REFUSED["\\"])
            if "\x00" in body:
                raise refuse("a NUL character", "Postgres cannot hold it")
            out.append(("string", body))
            i = j + 1
        elif ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise ConfigError(f"{field}: unbalanced quote ` in {text[:80]!r}",
                                  hint="close every backtick-quoted name inside the expression")
            name = text[i + 1:j]
            if not _QUOTED_NAME.fullmatch(name) or text[j + 1:j + 2] == "`":
                raise ConfigError(f"{field}: the backtick-quoted name {text[i:j + 2][:70]!r} holds characters cdc "
                                  "does not pass to both Flink and Postgres",
                                  hint="a quoted name may hold letters, digits, _, space, - and .; exclude other "
                                       "columns from expressions (or rename them)")
            out.append(("name", name))
            i = j + 1
        elif _WORD.match(text, i):
            word = _WORD.match(text, i).group(0)        # type: ignore[union-attr]
            i += len(word)
            if text[i:i + 1] in ("'", "`"):
                raise refuse(f"a quote right after a word ({word}{text[i]}...)", "E'', U&'', X'' and N'' literals "
                             "mean different things to Flink and Postgres; put a space after a keyword: DATE '...'")
            out.append(("word", word))
        elif "0" <= ch <= "9":
            num = _NUMBER.match(text, i).group(0)       # type: ignore[union-attr]
            i += len(num)
            if i < len(text) and (text[i].isalnum() or text[i] in "_."):
                raise ConfigError(f"{field}: malformed number {text[i - len(num):i + 8]!r}",
                                  hint="write numbers as 12, 1.5 or 1.5e3 (no 0x, no _ separators, no trailing "
                                       "letters)")
            out.append(("number", num))
        elif op := next((o for o in _OPERATORS if text.startswith(o, i)), None):
            depth += {"(": 1, ")": -1}.get(op, 0)
            if depth < 0:
                break
            out.append(("op", op))
            i += len(op)
        elif ch == ".":
            raise refuse("'.' outside a number", "no qualified names such as t.column: name the column alone; "
                         "write 0.5, not .5")
        else:
            raise refuse(repr(ch), "not part of the simple expressions cdc accepts")
    if depth != 0:
        raise ConfigError(f"{field}: unbalanced parentheses in {text[:80]!r}",
                          hint="close every parenthesis and quote inside the expression")
    return out


def check_expression(field: str, text: str, columns: list[str] | None = None) -> None:
    """One SQL expression that stays inside the parentheses cdc puts around it and that Flink
    and Postgres (verify) read alike (_tokens), not empty, naming none of the job's own
    columns. ``columns``: the table's column names, to refuse an unquoted name with capitals
    (Flink keeps the case of an unquoted name, Postgres folds it to lower case)."""
    if not text.strip():
        raise ConfigError(f"{field} is empty", hint="give a SQL expression, e.g. amount > 0")
    if len(text) > MAX_EXPRESSION:
        raise ConfigError(f"{field} is longer than {MAX_EXPRESSION} characters", hint="shorten the expression")
    if "@statement" in text:
        raise ConfigError(f"{field}: '@statement' is not allowed (it separates the job's statements)",
                          hint="remove it from the expression")
    for kind, tok in _tokens(field, text):
        if kind in ("word", "name") and tok.startswith(JOB_PREFIX):
            raise ConfigError(f"{field}: {tok!r} starts with {JOB_PREFIX!r}, the prefix of the flatten job's own "
                              "columns (__op, __seq, __deleted, __cdc_c<N>, ...), which expressions cannot read",
                              hint="read only the table's columns (those not starting with '__')")
        if kind == "word" and tok != tok.lower() and tok in (columns or []):
            raise ConfigError(f"{field}: {tok} is unquoted: Flink reads it as the column \"{tok}\", Postgres "
                              f"(cdc mirror verify) as {tok.lower()}",
                              hint=f"quote column names with capitals in backticks: `{tok}` (a keyword or function "
                                   "of that name: write it in lower case)")


def check(spec: MirrorSpec, table: TableInfo, keys: list[str]) -> None:
    """Every rule names columns that exist and fit, before anything is created or a server asked.
    Errors name the field (and the CLI flag) and what to do."""
    r = spec.rules
    cols = {c.name: c for c in table.columns}
    known = f"columns of {table.qualified}: {_listing(sorted(cols))}"

    def unknown(field: str, given: list[str]) -> None:
        missing = [c for c in given if c not in cols]
        if missing:
            raise ConfigError(f"{field}: unknown column(s) {_listing(missing)}", hint=known)
    unknown("rules.include_columns (--include)", list(r.include_columns or []))
    unknown("rules.exclude_columns (--exclude)", r.exclude_columns)
    unknown("rules.mask_columns (--mask)", list(r.mask_columns))
    if both := sorted(set(r.include_columns or []) & set(r.exclude_columns)):
        raise ConfigError(f"column(s) {_listing(both)} are both included and excluded",
                          hint="name each column in --include or --exclude, not both")
    if key_out := [k for k in keys if k in r.exclude_columns]:
        raise ConfigError(f"rules.exclude_columns (--exclude): {_listing(key_out)} are key columns; the mirror "
                          "is keyed by them, so they are always kept", hint="remove them from --exclude")
    kept = kept_columns(r, table, keys)
    for col, method in r.mask_columns.items():
        _check_mask(col, method, cols[col], kept, keys)
    mirror_names = {m.column: m.name for m in map_table(table) if m.column in kept}   # as rendered
    for name, expr in r.computed_columns.items():
        field = f"rules.computed_columns[{name!r}] (--compute)"
        if not COMPUTED_NAME.fullmatch(name) or name.startswith("__"):
            raise ConfigError(f"{field}: {name!r} is not a usable column name",
                              hint="letters, digits and _ (not starting with a digit or '__'), at most 128")
        if name in mirror_names.values() or name in RESERVED_COLUMNS or name in cols:
            raise ConfigError(f"{field}: {name!r} is already a column of the mirror or the table",
                              hint="choose another name for the computed column")
        check_expression(field, expr, list(cols))
    if r.row_filter is not None:
        check_expression("rules.row_filter (--filter)", r.row_filter, list(cols))
    if scoped(spec) and (private := [c for c in cols if c.startswith(PRIVATE_PREFIX)]):
        raise ConfigError(f"column(s) {_listing(private)} start with {PRIVATE_PREFIX!r}, which the flatten job "
                          "uses for itself when a mirror has a row filter or computed columns",
                          hint="rename the column, or mirror the table without --filter / --compute")
    for col, kinds in r.pinot_indexes.items():
        field = f"rules.pinot_indexes[{col!r}] (--index)"
        if col not in kept and col not in r.computed_columns:
            why = "is not mirrored (excluded)" if col in cols else "is neither a column nor a computed column"
            raise ConfigError(f"{field}: {col!r} {why}", hint=f"index a mirrored column; {known}")
        if not kinds or len(set(kinds)) != len(kinds):
            raise ConfigError(f"{field}: give each index kind once, at least one",
                              hint="e.g. --index region=inverted,range")


def _check_mask(col: str, method: str, c: Column, kept: list[str], keys: list[str]) -> None:
    field = f"rules.mask_columns[{col!r}] (--mask)"
    if col in keys:
        raise ConfigError(f"{field}: {col!r} is a key column; Debezium never masks the event key, so its clear "
                          "value would reach Kafka", hint="mask a non-key column, or mirror with another --key")
    if col not in kept:
        raise ConfigError(f"{field}: {col!r} is excluded, there is nothing to mask",
                          hint="either exclude the column or mask it")
    base = normalize_type(c.base_type)
    if c.kind not in ("base", "domain") or base not in MASKABLE_TYPES:
        raise ConfigError(f"{field}: {col!r} has type {c.type_name}; Debezium masks only text, varchar and char "
                          "columns and would pass this one through in clear",
                          hint="exclude the column instead (--exclude), or mirror a text column derived from it")
    if method == "hash" and base != "text" and c.precision is not None and c.precision < MIN_HASH_CHARS:
        raise ConfigError(f"{field}: {col!r} is {c.type_name}; Debezium cuts the hash to the column's length "
                          f"({c.precision} hex characters), too short to keep values apart",
                          hint=f"hash columns of at least {MIN_HASH_CHARS} characters, or use redact / --exclude")


# ---------------------------------------------------------------- Debezium

def column_regex(table: TableInfo, column: str) -> str:
    """A column as Debezium's column lists match it: "schema.table.column", case-sensitive."""
    return dbz_names.table_regex(table.schema_name, table.table_name) + r"\." + dbz_names.column_regex(column)


def hidden_columns(rules: MirrorRules, table: TableInfo, keys: list[str]) -> set[str]:
    """Columns whose clear value must not be re-read into an event (the reselect post-processor
    does not apply Debezium's column mappers): excluded and masked ones."""
    kept = kept_columns(rules, table, keys)
    return {c.name for c in table.columns if c.name not in kept} | set(rules.mask_columns)


def connector_settings(tables: list[tuple[TableInfo, MirrorRules, list[str]]], salt: str | None) -> dict[str, str]:
    """Debezium column settings for every (table, rules, key) of one connector; {} without rules."""
    excluded: list[str] = []
    masked: dict[str, list[str]] = {"hash": [], "redact": []}
    for table, rules, keys in tables:
        kept = kept_columns(rules, table, keys)
        excluded += [column_regex(table, c.name) for c in sorted(table.columns, key=lambda c: c.position)
                     if c.name not in kept]
        for col, method in rules.mask_columns.items():
            masked[method].append(column_regex(table, col))
    out: dict[str, str] = {}
    if excluded:
        out["column.exclude.list"] = ",".join(excluded)
    if masked["hash"]:
        if not salt:
            raise ConfigError("a mirror hashes a column but the source has no mask salt",
                              hint="the salt is made in STATE_DIR/secrets when a mirror that hashes is added; "
                                   "is that folder writable?")
        out[f"column.mask.hash.v2.{HASH_ALGORITHM}.with.salt.{salt}"] = ",".join(masked["hash"])
    if masked["redact"]:
        out[f"column.mask.with.{REDACT_CHARS}.chars"] = ",".join(masked["redact"])
    return out


def redact_salt(config: dict[str, Any]) -> dict[str, Any]:
    """The connector config for showing (plan, REST, logs): the salt in a property name as <salt>."""
    return {_SALT_KEY.sub(r"\1<salt>", k): v for k, v in config.items()}


# ---------------------------------------------------------------- Flink

def view_expr(m: TypeMapping, col: Column, ref: str) -> str:
    """The column as row filters and computed expressions see it (VIEW_TYPES); ``ref`` is the
    raw Debezium value."""
    base = normalize_type(col.base_type)
    if col.kind in ("base", "domain") and base == "numeric" and col.precision and col.precision <= 38:
        return f"TRY_CAST({m.expr(ref)} AS DECIMAL({col.precision}, {col.scale or 0}))"
    if col.kind in ("base", "domain") and base == "date":
        return f"TIMESTAMPADD(DAY, {ref}, DATE '1970-01-01')"
    return m.expr(ref)


def computed_mapping(name: str, flink_type: str) -> TypeMapping:
    """How a computed column travels, from the Flink planner's type of its expression."""
    base = re.sub(r"\s+NOT NULL$", "", flink_type.strip().upper())
    word = re.match(r"[A-Z]+", base)
    if word is None or word.group(0) not in _COMPUTED_TYPES or base.startswith("TIMESTAMP"):
        raise ConfigError(f"rules.computed_columns[{name!r}] (--compute): Flink types the expression {flink_type}, "
                          "which cdc does not store in Pinot",
                          hint="CAST it to BIGINT, INT, DOUBLE, DECIMAL(p, s), BOOLEAN, DATE or STRING")
    flat, pinot, kind, pg = _COMPUTED_TYPES[word.group(0)]
    return TypeMapping(column=name, pg_type=pg, debezium_json="computed", flink_row_type=flat, flink_type=flat,
                       pinot_type=pinot, single_value=True, field_kind=kind,  # type: ignore[arg-type]
                       returns=f"computed ({flink_type})", name=name)


def computed_mappings(spec: MirrorSpec) -> list[TypeMapping]:
    """The computed columns in rule order; their types must have been planned."""
    missing = [n for n in spec.rules.computed_columns if n not in spec.computed_types]
    if missing:
        raise ConfigError(f"computed column(s) {_listing(missing)} have no planned type",
                          hint="plan the mirror again (`cdc mirror plan ...`): Flink's planner types each expression")
    return [computed_mapping(n, spec.computed_types[n]) for n in spec.rules.computed_columns]


# ---------------------------------------------------------------- Pinot

def pinot_indexes(rules: MirrorRules, mirror_name: dict[str, str]) -> tuple[dict[str, list[str]], list[dict]]:
    """(tableIndexConfig lists, fieldConfigList) for rules.pinot_indexes; ``mirror_name`` maps a
    Postgres or computed column to its mirror column."""
    lists: dict[str, list[str]] = {}
    fields: list[dict[str, Any]] = []
    for col, kinds in rules.pinot_indexes.items():
        name = mirror_name.get(col, col)
        for kind in kinds:
            if kind == "text":
                fields.append({"name": name, "encodingType": "RAW", "indexTypes": ["TEXT"]})
            else:
                lists.setdefault(_INDEX_LISTS[kind], []).append(name)
    return lists, fields


# ---------------------------------------------------------------- Postgres (verify's oracle)

def pg_expression(text: str, field: str = "rules.row_filter (--filter)") -> str:
    """A Flink SQL expression as Postgres reads it: `name` identifiers become "name" (the only
    spelling the two differ in that cdc translates; '%' doubled for psycopg's placeholders).
    Checked again first (check_expression): a rule stored before the checker was strict never
    reaches Postgres."""
    check_expression(field, text)
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch in "'`":
            j = i + 1
            while j < len(text) and not (text[j] == ch and text[j + 1:j + 2] != ch):
                j += 2 if text[j] == ch else 1
            body = text[i + 1:j]
            out.append(f"'{body}'" if ch == "'" else '"' + body.replace("``", "`").replace('"', '""') + '"')
            i = j + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out).replace("%", "%%")


def pg_view(rules: MirrorRules, table: TableInfo, keys: list[str], alias: str) -> list[str]:
    """SELECT list of the columns a row filter reads, as the flatten job shows them (VIEW_TYPES),
    so that the filter means in Postgres what it means in Flink: timestamps as epoch
    microseconds (Debezium's sentinels for +-infinity); numerics with NaN and +-Infinity as NULL
    (the job's conversion), as text where Flink sees a STRING; character columns as text in
    code-point order (COLLATE "C": Flink compares strings by code point, Postgres by the
    database's collation; citext case-sensitively), char(n) with its blank padding (Flink gets
    the padded value, where Postgres' bpchar comparison ignores it); others as they are."""
    from cdc.mapping.typemap import TS_NEG_INFINITY, TS_POS_INFINITY
    out = []
    for name in visible_columns(rules, table, keys):
        c = table.column(name)
        q = f'{alias}."{name.replace(chr(34), chr(34) * 2)}"'
        base, plain = normalize_type(c.base_type), c.kind in ("base", "domain")
        if plain and base in ("timestamp", "timestamptz"):
            q = (f"CASE WHEN {q} = 'infinity' THEN {TS_POS_INFINITY}::bigint WHEN {q} = '-infinity' THEN "
                 f"{TS_NEG_INFINITY}::bigint ELSE (extract(epoch FROM {q}) * 1000000)::bigint END")
        elif plain and base == "numeric":
            value = q if c.precision and c.precision <= 38 else f"{q}::text"     # as view_expr
            q = f"CASE WHEN {q}::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE {value} END"
        elif plain and base == "bpchar":
            q = f'rpad({q}::text, {c.precision}) COLLATE "C"' if c.precision else \
                f'(CASE WHEN {q} IS NOT NULL THEN concat({q}) END) COLLATE "C"'   # no length: as stored
        elif c.kind == "enum" or (plain and base in _TEXT_TYPES):
            q = f'{q}::text COLLATE "C"'
        out.append(f'{q} AS "{name.replace(chr(34), chr(34) * 2)}"')
    return out


def pg_masked(method: str, col: Column, quoted: str) -> str:
    """Postgres computing what Debezium puts in place of a masked value (module docstring); the
    hash salt is the one %s placeholder of a hashed column."""
    if method == "redact":
        return f"'{REDACTED}'"
    base = normalize_type(col.base_type)
    value = f"rpad({quoted}::text, {col.precision or 1})" if base == "bpchar" else f"{quoted}::text"
    digest = f"encode(sha256(convert_to(%s, 'UTF8') || convert_to({value}, 'UTF8')), 'hex')"
    return f"left({digest}, {col.precision})" if base != "text" and col.precision else digest
