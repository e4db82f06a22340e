"""An ATM: credit, debit and check the balance of an account at a remote bank.

Commands given as arguments run in order, for scripts; the exit status is 0
when all of them succeed and 1 at the first one the bank refuses (or when
the bank cannot be reached). With no commands the ATM reads them from the
terminal, one per line, like the Stackless tutorial's ATM.

    python atm.py --bank tcp://127.0.0.1:40123 --account alice credit 100 debit 30 balance
    python atm.py --bank tcp://127.0.0.1:40123 --account alice     # interactive

Commands: ``credit AMOUNT``, ``debit AMOUNT``, ``balance``. The bank lets
only an account's owner use it: the first credit makes ``--user`` (by
default the account's name) its owner.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import netlet

COMMANDS = {"credit": 1, "debit": 1, "balance": 0}
"""Each command and how many arguments it takes."""


def parse(words: list[str]) -> Iterator[tuple[str, list[int]]]:
    """Split ``credit 100 balance`` into ``("credit", [100]), ("balance", [])``."""
    words = list(words)
    while words:
        name = words.pop(0).lower()
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r} (use {', '.join(COMMANDS)})")
        need = COMMANDS[name]
        if len(words) < need or not all(w.isdigit() for w in words[:need]):
            raise ValueError(f"{name} needs a whole amount, as in '{name} 100'")
        yield name, [int(w) for w in words[:need]]
        del words[:need]


def run(bank: netlet.Proxy, user: str, account: str, command: str, args: list[int]) -> bool:
    """Send one command to the bank and print the outcome; False if refused."""
    label = " ".join([command, *map(str, args)])
    try:
        balance = getattr(bank, command)(user, account, *args)
    except netlet.NetletError:
        raise  # not the bank's answer: the network or netlet itself
    except (PermissionError, ValueError, LookupError) as e:
        print(f"{label}: refused: {e}", flush=True)
        return False
    print(f"balance: {balance}" if command == "balance" else f"{label}: ok, balance {balance}",
          flush=True)
    return True


def interactive(bank: netlet.Proxy, user: str, account: str) -> int:
    print(f"Welcome to the netlet Banking ATM Network, {user}!", flush=True)
    print("Commands: credit AMOUNT, debit AMOUNT, balance; an empty line quits.", flush=True)
    prompt = f"{account}> " if sys.stdin.isatty() else ""
    while True:
        try:
            line = input(prompt)
        except EOFError:
            break
        if not line.strip():
            break
        try:
            commands = list(parse(line.split()))
        except ValueError as e:
            print(e, flush=True)
            continue
        for command, args in commands:
            run(bank, user, account, command, args)
    print("Thank you for banking with netlet.", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="commands: credit AMOUNT | debit AMOUNT | balance (several may follow each other)")
    parser.add_argument("--bank", required=True, help="the bank's address")
    parser.add_argument("--account", required=True, help="the account to use")
    parser.add_argument("--user", help="who is at the ATM (default: the account's name)")
    parser.add_argument("--key", metavar="FILE", help="cluster key file, when the bank uses one")
    parser.add_argument("--tls-dir", help="directory made by 'netlet certs': use mutual TLS")
    parser.add_argument("--tls-name", default="atm",
                        help="this ATM's certificate in --tls-dir (default: %(default)s)")
    parser.add_argument("command", nargs="*", help="commands to run, e.g. credit 100 balance")
    args = parser.parse_args()
    try:
        commands = list(parse(args.command))
    except ValueError as e:
        parser.error(str(e))
    user = args.user or args.account
    tls = None
    if args.tls_dir:
        tls = netlet.TLSConfig(certfile=f"{args.tls_dir}/{args.tls_name}.pem",
                               keyfile=f"{args.tls_dir}/{args.tls_name}.key",
                               cafile=f"{args.tls_dir}/ca.pem")
    try:
        with netlet.Node(key_file=args.key, tls=tls) as node:
            bank = node.proxy(args.bank, "bank")
            if not commands:
                return interactive(bank, user, args.account)
            ok = all(run(bank, user, args.account, c, a) for c, a in commands)
    except netlet.NetletError as e:  # unreachable, wrong key, bad key file...
        print(f"cannot use the bank at {args.bank}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
