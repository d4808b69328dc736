"""Apply files (cdc.declarative.file): every error names file, line and field; the schema
and the models agree; the shipped example is valid."""

from __future__ import annotations

import json
import time
import typing
from pathlib import Path

import jsonschema
import pytest

from cdc.core.errors import ConfigError
from cdc.core.models import MaskMethod, MirrorRules, PinotIndex
from cdc.declarative import file as apply_file
from cdc.declarative.file import RULE_FIELDS, FileError, format_loc

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
sources:
  - name: shop
    dsn: postgresql://shop_cdc@db.example:5432/shop
    password_env: SHOP_PW
mirrors:
  - table: public.orders
    source: shop
  - table: '"Sales.EU".items'
    name: eu_items
    key: [order_id, line]
    replica_identity_full: true
    rules:
      include: [order_id, line, sku, email, "tenant id"]
      exclude: [notes]
      mask: {email: hash, "tenant id": redact}
      filter: "sku <> 'x'"
      compute: {sku_upper: UPPER(sku)}
      indexes: {sku: [inverted, range]}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(FileError) as exc:
        apply_file.loads(text, "mirrors.yaml")
    assert isinstance(exc.value, ConfigError)
    return str(exc.value.message).splitlines()


def test_a_good_file_becomes_specs() -> None:
    f = apply_file.loads(GOOD, "mirrors.yaml")
    (src,) = f.sources
    assert (src.name, src.source.host, src.source.database, src.source.has_password, src.password_env, src.line) == \
        ("shop", "db.example", "shop", True, "SHOP_PW", 2)
    orders, items = f.mirrors
    assert (orders.spec.name, orders.spec.source, orders.spec.qualified, orders.line) == \
        ("shop_public_orders", "shop", "public.orders", 6)
    assert orders.spec.rules.is_empty() and not orders.replica_identity_full
    assert (items.spec.name, items.spec.source, items.spec.schema_name, items.spec.table_name) == \
        ("eu_items", "default", "Sales.EU", "items")
    assert items.spec.key_columns == ["order_id", "line"] and items.replica_identity_full
    assert items.spec.rules == MirrorRules(
        include_columns=["order_id", "line", "sku", "email", "tenant id"], exclude_columns=["notes"],
        mask_columns={"email": "hash", "tenant id": "redact"}, row_filter="sku <> 'x'",
        computed_columns={"sku_upper": "UPPER(sku)"}, pinot_indexes={"sku": ["inverted", "range"]})


def test_json_is_accepted_too() -> None:
    body = json.dumps({"mirrors": [{"table": "public.t", "rules": {"exclude": ["b"]}}]}, indent=1)
    (m,) = apply_file.loads(body).mirrors
    assert m.spec.name == "public_t" and m.spec.rules.exclude_columns == ["b"] and m.line == 3


