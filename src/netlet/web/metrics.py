"""``/metrics``: the snapshots in the Prometheus text format (prometheus-client).

Public: a ``Provider`` builds its metric families with ``gauge``, ``counter`` and
``histogram``.

Names follow Prometheus conventions: ``netlet_`` then the component, base
units (seconds, bytes), ``_total`` on counters. Each scrape builds its
families from fresh snapshots into a registry of its own: nothing is global.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from netlet.cluster import HeadStatistics, Histogram
from netlet.node import NodeStatistics

__all__ = ["counter", "gauge", "head_families", "histogram", "node_families", "render"]


def gauge(name: str, doc: str, value: float | None = None,
          labels: Iterable[tuple[dict[str, str], float]] = ()) -> GaugeMetricFamily:
    """A gauge: one value, or one per label set."""
    rows = list(labels)
    if not rows:
        return GaugeMetricFamily(name, doc, value=value or 0.0)
    fam = GaugeMetricFamily(name, doc, labels=list(rows[0][0]))
    for lab, v in rows:
        fam.add_metric(list(lab.values()), v)
    return fam


def counter(name: str, doc: str, value: float | None = None,
            labels: Iterable[tuple[dict[str, str], float]] = ()) -> CounterMetricFamily:
    """A counter (``name`` without ``_total``: the client adds it)."""
    rows = list(labels)
    if not rows:
        return CounterMetricFamily(name, doc, value=value or 0.0)
    fam = CounterMetricFamily(name, doc, labels=list(rows[0][0]))
    for lab, v in rows:
        fam.add_metric(list(lab.values()), v)
    return fam


def histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = [(_le(b), float(c))
                                        for b, c in zip(h.bounds, h.counts[:-1], strict=True)]
    buckets.append(("+Inf", float(h.counts[-1])))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.total)


def _le(bound: float) -> str:
    return repr(float(bound))


def head_families(s: HeadStatistics) -> Iterator[Metric]:
    t = s.tasks
    yield gauge("netlet_head_tasks", "Tasks in the head by state now.", labels=[
        ({"state": "queued"}, t.queued), ({"state": "assigned"}, t.assigned),
        ({"state": "running"}, t.running)])
    yield gauge("netlet_head_queue_depth", "Tasks queued, waiting for a worker.", t.queued)
    yield counter("netlet_head_tasks_submitted", "Tasks submitted since the head started.",
                  t.submitted)
    yield counter("netlet_head_tasks_finished", "Tasks finished, by outcome.", labels=[
        ({"outcome": "done"}, t.done), ({"outcome": "failed"}, t.failed)])
    yield counter("netlet_head_tasks_cancelled", "Tasks cancelled before they started.",
                  t.cancelled)
    yield counter("netlet_head_task_retries", "Task runs started again after their worker "
                                              "died.", t.retried)
    yield counter("netlet_head_refused_results", "Results refused (stale lease, duplicate, "
                                                 "not the lease holder).", t.refused_results)
    alive = sum(1 for w in s.workers if w.state == "alive")
    yield gauge("netlet_head_workers", "Workers by state (dead: recently lost).", labels=[
        ({"state": "alive"}, alive), ({"state": "dead"}, len(s.workers) - alive)])
    yield gauge("netlet_head_clients", "Clients connected.", s.clients)
    yield gauge("netlet_head_clients_held", "Clients whose queued tasks are held back for "
                "unread results.", len(s.held_clients))
    yield gauge("netlet_head_results_waiting_bytes", "Bytes of results waiting for their "
                "clients.", s.results_waiting)
    yield histogram("netlet_head_task_duration_seconds",
                    "Time from a task's start on a worker to its result.", s.task_seconds)
    yield histogram("netlet_head_dispatch_latency_seconds",
                    "Time from a task's submit to its first hand-out.", s.dispatch_seconds)
    yield gauge("netlet_head_start_time_seconds", "When the head started (Unix time).",
                s.started)
    workers = [w for w in s.workers if w.state == "alive"]
    if workers:
        yield gauge("netlet_worker_running_tasks", "Tasks a worker holds.", labels=[
            ({"worker": w.node}, w.running) for w in workers])
        yield gauge("netlet_worker_heartbeat_age_seconds", "Seconds since a worker was heard.",
                    labels=[({"worker": w.node}, w.heartbeat_age) for w in workers])
        yield gauge("netlet_worker_draining", "1 while a worker is drained (no new tasks).",
                    labels=[({"worker": w.node}, int(w.draining)) for w in workers])


def node_families(n: NodeStatistics, component: str = "node") -> Iterator[Metric]:
    p = f"netlet_{component}"
    yield counter(f"{p}_calls", "Calls, by direction.", labels=[
        ({"direction": "in"}, n.calls_in), ({"direction": "out"}, n.calls_out)])
    yield counter(f"{p}_call_errors", "Calls served here that ended with an error.", n.errors)
    yield counter(f"{p}_received_bytes", "Bytes of frames received.", n.bytes_in)
    yield counter(f"{p}_sent_bytes", "Bytes of frames sent.", n.bytes_out)
    yield gauge(f"{p}_connections", "Connections open now.", n.connections)
    yield counter(f"{p}_connections_opened", "Connections opened.", n.connections_total)
    yield counter(f"{p}_handshake_failures", "Connections refused in the handshake.",
                  n.handshake_failures)


class _Once:
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterable[Any]:
        return self._families


def render(families: Iterable[Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Once(list(families)))
    return generate_latest(registry)
