"""The bank's answers are the records PROTOCOL.md 18 lists, decoded strictly at both ends.

Without sockets: each record round-trips and is refused, naming it and the
field, when a field count or type is wrong; the documented example is what
the encoder sends. Over real sockets: an ATM refuses an answer that is not
the record its call answers (a bank of another version, or a hostile one),
and a bank refuses junk in place of its scalar arguments, changing nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

import netlet
from netlet.apps.bank import (
    AccountInfo,
    AuditReport,
    BankError,
    BankInfo,
    CashReceipt,
    Closed,
    InsufficientFunds,
    InvalidCommand,
    Ledger,
    Opened,
    OutcomeUnknown,
    RequestOutcome,
    Reversal,
    Reversed,
    ServiceError,
    Session,
    SessionExpired,
    StatementEntry,
    TransferReceipt,
    hash_pin,
    register_errors,
)
from netlet.apps.bank._atm import BankClient
from netlet.apps.bank._service import SERVICE_NAME, BankService
from netlet.codec import Codec, Ext, record_types
from netlet.errors import DecodeError
from netlet.node import expose
from tests.integration.test_foreign_client import ERROR, Client

pytestmark = pytest.mark.timeout(60)

PROTOCOL = Path(__file__).parents[3] / "docs" / "PROTOCOL.md"
PIN = "1234"

EXAMPLES = [
    Session("t" * 43, "alice", 300.0),
    CashReceipt("alice", 1250, 1250),
    TransferReceipt("alice", "bob", 100, 1150, 100),
    Opened("carol", "Carol"),
    Closed("carol"),
    Reversed("d-1", "Deposit", 1250, {"alice": 0}),
    RequestOutcome("d-1", 7, {"type": "Deposit", "account": "alice", "amount": 1250},
                   CashReceipt("alice", 1250, 1250), None, 1780000000.5),
    StatementEntry("d-1", "Deposit", 1250, "@cash", 1780000000.5, 1250),
    AccountInfo("alice", "Alice", "open", 1250),
    AuditReport(True, 2, 3, 0, ("one",)),
    BankInfo(True, 1780000000.5, 10, 4, 2.5, 6, 1),
]


def _bank_records() -> dict[int, Any]:
    return {wid: rt for wid, rt in record_types().items()
            if rt.cls.__module__.startswith("netlet.apps.bank.")}


def _section() -> str:
    text = PROTOCOL.read_text()
    return text[text.index("## 18. The bank"):]


def test_every_bank_record_is_documented_with_its_wire_id_and_fields() -> None:
    table = _section()[_section().index("### 18.2"):]
    documented = {int(wid): (name, re.findall(r"`(\w+):", fields))
                  for wid, name, fields in re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \|",
                                                      table, re.M)}
    ours = {wid: (rt.cls.__name__, list(rt.names)) for wid, rt in _bank_records().items()}
    assert ours == documented
    assert all(100 <= wid <= 199 for wid in ours)
    assert sorted(type(e).__name__ for e in EXAMPLES) == sorted(n for n, _ in ours.values())


def test_money_is_never_a_float() -> None:
    for rt in _bank_records().values():
        for name, text in zip(rt.names, rt.field_types(), strict=True):
            if "amount" in name or "balance" in name or name == "total":
                assert text in ("int", "dict[str, int]"), (rt.cls.__name__, name)


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
def test_each_record_round_trips(value: object) -> None:
    c = Codec()
    assert c.decode_value(c.encode_value(value)) == value


def test_an_outcome_with_a_refusal_round_trips() -> None:
    register_errors()
    refused = RequestOutcome("w-1", 8, {"type": "Withdraw", "account": "alice", "amount": 9},
                             None, InsufficientFunds("alice", 0, 9), 1.5)
    back = Codec().decode_value(Codec().encode_value(refused))
    assert (back.key, back.ok, back.result, back.command) == ("w-1", False, None,
                                                              refused.command)
    assert isinstance(back.error, InsufficientFunds)
    assert (back.error.balance, back.error.amount) == (0, 9)
    with pytest.raises(InsufficientFunds):
        back.unwrap()


def _payload(value: object) -> list[Any]:
    """``[wire_id, fields...]`` of ``value`` as it travels (inner records left as ext)."""
    ext = msgpack.unpackb(Codec().encode_value(value), raw=False)
    assert ext.code == Ext.RECORD
    return list(msgpack.unpackb(ext.data, raw=False, strict_map_key=False))


def _body(payload: list[Any]) -> bytes:
    return msgpack.packb(msgpack.ExtType(Ext.RECORD, msgpack.packb(payload)))


def _wrong(text: str) -> object:
    """A value a field of type ``text`` must refuse (money as a float above all)."""
    if text == "int":
        return 12.5
    if text == "str":
        return 5
    if text == "float":
        return 1  # an int is not a float
    if text == "bool":
        return 1
    return "junk"  # maps, tuples, unions of records


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
def test_each_record_is_refused_strictly_naming_it_and_the_field(value: object) -> None:
    rt = _bank_records()[_payload(value)[0]]
    name, payload = rt.cls.__qualname__, _payload(value)
    with pytest.raises(DecodeError, match=f"record {name} .wire id {rt.wire_id}. has "
                                          f"{len(rt.names)} fields, got {len(rt.names) - 1}"):
        Codec().decode_value(_body(payload[:-1]))
    for i, (field, text) in enumerate(zip(rt.names, rt.field_types(), strict=True)):
        doctored = [*payload[:i + 1], _wrong(text), *payload[i + 2:]]
        with pytest.raises(DecodeError, match=f"record {name}: field {field} must be"):
            Codec().decode_value(_body(doctored))


def test_an_unknown_bank_wire_id_is_refused() -> None:
    assert 199 not in record_types()
    with pytest.raises(DecodeError, match="unknown record wire id 199"):
        Codec().decode_value(_body([199, "alice", 5, 5]))


def test_the_documented_example_is_what_the_bank_sends() -> None:
    text = _section()
    block = text[text.index("**Example.**"):].split("```")[1]
    data = bytes.fromhex(" ".join(
        " ".join(itertools.takewhile(lambda w: re.fullmatch(r"[0-9a-f]{2}", w) is not None,
                                     line.split()))
        for line in block.strip().splitlines()))
    outcome = EXAMPLES[6]
    assert Codec().encode_value(outcome) == data
    assert Codec().decode_value(data) == outcome


# -- over real sockets ----------------------------------------------------------------


@expose
class OtherBank:
    """A bank that answers as before the records (dicts), or with junk: not ours."""

    def login(self, account: str, pin: str) -> Session:
        return Session("t" * 43, account, 300.0)

    def deposit(self, token: str, amount: int, key: str) -> dict[str, Any]:
        return {"account": "alice", "amount": amount, "balance": amount}

    def transfer(self, token: str, dst: str, amount: int, key: str) -> CashReceipt:
        return CashReceipt("alice", amount, 0)  # a record, but not the one transfer answers

    def balance(self, token: str) -> bool:
        return True  # a bool is not an int

    def statement(self, token: str, limit: int) -> list[object]:
        return [StatementEntry("k", "Deposit", 1, "@cash", 1.0, 1), {"key": "k"}]

    def outcome(self, token: str, key: str) -> dict[str, Any]:
        return {"key": key, "ok": True}

    def open_account(self, account: str, owner: str, pin_hash: str, key: str) -> str:
        return "opened"

    def accounts(self, prefix: str) -> dict[str, Any]:
        return {"alice": 5}

    def audit(self) -> dict[str, Any]:
        return {"ok": True}

    def info(self) -> None:
        return None


def test_an_atm_refuses_an_answer_that_is_not_its_record(
        node_factory: Callable[..., netlet.Node]) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(OtherBank(), SERVICE_NAME)
    assert server.address is not None
    client = BankClient(server.address, node=node_factory(call_timeout=5), timeout=5,
                        retry_for=2)
    card = client.card("alice", PIN)
    # A mutating request answered with something else may have been applied: unknown.
    with pytest.raises(OutcomeUnknown, match=r"expected CashReceipt from the bank \(deposit "
                                             r"of 5.00\), got dict") as exc:
        card.deposit(500, key="d-1")
    assert exc.value.key == "d-1"
    with pytest.raises(OutcomeUnknown, match=r"expected TransferReceipt .* got CashReceipt"
                       ) as exc:
        card.transfer("bob", 500, key="t-1")
    assert exc.value.key == "t-1"
    with pytest.raises(OutcomeUnknown, match=r"expected Opened .*, got str 'opened'"):
        client.open_account("carol", "Carol", PIN, key="o-1", pin_cost=16)
    reads: list[tuple[Callable[[], object], str]] = [
        (card.balance, r"expected int from the bank \(balance enquiry\), got bool True"),
        (lambda: card.statement(2), r"expected StatementEntry .*\(statement, item 1\), got dict"),
        (lambda: card.outcome("d-1"), "expected RequestOutcome or None .* got dict"),
        (client.accounts, "expected a list of AccountInfo .* got dict"),
        (client.audit, "expected AuditReport .* got dict"),
        (client.info, r"expected BankInfo from the bank \(info\), got NoneType None"),
    ]
    for read, message in reads:
        with pytest.raises(DecodeError, match=message):
            read()


_BAD_RECEIPT = msgpack.ExtType(Ext.RECORD, msgpack.packb([101, "alice", 12.5, 0]))
"""A CashReceipt whose amount is a float: no netlet bank sends it; the codec refuses it."""


@expose
class HostileBank(OtherBank):
    """A bank whose answers are records the ATM cannot decode."""

    def deposit(self, token: str, amount: int, key: str) -> Any:
        return _BAD_RECEIPT

    def balance(self, token: str) -> Any:
        return _BAD_RECEIPT


def test_an_undecodable_answer_is_an_unknown_outcome_never_nothing_sent(
        node_factory: Callable[..., netlet.Node]) -> None:
    """The bank answered, so the request reached it: the ATM must not say it was not sent."""
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(HostileBank(), SERVICE_NAME)
    assert server.address is not None
    client = BankClient(server.address, node=node_factory(call_timeout=5), timeout=5,
                        retry_for=2)
    card = client.card("alice", PIN)
    with pytest.raises(OutcomeUnknown, match="CashReceipt: field amount must be int") as exc:
        card.deposit(500, key="d-1")
    assert exc.value.key == "d-1"
    with pytest.raises(DecodeError, match="CashReceipt: field amount must be int"):
        card.balance()


@dataclass
class _Bank:
    ledger: Ledger
    address: str
    api: Any


@pytest.fixture
def bank(tmp_path: Path, node_factory: Callable[..., netlet.Node]) -> Iterator[_Bank]:
    ledger = Ledger(tmp_path / "bank.db")
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(BankService(ledger, operator=True), SERVICE_NAME)
    assert server.address is not None
    api = node_factory(call_timeout=10).proxy(server.address, SERVICE_NAME)
    for account in ("alice", "bob"):
        api.open_account(account, account.title(), hash_pin(PIN, n=16), f"open-{account}")
    try:
        yield _Bank(ledger, server.address, api)
    finally:
        server.unserve(SERVICE_NAME)
        ledger.close()


JUNK: list[object] = [CashReceipt("alice", 1, 1), Session("t" * 43, "alice", 1.0), b"alice",
                      1.5, True, None, ["alice"], {"alice": 1}, ("alice",), -1, 10**30]


def test_junk_in_place_of_any_argument_is_refused_and_changes_nothing(bank: _Bank) -> None:
    token = bank.api.login("alice", PIN).token
    bank.api.deposit(token, 1_000, "seed")
    before = (_journal(bank.ledger), bank.api.balance(token))
    keys = (f"junk-{n}" for n in itertools.count())
    calls: dict[str, Callable[[], list[object]]] = {
        "login": lambda: ["alice", PIN],
        "deposit": lambda: [token, 100, next(keys)],
        "withdraw": lambda: [token, 100, next(keys)],
        "transfer": lambda: [token, "bob", 100, next(keys)],
        "balance": lambda: [token],
        "statement": lambda: [token, 5],
        "outcome": lambda: [token, "seed"],
        "open_account": lambda: ["carol", "Carol", hash_pin(PIN, n=16), next(keys)],
        "close_account": lambda: ["bob", next(keys)],
        "accounts": lambda: [""],
        "outcomes": lambda: [["seed"]],
    }
    refused = 0
    for method, make in calls.items():
        for position in range(len(make())):
            for junk in JUNK:
                args = make()
                args[position] = [junk] if method == "outcomes" else junk
                with pytest.raises((BankError, ServiceError)) as exc:
                    getattr(bank.api, method)(*args)
                assert isinstance(exc.value, InvalidCommand | SessionExpired), (
                    method, position, junk, exc.value)
                refused += 1
    assert refused == sum(len(make()) for make in calls.values()) * len(JUNK)
    assert (_journal(bank.ledger), bank.api.balance(token)) == before
    assert bank.ledger.audit().ok


def test_a_malformed_record_in_place_of_an_argument_is_refused_and_changes_nothing(
        bank: _Bank) -> None:
    """A peer that sends a record the bank cannot decode (a float amount inside a
    CashReceipt, an unknown wire id) gets ERROR DecodeError naming it, on an open link."""
    token = bank.api.login("alice", PIN).token
    before = _journal(bank.ledger)
    host, _, port = bank.address.removeprefix("tcp://").rpartition(":")
    bad_receipt = msgpack.ExtType(Ext.RECORD, msgpack.packb([101, "alice", 12.5, 0]))
    unknown = msgpack.ExtType(Ext.RECORD, msgpack.packb([199, 100]))
    with Client((host, int(port))) as raw:
        raw.handshake()
        for amount, message in ((bad_receipt, "CashReceipt: field amount must be int, got "
                                              "float 12.5"),
                                (unknown, "unknown record wire id 199")):
            kind, error = raw.call(SERVICE_NAME, "deposit", token, amount, "raw-1")
            assert kind == ERROR
            assert error.type_name == "netlet.errors.DecodeError"
            assert message in error.message
        kind, value = raw.call(SERVICE_NAME, "balance", token)  # the link still serves
        assert value == 0
    assert _journal(bank.ledger) == before


def _journal(ledger: Ledger) -> list[tuple[int, str, bool]]:
    return [(o.seq, o.key, o.ok) for o in ledger.journal(limit=100_000)]


def test_the_python_example_of_bank_md_runs(bank: _Bank, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    text = (PROTOCOL.parent / "bank.md").read_text()
    example = text[text.index("**From Python,**"):].split("```python")[1].split("```")[0]
    exec(compile(example, "bank.md", "exec"), {"address": bank.address})
    assert capsys.readouterr().out.splitlines() == [
        "1250", "refused: account 'alice' holds 1250, less than 1000000",
        "Deposit 1250 1250"]


def test_outcomes_of_every_kind_of_command_are_their_receipts(bank: _Bank) -> None:
    token = bank.api.login("alice", PIN).token
    bank.api.deposit(token, 500, "d")
    bank.api.transfer(token, "bob", 200, "t")
    bank.ledger.execute(Reversal("t"), "r")
    bank.api.withdraw(token, 500, "w")
    bank.api.open_account("carol", "Carol", hash_pin(PIN, n=16), "o")
    bank.api.close_account("carol", "c")
    got = bank.api.outcomes(["open-alice", "d", "t", "r", "w", "c", "never"])
    assert [o and o.result for o in got] == [
        Opened("alice", "Alice"), CashReceipt("alice", 500, 500),
        TransferReceipt("alice", "bob", 200, 300, 200),
        Reversed("t", "Transfer", 200, {"alice": 500, "bob": 0}),
        CashReceipt("alice", 500, 0), Closed("carol"), None]
    assert got[0].command == {"type": "OpenAccount", "account": "alice", "owner": "Alice"}
    assert all(o.ok and type(o.at) is float for o in got[:-1])
