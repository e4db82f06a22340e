"""Programs the chaos tests run on their hosts: ``python -m tests.chaos._peers CMD ARGS``.

* ``serve KEY_FILE PORT [PROTOCOL]``: serves
  :class:`tests.node.server_app.Service` as ``svc``, its ``Probe`` as ``probe``
  and a buffered channel as ``box`` on every address; prints the address.
  ``PROTOCOL``: announce that protocol version, as another release would.
* ``call KEY_FILE ADDRESS SECONDS HOW``: after a warm-up call, calls
  ``svc.sleep(SECONDS)`` (``blocking``, or as a ``future``); prints ``calling``
  when it is sent, then ``lost <ErrorType> <monotonic time>`` or ``done
  <time>`` (or ``handshake <Error> <seconds> <message>`` if the warm-up's
  handshake fails); then, on a line ``again`` from stdin, calls
  ``probe.active()`` (``svc`` still sleeps) and prints ``again <value>
  <seconds>``.
* ``pipeline KEY_FILE HEAD TASKS``: an Executor times round trips, tiny tasks,
  a 2 s task and a ``map`` timeout; one JSON line.
* ``bulk KEY_FILE ADDRESS MIB``: one call carrying MIB MiB while another thread
  keeps calling; one JSON line.
* ``cost KEY_FILE HEAD SERVER N``: this host's link counters per task, per
  call and per channel value; one JSON line.
* ``stream_owner KEY_FILE PORT`` and ``stream_send KEY_FILE ADDRESS COUNT
  PACE``: a remote channel stream, checked at the owner.
* ``attack KEY_FILE ADDRESS...``: dials each with a wrong key and with none,
  then the first with the right key as the control.
* ``attack_tls KEY_FILE GOOD_CERTS EVIL_CERTS ADDRESS...``: the same against TLS
  nodes, with certificates of the attacker's own CA, none, and plain TCP.
* ``attack_all KEY_FILE MARKER TLS ADDRESS...``: issue 10's handshake attack
  set (``tests/security/_attacks.py``) against every address at once, one line
  per attack; ``TLS`` is ``-`` (plain) or ``GOOD_CERTS:EVIL_CERTS``: then plain
  TCP and a certificate of the attacker's own CA are tried first, and the set
  runs through TLS with a certificate of the right CA (an insider without the
  key). ``MARKER``: where a pickle that ran would leave a directory.
* ``gateway KEY_FILE HEAD PORT``: serves ``svc``, a buffered channel ``box``
  and :class:`Tasks` as ``tasks`` (submits to the head), for a foreign client.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import netlet
from tests.node.server_app import Probe, Service


def serve(key_file: str, port: str, protocol: str = "") -> None:
    if protocol:  # play another netlet release, one that speaks another protocol version
        import netlet.transport._handshake as handshake

        handshake.PROTOCOL_VERSION = int(protocol)
    node = netlet.Node(listen=f"tcp://0.0.0.0:{port}", key_file=key_file)
    service = Service()
    node.serve(service, "svc")
    node.serve(Probe(service), "probe")  # answers while svc still sleeps
    node.serve(netlet.channel(buffer=100_000), "box")  # sends complete without a receiver
    print(node.address, flush=True)
    node.wait()


def call(key_file: str, address: str, seconds: str, how: str) -> None:
    with netlet.Node(key_file=key_file) as node:
        svc = node.proxy(address, "svc", timeout=None)
        start = time.monotonic()
        try:
            svc.echo("warm-up")
        except netlet.HandshakeError as e:
            print(f"handshake {type(e).__name__} {time.monotonic() - start:.2f} {e}", flush=True)
            return
        print("calling", flush=True)
        try:
            if how == "blocking":
                svc.sleep(float(seconds))  # the direct path: its own socket, pings by the caller
            else:
                svc.sleep.future(float(seconds)).result()  # the main link and the watchdog
            print(f"done {time.monotonic()}", flush=True)
        except netlet.NetletError as e:
            print(f"lost {type(e).__name__} {time.monotonic()}", flush=True)
        if sys.stdin.readline().strip() == "again":
            start = time.monotonic()
            value = node.proxy(address, "probe", timeout=30).active()
            print(f"again {value} {time.monotonic() - start:.2f}", flush=True)


def pipeline(key_file: str, address: str, tasks: str) -> None:
    """Time round trips and a batch of tiny tasks through ``address``; print JSON."""
    from netlet.cluster import Executor
    from tests.cluster.tasks import add, slow_square

    with Executor(address, key_file=key_file) as ex:
        ex.submit(add, 0, 0).result(timeout=30)  # joined, a worker warm
        trips = []
        for _ in range(5):
            start = time.monotonic()
            ex.cluster.status()
            trips.append(time.monotonic() - start)
        n = int(tasks)
        start = time.monotonic()
        assert list(ex.map(add, range(n), range(n))) == [2 * i for i in range(n)]
        seconds = time.monotonic() - start
        start = time.monotonic()
        future = ex.submit(slow_square, 3, 2.0)
        value = future.result(timeout=30)
        task_seconds = time.monotonic() - start
        start = time.monotonic()
        try:
            list(ex.map(slow_square, [1, 2], [3.0, 3.0], timeout=1.5))
            timed_out = None
        except TimeoutError:
            timed_out = time.monotonic() - start
    print(json.dumps({"rtt": sorted(trips)[2], "tasks": n, "seconds": seconds,
                      "map_timeout_after": timed_out, "task_value": value,
                      "task_seconds": task_seconds}), flush=True)


def bulk(key_file: str, address: str, mib: str) -> None:
    """Send ``MIB`` MiB in one call while another thread keeps calling; print JSON."""
    import threading

    size = int(mib) << 20
    outcome: dict[str, object] = {}
    with netlet.Node(key_file=key_file) as node:
        node.proxy(address, "probe").active()  # connected

        def send() -> None:
            start = time.monotonic()
            try:
                outcome["length"] = node.proxy(address, "svc").length(b"x" * size)
            except netlet.NetletError as e:
                outcome["error"] = f"{type(e).__name__}: {e}"
            outcome["seconds"] = time.monotonic() - start

        sender = threading.Thread(target=send)
        sender.start()
        probe, waits = node.proxy(address, "probe", timeout=30), []
        while sender.is_alive():
            start = time.monotonic()
            probe.active()
            waits.append(time.monotonic() - start)
            time.sleep(0.2)  # a call every 0.2 s, as another user of the node would
        sender.join()
    print(json.dumps({**outcome, "bytes": size, "probes": len(waits),
                      "probe_max": max(waits, default=0.0)}), flush=True)


@netlet.expose
class Tasks:
    """Tasks submitted on a caller's behalf: a client that cannot ship Python code
    names the work, and this object hands it to the cluster."""

    def __init__(self, cluster: netlet.Cluster) -> None:
        self.cluster = cluster

    def squares(self, n: int) -> list[int]:
        from tests.cluster.tasks import slow_square

        return list(self.cluster.map(slow_square, range(n), timeout=60))


def gateway(key_file: str, head: str, port: str) -> None:
    node = netlet.Node(listen=f"tcp://0.0.0.0:{port}", key_file=key_file)
    node.serve(Service(), "svc")
    node.serve(netlet.channel(buffer=1000), "box")
    node.serve(Tasks(netlet.Cluster(head, key_file=key_file)), "tasks")
    print(node.address, flush=True)
    node.wait()


def stream_owner(key_file: str, port: str) -> None:
    """Own channel ``stream``; receive until it is closed; print what came, as JSON."""
    with netlet.Node(listen=f"tcp://0.0.0.0:{port}", key_file=key_file) as node:
        stream = netlet.channel(buffer=16)
        node.serve(stream, "stream")
        print(node.address, flush=True)
        got = list(stream)  # until the sender closes it
    print(json.dumps({"received": len(got), "distinct": len(set(got)),
                      "in_order": got == sorted(got), "last": got[-1] if got else None}),
          flush=True)


def stream_send(key_file: str, address: str, count: str, pace: str) -> None:
    """Send 0..COUNT-1 on the remote channel, one every PACE seconds; then close it."""
    with netlet.Node(key_file=key_file) as node:
        stream = netlet.connect_channel(address, "stream", node=node)
        slowest = 0.0
        for i in range(int(count)):
            start = time.monotonic()
            stream.send(i)
            slowest = max(slowest, time.monotonic() - start)
            if i == 10:
                print("streaming", flush=True)
            time.sleep(float(pace))  # the sender's own pace
        stream.close()
    print(f"sent {count} slowest {slowest:.2f}", flush=True)


def _wire() -> list[int]:
    """This host's eth0 counters: packets and bytes sent, packets and bytes received."""
    base = Path("/sys/class/net/eth0/statistics")
    return [int((base / f).read_text()) for f in ("tx_packets", "tx_bytes", "rx_packets",
                                                  "rx_bytes")]


