"""PIN hashing and the ledger's card lockout."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netlet.apps.bank import (
    CardLocked,
    CloseAccount,
    Ledger,
    OpenAccount,
    WrongPin,
    hash_pin,
    verify_pin,
)
from netlet.apps.bank._pins import DEFAULT_SCRYPT_N, is_pin_hash, pin_check_is_cheap
from tests.conftest import arun

CHEAP = 16  # scrypt n for tests; the default costs tens of milliseconds on purpose

BAD_PINS = [
    "123",
    "1234567890123",
    "12a4",
    "",
    " 1234",
    "1234 ",
    "١٢٣٤",
    "-123",
    1234,
    None,
    b"1234",
]


def test_hash_and_verify() -> None:
    stored = hash_pin("0042", n=CHEAP)
    assert verify_pin("0042", stored)
    assert not verify_pin("0043", stored)
    assert not verify_pin("00420", stored)
    assert stored.startswith(f"scrypt${CHEAP}$8$1$")
    assert is_pin_hash(stored)


def test_salt_is_random() -> None:
    assert hash_pin("1234", n=CHEAP) != hash_pin("1234", n=CHEAP)


def test_default_cost_is_moderate() -> None:
    stored = hash_pin("123456")
    assert stored.startswith(f"scrypt${DEFAULT_SCRYPT_N}$")
    start = time.perf_counter()
    assert verify_pin("123456", stored)
    assert time.perf_counter() - start < 1.0  # ~30 ms on a current CPU; generous for CI


@pytest.mark.parametrize("pin", BAD_PINS)
def test_bad_pins_raise_value_error(pin: object) -> None:
    stored = hash_pin("1234", n=CHEAP)
    with pytest.raises(ValueError, match="4 to 12 digits"):
        hash_pin(pin)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="4 to 12 digits"):
        verify_pin(pin, stored)  # type: ignore[arg-type]


def test_pin_lengths_at_the_limits() -> None:
    for pin in ("1234", "123456789012"):
        assert verify_pin(pin, hash_pin(pin, n=CHEAP))


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "1234",
        "scrypt$16$8$1$abc",
        "scrypt$15$8$1$AAAAAAAA$AAAAAAAA",
        "bcrypt$16$8$1$AAAA$AAAA",
        "scrypt$4194304$8$1$AAAAAAAA$AAAAAAAA",
        "scrypt$16$8$1$AAAAA$AAAAAAAA",
    ],
)
def test_malformed_stored_hash(stored: str) -> None:
    assert not is_pin_hash(stored)
    with pytest.raises(ValueError, match="not a PIN hash"):
        verify_pin("1234", stored)


@pytest.mark.parametrize("n", [0, 1, 3, 1000, 2**21, 16.0])
def test_bad_cost(n: object) -> None:
    with pytest.raises(ValueError, match="power of two"):
        hash_pin("1234", n=n)  # type: ignore[arg-type]


# -- lockout ------------------------------------------------------------------


@pytest.fixture
def ledger(new_db: Callable[[], str]) -> Iterator[Ledger]:
    with Ledger(new_db(), lock_seconds=300) as led:
        led.execute(OpenAccount("alice", "Alice", hash_pin("2468", n=CHEAP)), "open-alice")
        yield led


def test_right_pin(ledger: Ledger) -> None:
    before = ledger.statistics().writes
    assert ledger.check_pin("alice", "2468") is True
    assert ledger.statistics().writes == before  # nothing to record


def test_three_wrong_pins_lock_the_card(ledger: Ledger) -> None:
    now = 1_000.0
    with pytest.raises(WrongPin) as first:
        ledger.check_pin("alice", "1111", now=now)
    assert first.value.attempts_left == 2
    with pytest.raises(WrongPin) as second:
        ledger.check_pin("alice", "12", now=now + 1)  # malformed counts as wrong
    assert second.value.attempts_left == 1
    with pytest.raises(CardLocked) as locked:
        ledger.check_pin("alice", "3333", now=now + 2)
    assert locked.value.retry_after == 300
    with pytest.raises(CardLocked) as still:
        ledger.check_pin("alice", "2468", now=now + 100)  # even the right PIN
    assert still.value.retry_after == pytest.approx(202)
    assert ledger.check_pin("alice", "2468", now=now + 303) is True
    with pytest.raises(WrongPin) as fresh:  # the count started afresh
        ledger.check_pin("alice", "1111", now=now + 304)
    assert fresh.value.attempts_left == 2


def test_right_pin_resets_the_count(ledger: Ledger) -> None:
    for _ in range(2):
        with pytest.raises(WrongPin):
            ledger.check_pin("alice", "0000", now=10)
    assert ledger.check_pin("alice", "2468", now=11)
    for left in (2, 1):
        with pytest.raises(WrongPin) as info:
            ledger.check_pin("alice", "0000", now=12)
        assert info.value.attempts_left == left


def test_lockout_survives_reopen(new_db: Callable[[], str]) -> None:
    path = new_db()
    with Ledger(path) as led:
        led.execute(OpenAccount("bob", "Bob", hash_pin("1357", n=CHEAP)), "open-bob")
        for _ in range(2):
            with pytest.raises(WrongPin):
                led.check_pin("bob", "0000", now=50)
        with pytest.raises(CardLocked):
            led.check_pin("bob", "0000", now=50)
    with Ledger(path) as led, pytest.raises(CardLocked):
        led.check_pin("bob", "1357", now=60)


def test_unknown_and_closed_accounts_answer_like_wrong_pins(ledger: Ledger) -> None:
    """Sign-in does not tell which accounts exist: a ghost card counts and locks too."""
    with pytest.raises(WrongPin) as first:
        ledger.check_pin("nobody", "1234", now=10)
    assert first.value.attempts_left == 2
    with pytest.raises(WrongPin):
        ledger.check_pin("@cash", "1234")
    ledger.execute(CloseAccount("alice"), "close-alice")
    with pytest.raises(WrongPin):
        ledger.check_pin("alice", "2468")  # even its right PIN
    for _ in range(1):
        with pytest.raises(WrongPin):
            ledger.check_pin("nobody", "1234", now=11)
    with pytest.raises(CardLocked) as locked:
        ledger.check_pin("nobody", "1234", now=12)
    assert locked.value.retry_after == 300


def test_pins_never_stored_or_shown_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    command = OpenAccount("carol", "Carol", hash_pin("97531", n=CHEAP))
    assert "scrypt" not in repr(command)
    with Ledger(path) as led:
        led.execute(command, "open-carol")
        with pytest.raises(WrongPin) as info:
            led.check_pin("carol", "86420")
        assert "86420" not in str(info.value)
        assert "86420" not in repr(info.value.args)
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"97531" not in data
    assert b"86420" not in data


@pytest.mark.parametrize("n", [16, 1024], ids=["cheap-checked-inline", "costly-on-a-thread"])
def test_async_check_locks_the_card_like_the_sync_one(new_db: Callable[[], str],
                                                      n: int) -> None:
    stored = hash_pin("2468", n=n)
    assert pin_check_is_cheap(stored) is (n == 16)
    with Ledger(new_db(), lock_seconds=300) as led:
        led.execute(OpenAccount("alice", "Alice", stored), "open-alice")

        def check(pin: str, now: float) -> bool:
            return arun(led.check_pin_aio("alice", pin, now=now))

        before = led.statistics().writes
        assert check("2468", 1_000.0) is True
        assert led.statistics().writes == before  # nothing to record
        with pytest.raises(WrongPin) as first:
            check("1111", 1_000.0)
        assert first.value.attempts_left == 2
        with pytest.raises(WrongPin):
            check("12", 1_001.0)  # malformed counts as wrong
        with pytest.raises(CardLocked):
            check("3333", 1_002.0)
        with pytest.raises(CardLocked):
            check("2468", 1_100.0)  # even the right PIN
        assert check("2468", 1_303.0) is True
        assert led.check_pin("alice", "2468", now=1_304.0) is True  # the same record


def test_cheap_means_scrypt_over_little_memory() -> None:
    assert pin_check_is_cheap(hash_pin("1234", n=64))  # 128 * 8 * 64 = 64 KiB
    assert not pin_check_is_cheap(hash_pin("1234", n=128))
    assert not pin_check_is_cheap(hash_pin("1234"))  # the default: 16 MiB
    assert pin_check_is_cheap("not a hash")  # refused at once, whatever it costs
