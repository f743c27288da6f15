"""The history checkers on hand-made histories: linearizable ones pass, others fail."""

from __future__ import annotations

import random

from history import ABSENT, Op, check_counter, check_register


def op(p: int, f: str, args: tuple, t0: float, t1: float | None, result: str, out=None) -> Op:
    return Op(p, f, args, t0, float("inf") if t1 is None else t1, result, out)


def test_sequential_history_is_linearizable() -> None:
    h = [
        op(0, "get", (), 0, 1, "fail", "not_found"),
        op(0, "put", ("a",), 2, 3, "ok", 10),
        op(1, "get", (), 4, 5, "ok", ("a", 10)),
        op(1, "cas", (10, "b"), 6, 7, "ok", 11),
        op(0, "cas", (10, "c"), 8, 9, "fail", 11),
        op(0, "delete", (), 10, 11, "ok"),
        op(1, "cas", (None, "d"), 12, 13, "ok", 14),
        op(1, "get", (), 14, 15, "ok", ("d", 14)),
    ]
    assert check_register(h)


def test_stale_read_is_not_linearizable() -> None:
    h = [
        op(0, "put", ("a",), 0, 1, "ok", 1),
        op(0, "put", ("b",), 2, 3, "ok", 2),
        op(1, "get", (), 4, 5, "ok", ("a", 1)),  # after b was acknowledged
    ]
    assert not check_register(h)


def test_concurrent_read_may_see_either_value() -> None:
    h = [
        op(0, "put", ("a",), 0, 1, "ok", 1),
        op(0, "put", ("b",), 2, 6, "ok", 2),
        op(1, "get", (), 3, 4, "ok", ("a", 1)),
        op(2, "get", (), 3, 5, "ok", ("b", 2)),
    ]
    assert check_register(h)
    # ...but not b then a, once the first read of b has returned
    h2 = h[:2] + [op(1, "get", (), 3, 4, "ok", ("b", 2)), op(2, "get", (), 4.5, 5, "ok", ("a", 1))]
    assert not check_register(h2)


def test_two_cas_from_the_same_version_cannot_both_succeed() -> None:
    h = [
        op(0, "put", ("a",), 0, 1, "ok", 1),
        op(1, "cas", (1, "b"), 2, 4, "ok", 2),
        op(2, "cas", (1, "c"), 2, 4, "ok", 3),
    ]
    assert not check_register(h)


def test_unknown_write_may_or_may_not_take_effect() -> None:
    base = [op(0, "put", ("a",), 0, 1, "ok", 1), op(1, "put", ("x",), 2, None, "unknown")]
    assert check_register(base + [op(2, "get", (), 5, 6, "ok", ("a", 1))])
    assert check_register(base + [op(2, "get", (), 5, 6, "ok", ("x", 7))])
    # once x was seen, a cannot come back (the unknown write took effect once)
    assert not check_register(
        base + [op(2, "get", (), 5, 6, "ok", ("x", 7)), op(2, "get", (), 7, 8, "ok", ("a", 1))]
    )
    # a value nobody wrote is never read
    assert not check_register(base + [op(2, "get", (), 5, 6, "ok", ("y", 7))])


def test_failed_write_never_takes_effect() -> None:
    h = [
        op(0, "put", ("a",), 0, 1, "ok", 1),
        op(1, "cas", (5, "z"), 2, 3, "fail", 1),
        op(2, "get", (), 4, 5, "ok", ("z", 6)),
    ]
    assert not check_register(h)


def test_mismatch_must_report_the_current_version() -> None:
    h = [op(0, "put", ("a",), 0, 1, "ok", 1), op(1, "cas", (None, "z"), 2, 3, "fail", 9)]
    assert not check_register(h)
    assert check_register([h[0], op(1, "cas", (None, "z"), 2, 3, "fail", 1)])


def test_random_sequential_histories_pass_and_a_mutation_fails() -> None:
    rng = random.Random(7)
    for _ in range(30):
        value, version, t, h = ABSENT, None, 0.0, []
        for _ in range(40):
            f = rng.choice(["put", "get", "cas", "delete"])
            if f == "put":
                version = int(t) + 100
                value = rng.randrange(5)
                h.append(op(0, "put", (value,), t, t + 0.5, "ok", version))
            elif f == "get":
                out = ("fail", "not_found") if value is ABSENT else ("ok", (value, version))
                h.append(op(0, "get", (), t, t + 0.5, *out))
            elif f == "delete":
                value, version = ABSENT, None
                h.append(op(0, "delete", (), t, t + 0.5, "ok"))
            else:
                expected = version if rng.random() < 0.7 else 99999
                if expected == version:
                    version, value = int(t) + 100, rng.randrange(5)
                    h.append(op(0, "cas", (expected, value), t, t + 0.5, "ok", version))
                else:
                    h.append(op(0, "cas", (expected, 1), t, t + 0.5, "fail", version))
            t += 1
        assert check_register(h)
        reads = [o for o in h if o.f == "get" and o.result == "ok"]
        if reads:
            bad = rng.choice(reads)
            bad.out = (bad.out[0] + 1000, bad.out[1])
            assert not check_register(h)


def test_counter_check() -> None:
    assert check_counter(final=5, acked=[1, 2, 3, 4], unknown=1)[0]
    assert not check_counter(final=3, acked=[1, 2, 3, 4], unknown=0)[0]  # lost
    assert not check_counter(final=6, acked=[1, 2, 3, 4], unknown=1)[0]  # applied twice
    assert not check_counter(final=4, acked=[1, 2, 2, 4], unknown=0)[0]  # same value twice
