"""The plan of an apply file (cdc.declarative.plan.plan), table-driven: a file, what the
registry holds, prune or not -> the actions (in order), their field changes, the problems."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cdc.core.models import MirrorRules, MirrorSpec, Source
from cdc.declarative import file as apply_file
from cdc.declarative.plan import Observed, format_plan, plan

SHOP = Source(name="shop", dsn="postgresql://shop_cdc@db:5432/shop", database="shop", host="db", user="shop_cdc",
              has_password=True)
# what add_source records once a password was given: the key=value spelling of the same DSN
SHOP_KV = SHOP.model_copy(update={"dsn": "user=shop_cdc dbname=shop host=db port=5432"})
OLD = Source(name="old", dsn="postgresql://u@h/old", database="old", host="h", user="u")
DEFAULT = Source(name="default", dsn="postgresql://postgres@127.0.0.1:5433/postgres", port=5433)

FILE = """\
sources:
  - name: shop
    dsn: postgresql://shop_cdc@db:5432/shop
    password_env: SHOP_PW
mirrors:
  - table: public.customers
    source: shop
    rules: {exclude: [notes]}
  - table: public.orders
    source: shop
    name: shop_orders
"""


def spec(table: str, name: str, source: str = "shop", **kw: object) -> MirrorSpec:
    schema, t = table.split(".")
    return MirrorSpec(name=name, source=source, schema_name=schema, table_name=t, **kw)  # type: ignore[arg-type]


CUSTOMERS = spec("public.customers", "shop_public_customers", rules=MirrorRules(exclude_columns=["notes"]))
ORDERS = spec("public.orders", "shop_orders")
AS_FILED = [CUSTOMERS, ORDERS]


@dataclass
class Case:
    id: str
    registry_sources: list[Source]
    registry_mirrors: list[MirrorSpec]
    expected: list[str]                       # "op kind name" in order, unchanged ones left out
    prune: bool = False
    file: str = FILE
    changes: dict[str, list[str]] = field(default_factory=dict)   # name -> ["field: old -> new"]
    problems: list[str] = field(default_factory=list)                # substrings, one per problem
    stored_pw: str | None = "d1"
    file_pw: str | None = "d1"


CASES = [
    Case("empty registry: everything is created, source first", [DEFAULT], [],
         ["create source shop", "create mirror shop_public_customers", "create mirror shop_orders"]),
    Case("as filed: nothing to do", [DEFAULT, SHOP], AS_FILED, []),
    Case("the DSN spelled as the registry keeps it is the same DSN", [DEFAULT, SHOP_KV], AS_FILED, []),
    Case("a changed rule is a rebuild with its field difference", [DEFAULT, SHOP],
         [CUSTOMERS.model_copy(update={"rules": MirrorRules()}), ORDERS], ["update mirror shop_public_customers"],
         changes={"shop_public_customers": ['rules.exclude: [] -> ["notes"]']}),
    Case("a changed key and table", [DEFAULT, SHOP],
         [CUSTOMERS, spec("public.orders_old", "shop_orders", key_columns=["id"])], ["update mirror shop_orders"],
         changes={"shop_orders": ['table: "public.orders_old" -> "public.orders"', 'key: ["id"] -> (none)']}),
    Case("a mirror not in the file is kept without prune", [DEFAULT, SHOP], AS_FILED + [spec("public.x", "x")],
         ["kept mirror x"]),
    Case("... and removed with prune, before anything else", [DEFAULT], [spec("public.x", "x", source="default")],
         ["remove mirror x", "create source shop", "create mirror shop_public_customers", "create mirror shop_orders"],
         prune=True),
    Case("a source not in the file goes after its mirrors (prune)", [DEFAULT, SHOP, OLD],
         AS_FILED + [spec("public.a", "old_a", source="old")], ["remove mirror old_a", "remove source old"],
         prune=True),
    Case("... and is kept without prune", [DEFAULT, SHOP, OLD],
         AS_FILED + [spec("public.a", "old_a", source="old")], ["kept mirror old_a", "kept source old"]),
    Case("a changed source under its mirrors is refused", [DEFAULT, SHOP.model_copy(update={"host": "db2",
                                                                                            "dsn": "postgresql://shop_cdc@db2:5432/shop"})],
         AS_FILED, ["update source shop"],
         changes={"shop": ['dsn: "postgresql://shop_cdc@db2:5432/shop" -> "postgresql://shop_cdc@db:5432/shop"']},
         problems=["source shop differs from the registered one (dsn) and mirrors use it: shop_orders, "
                   "shop_public_customers"]),
    Case("a changed source without mirrors is replaced", [DEFAULT, SHOP.model_copy(update={"publication": "pub"})],
         [], ["update source shop", "create mirror shop_public_customers", "create mirror shop_orders"],
         changes={"shop": ['publication: "pub" -> (none)']}),
    Case("a source that loses its password is a change", [DEFAULT, SHOP], [],
         ["update source shop", "create mirror shop_public_customers", "create mirror shop_orders"],
         file=FILE.replace("    password_env: SHOP_PW\n", ""), changes={"shop": ["has_password: true -> false"]}),
    Case("another password alone is safe, also under mirrors", [DEFAULT, SHOP], AS_FILED,
         ["update source shop"], file_pw="d2", changes={"shop": ['password: "***" -> "*** (another)"']}),
    Case("the same table under a name the file does not use: refused without prune", [DEFAULT, SHOP],
         [CUSTOMERS, spec("public.orders", "orders_by_hand")], ["create mirror shop_orders", "kept mirror orders_by_hand"],
         problems=["public.orders of source shop is mirrored as 'orders_by_hand', which the file does not name"]),
    Case("... replaced with prune", [DEFAULT, SHOP], [CUSTOMERS, spec("public.orders", "orders_by_hand")],
         ["remove mirror orders_by_hand", "create mirror shop_orders"], prune=True),
    Case("the default source is referenced, never declared, created or removed", [DEFAULT],
         [spec("public.t", "public_t", source="default")], [], prune=True,
         file="mirrors:\n  - table: public.t\n"),
    Case("an empty mirror list with prune removes everything but default", [DEFAULT, SHOP], AS_FILED,
         ["remove mirror shop_orders", "remove mirror shop_public_customers", "remove source shop"], prune=True,
         file="mirrors: []\n"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    f = apply_file.loads(case.file, "m.yaml")
    observed = Observed(sources=case.registry_sources, mirrors=case.registry_mirrors,
                        password_digests={"shop": case.stored_pw})
    p = plan(f, observed, prune=case.prune, password_digests={"shop": case.file_pw} if case.file_pw else {})
    got = [f"{a.op} {a.kind} {a.name}" for a in p.actions if a.op != "unchanged"]
    assert got == case.expected
    assert p.changed == any(not e.startswith("kept") for e in case.expected)
    for name, lines in case.changes.items():
        (action,) = [a for a in p.actions if a.name == name and a.op == "update"]
        assert [f"{c.field}: {_v(c.old)} -> {_v(c.new)}" for c in action.changes] == lines
    assert len(p.problems) == len(case.problems)
    for got_problem, want in zip(p.problems, case.problems):
        assert want in got_problem and got_problem.startswith("m.yaml:")


def _v(v: object) -> str:
    import json
    return "(none)" if v is None else json.dumps(v)


def test_plan_is_stable_applied_again() -> None:
    """What a plan creates, observed back, plans nothing (idempotence of the diff itself)."""
    f = apply_file.loads(FILE)
    first = plan(f, Observed(sources=[DEFAULT], mirrors=[]))
    created = [d.spec for d in f.mirrors]
    second = plan(f, Observed(sources=[DEFAULT, f.sources[0].source], mirrors=created))
    assert first.changed and not second.changed
    assert {a.op for a in second.actions} == {"unchanged"}


def test_lines_point_at_declarations() -> None:
    p = plan(apply_file.loads(FILE), Observed(sources=[DEFAULT]))
    assert {a.name: a.line for a in p.actions} == {"shop": 2, "shop_public_customers": 6, "shop_orders": 9}


def test_format_plan() -> None:
    f = apply_file.loads(FILE, "m.yaml")
    observed = Observed(sources=[DEFAULT, SHOP], password_digests={"shop": "d1"},
                        mirrors=[CUSTOMERS.model_copy(update={"rules": MirrorRules()}), spec("public.x", "x")])
    text = format_plan(plan(f, observed, password_digests={"shop": "d1"}))
    assert text == (
        "~ mirror shop_public_customers: public.customers of source shop\n"
        "    how: rebuild: removed with its data, then added again (a new snapshot)\n"
        '    rules.exclude: [] -> ["notes"]\n'
        "+ mirror shop_orders: public.orders of source shop\n"
        "  mirror x: public.x of source shop  (not in file, kept (--prune removes it))\n"
        "plan: 1 to create, 1 to update; 1 unchanged, 1 kept (not in file)")
    assert format_plan(plan(f, Observed(sources=[DEFAULT, SHOP], mirrors=AS_FILED))) == \
        "plan: no changes; 3 unchanged"


def test_what_cdc_derives_is_no_difference() -> None:
    """computed_types is set by `mirror add` (the Flink planner's types): not a change."""
    f = apply_file.loads("mirrors:\n  - table: public.t\n    rules: {compute: {t2: 'x * 2'}}\n")
    (d,) = f.mirrors
    stored = d.spec.model_copy(update={"computed_types": {"t2": "INT"}})
    assert "computed_types" in MirrorSpec.model_fields and stored != d.spec
    assert not plan(f, Observed(sources=[DEFAULT], mirrors=[stored])).changed
