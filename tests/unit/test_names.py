"""Every generated name: mirror names legal for Pinot by construction, --name checked by
Pinot's rule, and the column mapping for names Pinot refuses."""

from __future__ import annotations

import pytest

from cdc.core import names
from cdc.core.errors import ConfigError


@pytest.mark.parametrize("schema, table, source, expected", [
    ("public", "orders", "default", "public_orders"),
    ("Sales-EU", "Order Items", "default", "sales_eu_order_items"),
    ("public", "a__b", "default", "public_a_b"),                  # Pinot refuses "__"
    ("public", "orders", "shop", "shop_public_orders"),           # was shop__public_orders
    ("_x", "__y__", "default", "x_y"),
    ("public", "a_", "default", "public_a"),
    ("1st", "2nd", "default", "t_1st_2nd"),
    ("Ünïcode", "tåble", "default", "n_code_t_ble"),
])
def test_mirror_name(schema: str, table: str, source: str, expected: str) -> None:
    name = names.mirror_name(schema, table, source)
    assert name == expected
    assert names.check_mirror_name(name) == name and "__" not in name


@pytest.mark.parametrize("bad", ["a__b", "Bad Name!", "1abc", "", "a.b", "x" * 101, "_a", "a_"])
def test_check_mirror_name_refuses(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid mirror name"):
        names.check_mirror_name(bad)


def test_mirror_columns_maps_blanks_deterministically() -> None:
    cols = ["id", "tenant id", "tenant_id", "a\tb", "a b", "ok"]
    m = names.mirror_columns(cols, reserved=("__seq",))
    assert m == {"id": "id", "tenant id": "tenant_id_2", "tenant_id": "tenant_id", "a\tb": "a_b",
                 "a b": "a_b_2", "ok": "ok"}
    assert names.mirror_columns(cols) == m                          # stable
    assert len(set(m.values())) == len(m)


def test_names_of_a_source() -> None:
    assert names.connector_name("shop") == "cdc-shop"
    assert names.slot_name("Shop-1") == names.publication_name("Shop-1") == "cdc_shop_1"
    assert names.change_topic("shop", "Sales EU", "Order Lines") == "cdc.shop.Sales_EU.Order_Lines"
    assert names.heartbeat_topic("shop") == "__debezium-heartbeat.cdc.shop"
