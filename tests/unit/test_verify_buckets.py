"""verify's bounded-memory comparison (engine target): hash buckets on disk, compared pairwise."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cdc.mirrors.verify import _Buckets, _compare_buckets


def _sides(n: int, src: dict, tgt: list) -> tuple[_Buckets, _Buckets]:
    a, b = _Buckets(n), _Buckets(n)
    for k, d in src.items():
        a.add(k, d)
    for k, d in tgt:
        b.add(k, (d, None))
    return a, b


@pytest.mark.parametrize("n", [1, 3, 64])
def test_every_kind_of_difference_is_found_whatever_the_bucket_count(n: int) -> None:
    src = {(i,): f"d{i}" for i in range(5_000)}          # over _FLUSH: pickled batches are read back
    tgt = [((i,), "changed" if i == 10 else f"d{i}") for i in range(5_000) if i not in (7, 4_999)]
    tgt += [((9_000,), "extra"), ((11,), "d11")]          # a key the source lacks; one seen twice
    a, b = _sides(n, src, tgt)
    found, dups = _compare_buckets(a, b, lambda _m: None)
    assert set(found["missing"]) == {(7,), (4_999,)}
    assert set(found["differing"]) == {(10,)}
    assert set(found["extra"]) == {(9_000,)}
    assert dups == 1
    a.close()
    b.close()


def test_equal_keys_meet_in_one_bucket() -> None:
    """Keys equal in Python but spelled differently (canonical values may be Decimal or int)
    must be compared, not reported missing on one side and extra on the other."""
    src = {(Decimal("1.0"), "a"): "x", (2,): "y"}
    tgt = [((Decimal("1.00"), "a"), "x"), ((2.0,), "y")]
    a, b = _sides(16, src, tgt)
    found, dups = _compare_buckets(a, b, lambda _m: None)
    assert found == {"missing": {}, "differing": {}, "extra": {}} and dups == 0


def test_identical_sides_are_clean() -> None:
    src = {(i, f"k{i}"): str(i) for i in range(1_000)}
    a, b = _sides(8, src, list(src.items()))
    found, dups = _compare_buckets(a, b, lambda _m: None)
    assert not any(found.values()) and dups == 0
