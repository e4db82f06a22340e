"""A minimal bank that ATMs send CREDIT, DEBIT and BALANCE to, as a remote object.

The Stackless tutorial's bank read ``"name|DEBIT|amount"`` strings, answered
nothing, let anyone debit anyone and let balances go below zero. This one is
an object exposed with ``@netlet.expose``: an ATM calls its methods like
local ones and gets the new balance back. Each account has an owner, only
the owner may use it, and a debit larger than the balance is refused; the
refusals arrive at the ATM as the same exceptions (``PermissionError``,
``ValueError``, ``LookupError``). Accounts live in memory only: the
project's real bank (``netlet.apps.bank``) keeps a durable ledger.

Run it::

    python bank.py                          # prints its address, e.g. tcp://127.0.0.1:40123
    python atm.py --bank tcp://127.0.0.1:40123 --account alice credit 100 debit 30 balance

Stop it with Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass

import netlet


@dataclass
class Account:
    owner: str
    balance: int = 0


@netlet.expose
class Bank:
    """Accounts by name. netlet runs one call at a time, so no locks are needed."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}

    def credit(self, user: str, account: str, amount: int) -> int:
        """Pay ``amount`` in; the first credit opens the account for ``user``."""
        _check_amount(amount)
        acct = self._accounts.setdefault(account, Account(owner=user))
        _check_owner(acct, user, account)
        acct.balance += amount
        print(f"CREDIT {account} {amount} -> {acct.balance}", flush=True)
        return acct.balance

    def debit(self, user: str, account: str, amount: int) -> int:
        """Take ``amount`` out, unless that would overdraw the account."""
        _check_amount(amount)
        acct = self._owned(user, account)
        if amount > acct.balance:
            raise ValueError(f"insufficient funds: {account} holds {acct.balance}, asked {amount}")
        acct.balance -= amount
        print(f"DEBIT {account} {amount} -> {acct.balance}", flush=True)
        return acct.balance

    def balance(self, user: str, account: str) -> int:
        return self._owned(user, account).balance

    def _owned(self, user: str, account: str) -> Account:
        acct = self._accounts.get(account)
        if acct is None:
            raise LookupError(f"no account named {account!r}")
        _check_owner(acct, user, account)
        return acct


def _check_amount(amount: int) -> None:
    # Values from the network are checked like any other input.
    if type(amount) is not int or amount <= 0:
        raise ValueError(f"amount must be a positive whole number, not {amount!r}")


def _check_owner(acct: Account, user: str, account: str) -> None:
    if user != acct.owner:
        raise PermissionError(f"{user!r} does not own account {account!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="tcp://127.0.0.1:0",
                        help="address to listen on (default: %(default)s, any free port)")
    parser.add_argument("--key", metavar="FILE",
                        help="cluster key file from 'netlet keygen' (to listen beyond loopback)")
    parser.add_argument("--tls-dir", help="directory made by 'netlet certs': use mutual TLS")
    parser.add_argument("--tls-name", default="bank",
                        help="this node's certificate in --tls-dir (default: %(default)s)")
    args = parser.parse_args()
    tls = tls_config(args.tls_dir, args.tls_name) if args.tls_dir else None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts like Ctrl-C
    try:
        with netlet.Node(listen=args.listen, key_file=args.key, tls=tls) as node:
            node.serve(Bank(), "bank")
            print(node.address, flush=True)
            node.wait()  # until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        pass  # asked to stop: the with block closed the node
    except netlet.ConfigError as e:  # no key to listen beyond loopback, a bad key file...
        parser.exit(2, f"bank.py: error: {e}\n")
    return 0


def tls_config(directory: str, name: str) -> netlet.TLSConfig:
    """Mutual TLS with certificates made by ``netlet certs``: ours, and the CA's."""
    return netlet.TLSConfig(certfile=f"{directory}/{name}.pem",
                            keyfile=f"{directory}/{name}.key", cafile=f"{directory}/ca.pem")


if __name__ == "__main__":
    sys.exit(main())