@pytest.mark.parametrize("text, expected", [
    # the example: file, line, field path, why
    ("mirrors:\n  - table: public.a\n  - table: public.b\n    rules:\n      mask:\n        email: sha\n",
     ["mirrors.yaml:6: mirrors[1].rules.mask.email: 'sha' is not one of ['hash', 'redact']"]),
    ("mirrors:\n  - table: t\n    rules:\n      indexes: {c: [bloom]}\n",
     ["mirrors.yaml:4: mirrors[0].rules.indexes.c[0]: 'bloom' is not one of "
      "['inverted', 'range', 'json', 'text', 'no_dictionary']"]),
    ("mirrors:\n  - table: t\n    colour: red\n",
     ["mirrors.yaml:3: mirrors[0].colour: unknown field (expected one of: key, name, replica_identity_full, rules, "
      "source, table)"]),
    ("mirrors:\n  - name: x\n", ["mirrors.yaml:2: mirrors[0]: missing required field table"]),
    ("sources:\n  - {name: s}\n", ["mirrors.yaml:2: sources[0]: missing required field dsn"]),
    ("mirrors:\n  - table: t\n    key: id\n", ["mirrors.yaml:3: mirrors[0].key: 'id' is not of type 'array'"]),
    ("mirrors:\n  - table: t\n    name: Bad__Name\n",
     ["mirrors.yaml:3: mirrors[0].name: 'Bad__Name' does not match '^[a-z][a-z0-9]*(_[a-z0-9]+)*$'"]),
    ("version: 2\nmirrors: []\n", ["mirrors.yaml:1: version: 1 was expected"]),
    ("mirrors:\n  - table: t\n    rules:\n      mask: {\"tenant id\": hide}\n",
     ["mirrors.yaml:4: mirrors[0].rules.mask[\"tenant id\"]: 'hide' is not one of ['hash', 'redact']"]),
    # YAML 1.1 would read the key `no` as false: keys stay the text written
    ("mirrors:\n  - table: t\n    rules:\n      mask:\n        no: nope\n",
     ["mirrors.yaml:5: mirrors[0].rules.mask.no: 'nope' is not one of ['hash', 'redact']"]),
    ("mirrors:\n  - table: t\n  - table: t\n",
     ["mirrors.yaml:3: mirrors[1].table: mirror name 'public_t' is already used by mirrors[0]"]),
    ("mirrors:\n  - table: a\n    name: x\n  - table: public.a\n",
     ["mirrors.yaml:4: mirrors[1].table: public.a of source 'default' is already mirrored by mirrors[0]"]),
    ("mirrors:\n  - table: a.b.c\n",
     ["mirrors.yaml:2: mirrors[0].table: cannot read 'a.b.c' as SCHEMA.TABLE (quote names with dots: "
      "'\"my.schema\".t')"]),
    ("mirrors:\n  - table: t\n    source: shop\n",
     ["mirrors.yaml:3: mirrors[0].source: unknown source 'shop': declare it under `sources:` (only 'default' needs "
      "no declaration)"]),
    ("mirrors:\n  - table: t\n    replica_identity_full: true\n",
     ["mirrors.yaml:3: mirrors[0].replica_identity_full: only applies to a mirror with `key` (a table without a "
      "primary key)"]),
    ("sources:\n  - name: s\n    dsn: postgresql://u:hunter2@h/db\n",
     ["mirrors.yaml:3: sources[0].dsn: the DSN holds a password: remove it and give password_env (an environment "
      "variable's name) or password_file (a file's path) instead"]),
    ("sources:\n  - name: s\n    dsn: host=h password=hunter2\n",
     ["mirrors.yaml:3: sources[0].dsn: the DSN holds a password: remove it and give password_env (an environment "
      "variable's name) or password_file (a file's path) instead"]),
    ("sources:\n  - name: s\n    dsn: postgresql://u@h/db\n    password_env: A\n    password_file: /b\n",
     ["mirrors.yaml:5: sources[0].password_file: give password_env or password_file, not both"]),
    ("sources:\n  - name: default\n    dsn: postgresql://u@h/db\n",
     ["mirrors.yaml:2: sources[0].name: 'default' is the stack's Postgres (or CDC_POSTGRES_DSN): mirrors name it "
      "without declaring it"]),
    ("sources:\n  - {name: s, dsn: 'postgresql://u@h/db'}\n  - {name: s, dsn: 'postgresql://u@h/db2'}\n",
     ["mirrors.yaml:3: sources[1].name: source 's' is already declared by sources[0]"]),
    ("sources:\n  - name: s\n    dsn: postgresql://u@h/db?sslmode=verify-full&sslrootcert=ca.pem\n",
     ["mirrors.yaml:3: sources[0].dsn: source s: sslrootcert='ca.pem' is a relative path (give the absolute path: "
      "Kafka Connect reads the sslrootcert file itself and would resolve a relative path from its own working "
      "directory)"]),
    ("mirrors: []\nmirrors: []\n", ["mirrors.yaml:2: mirrors: duplicate key"]),
    ("", ["mirrors.yaml:1: the file is empty: expected `sources:` and/or `mirrors:`"]),
    ("- table: t\n", ["mirrors.yaml:1: [{\"table\": \"t\"}] is not of type 'object'"]),
    ("mirrors:\n  - table: [\n", ["mirrors.yaml:3: not valid YAML: while parsing a flow node, expected the node "
                                 "content, but found '<stream end>'"]),
    ("mirrors: []\n---\nmirrors: []\n",
     ["mirrors.yaml:2: not valid YAML: expected a single document in the stream, but found another document"]),
    ('mirrors:\n  - table: "a\\0b"\n', ["mirrors.yaml:2: mirrors[0].table: must be UTF-8 text without NUL characters"]),
])
def test_errors_name_file_line_and_field(text: str, expected: list[str]) -> None:
    assert _errors(text) == expected


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = "mirrors:\n  - table: t\n    rules: {mask: {a: sha}}\n  - table: u\n    key: []\n  - {}\n"
    assert _errors(text) == [
        "mirrors.yaml:3: mirrors[0].rules.mask.a: 'sha' is not one of ['hash', 'redact']",
        "mirrors.yaml:5: mirrors[1].key: [] should be non-empty",
        "mirrors.yaml:6: mirrors[2]: missing required field table"]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read .*nope.yaml"):
        apply_file.load(tmp_path / "nope.yaml")