def cost(key_file: str, head: str, server: str, count: str) -> None:
    """Packets and bytes on this host's link per task, per call and per channel value."""
    from netlet.cluster import Executor
    from tests.cluster.tasks import add

    n = int(count)
    figures: dict[str, list[float]] = {}

    def measure(what: str, run: Callable[[], object]) -> None:
        before = _wire()
        run()
        figures[what] = [(b - a) / n for a, b in zip(before, _wire(), strict=True)]

    with Executor(head, key_file=key_file) as ex:
        ex.submit(add, 0, 0).result(timeout=30)
        measure("task", lambda: list(ex.map(add, range(n), range(n))))
    with netlet.Node(key_file=key_file) as node:
        svc = node.proxy(server, "svc")
        box = netlet.connect_channel(server, "box", node=node)
        svc.echo(0)
        box.send(0)

        def calls() -> None:
            for i in range(n):
                svc.echo(i)

        def sends() -> None:
            for i in range(n):
                box.send(i)

        measure("call", calls)
        measure("channel value", sends)
    print(json.dumps(figures), flush=True)


def attack(key_file: str, *addresses: str) -> None:
    """From this host, dial each address with a wrong key and with none; one line each.

    Then, as the control, once with the right key (``key_file``) to the first
    address: that one must print ``ACCEPTED``, or the probe could not tell.

    ``refused <address> <how> <ErrorType>`` when the handshake failed, ``ACCEPTED
    <address> <how> <what>`` when a call got past it (an answer, or an error that
    only a dispatched call gets).
    """
    from netlet.transport import generate_key, load_key

    tries = [(a, how) for a in addresses for how in ("wrong-key", "no-key")]
    for address, how in [*tries, (addresses[0], "right-key")]:
        key = {"wrong-key": generate_key(), "no-key": None,
               "right-key": load_key(key_file)}[how]
        with netlet.Node(key=key) as node:
            try:
                value = node.proxy(address, "head", timeout=5).status()
                print(f"ACCEPTED {address} {how} answer {value!r:.60}", flush=True)
            except (netlet.NoSuchObject, netlet.NotExposed, netlet.BadArguments,
                    netlet.RemoteError) as e:
                print(f"ACCEPTED {address} {how} {type(e).__name__}", flush=True)
            except netlet.NetletError as e:
                print(f"refused {address} {how} {type(e).__name__}", flush=True)