def test_the_error_names_the_path_given(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("mirrors:\n  - table: t\n    rules: {filter: ''}\n")
    with pytest.raises(FileError, match=rf"^{p}:3: mirrors\[0\]\.rules\.filter: '' should be non-empty"):
        apply_file.load(p)


@pytest.mark.parametrize("loc, text", [
    ((), "(top level)"), (("mirrors", 1, "rules", "mask", "email"), "mirrors[1].rules.mask.email"),
    (("mirrors", 0, "rules", "mask", "tenant id"), 'mirrors[0].rules.mask["tenant id"]')])
def test_format_loc(loc: tuple, text: str) -> None:
    assert format_loc(loc) == text


# -- the schema, the models and the example agree -------------------------------------------------

def test_schema_is_valid_draft_2020_12_and_shipped_as_package_data() -> None:
    schema = apply_file.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads((ROOT / "cdc" / "declarative" / "schema.json").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"cdc.declarative" = ["schema.json"]' in pyproject


def test_schema_rules_are_the_models_rules() -> None:
    rules = apply_file.schema()["$defs"]["rules"]["properties"]
    assert set(rules) == set(RULE_FIELDS)
    assert set(RULE_FIELDS.values()) == set(MirrorRules.model_fields), "a MirrorRules field has no file field"
    assert rules["mask"]["additionalProperties"]["enum"] == list(typing.get_args(MaskMethod))
    assert rules["indexes"]["additionalProperties"]["items"]["enum"] == list(typing.get_args(PinotIndex))


def test_the_example_is_valid() -> None:
    f = apply_file.load(ROOT / "examples" / "mirrors.yaml")
    assert [d.name for d in f.sources] == ["shop"] and f.sources[0].password_env
    assert len(f.mirrors) == 3 and any(not m.spec.rules.is_empty() for m in f.mirrors)
    setup = (ROOT / "examples" / "setup.sql").read_text()
    for m in f.mirrors:
        assert f"CREATE TABLE IF NOT EXISTS {m.spec.qualified} " in setup


def test_the_readme_shows_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Declarative mirrors", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    shown, example = apply_file.loads(block), apply_file.load(ROOT / "examples" / "mirrors.yaml")
    assert [d.source for d in shown.sources] == [d.source for d in example.sources]
    assert [d.spec for d in shown.mirrors] == [d.spec for d in example.mirrors]


# -- what a small file must not be able to do -----------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    # an alias of its own container: expanding it never ends (was a RecursionError, a 500 over REST)
    ("mirrors: &a [*a]\n", ["mirrors.yaml:1: mirrors: anchors (&a) and aliases (*a) are not accepted in apply "
                            "files: write each value out"]),
    ("mirrors: &m []\n", ["mirrors.yaml:1: mirrors: anchors (&m) and aliases (*m) are not accepted in apply files: "
                          "write each value out"]),
    ("x: &r {table: t}\nmirrors:\n  - *r\n",
     ["mirrors.yaml:1: x: anchors (&r) and aliases (*r) are not accepted in apply files: write each value out"]),
])
def test_anchors_and_aliases_are_refused(text: str, expected: list[str]) -> None:
    assert _errors(text) == expected


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    """Each level repeats the one before 9 times: 13 levels are 9**13 (2.5e12) nodes from a
    file of ~500 bytes. Refused at the first alias, without building anything."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 14)]
    text = "\n".join(levels) + "\nmirrors: []\n"
    assert len(text) < 1500
    started = time.monotonic()
    problems = _errors(text)
    assert time.monotonic() - started < 1
    assert problems == ["mirrors.yaml:1: a0: anchors (&a0) and aliases (*a0) are not accepted in apply files: "
                        "write each value out"]


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    text = "mirrors: " + "[" * 5000 + "]" * 5000 + "\n"
    assert _errors(text) == ["mirrors.yaml:1: mirrors" + "[0]" * 63 +
                             ": nested deeper than 64 levels (an apply file needs a handful)"]