def attack_tls(key_file: str, good: str, evil: str, *addresses: str) -> None:
    """Against TLS nodes: a certificate of another CA, none, plain TCP; then the control.

    ``good`` and ``evil`` are ``netlet certs`` directories (``good`` is the
    nodes' own CA, with a ``client`` certificate; ``evil`` a CA of the
    attacker's making). Prints one ``refused``/``ACCEPTED`` line per attempt
    and address (the attempt's name, then the address).
    """
    import netlet.apps.bank  # the bank answers records of its own (PROTOCOL.md 18)
    from netlet.transport import TLSConfig, generate_key, load_key

    def pair(d: str, name: str, *, verify: bool = True) -> TLSConfig:
        return TLSConfig(certfile=f"{d}/{name}.pem", keyfile=f"{d}/{name}.key",
                         cafile=f"{d}/ca.pem" if verify else None, verify=verify)

    wrong, right = generate_key(), load_key(key_file)
    tries: list[tuple[str, TLSConfig | None, bytes]] = [
        ("own-ca-cert+wrong-key", pair(evil, "client", verify=False), wrong),
        ("own-ca-cert+right-key", pair(evil, "client", verify=False), right),
        ("plain-tcp+right-key", None, right),
        ("right-cert+wrong-key", pair(good, "client"), wrong),
        ("right-cert+right-key", pair(good, "client"), right),  # the control
    ]
    for address in addresses:
        for how, tls, key in tries:
            with netlet.Node(key=key, tls=tls, call_timeout=5) as node:
                try:
                    value = node.proxy(address, "bank", timeout=5).info()
                    print(f"ACCEPTED {how} {address} answer {value!r:.60}", flush=True)
                except (netlet.NoSuchObject, netlet.NotExposed, netlet.BadArguments,
                        netlet.RemoteError) as e:
                    print(f"ACCEPTED {how} {address} {type(e).__name__}", flush=True)
                except netlet.NetletError as e:
                    print(f"refused {how} {address} {type(e).__name__}", flush=True)


def attack_all(key_file: str, marker: str, tls: str, *addresses: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from netlet.transport import TLSConfig, load_key
    from tests.security._attacks import Result, dialer, run_all, tls_refused

    good, evil = tls.split(":") if tls != "-" else ("", "")

    def pair(d: str, *, verify: bool = True) -> TLSConfig:
        return TLSConfig(certfile=f"{d}/client.pem", keyfile=f"{d}/client.key",
                         cafile=f"{d}/ca.pem" if verify else None, verify=verify)

    def against(address: str) -> list[Result]:
        results = []
        if good:
            results += [tls_refused(dialer(address), "TLS: plain TCP"),
                        tls_refused(dialer(address, pair(evil, verify=False)),
                                    "TLS: a certificate of the attacker's own CA")]
        return results + run_all(dialer(address, pair(good) if good else None),
                                 load_key(key_file), Path(marker) / Path(address).name)

    start = time.monotonic()
    with ThreadPoolExecutor(len(addresses)) as pool:  # each waits out its slowloris
        for address, results in zip(addresses, pool.map(against, addresses), strict=True):
            for result in results:
                print(result.line(address), flush=True)
    print(f"seconds {time.monotonic() - start:.1f}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(created).3f %(levelname)s %(name)s: %(message)s")
    commands: dict[str, Callable[..., None]] = {
        "serve": serve, "call": call, "pipeline": pipeline, "attack": attack,
        "attack_tls": attack_tls, "attack_all": attack_all, "bulk": bulk, "cost": cost,
        "stream_owner": stream_owner, "stream_send": stream_send, "gateway": gateway}
    commands[sys.argv[1]](*sys.argv[2:])
