"""Prometheus metrics of a running HARMON-E: what `/metrics` serves (on the API port, behind
the API's authentication, and on `--metrics-listen` without it).

Current values (chargers connected, CPMS links up, flagged chargers, journal backlog) are read
when the metrics are scraped; totals are the counters the relay and load management keep
(`harmone.metrics`), also read then. Each `MetricsService` has its own `CollectorRegistry`, so
that several applications in one process (tests) never mix their numbers. The README's
"Metrics" section lists every metric.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from harmone import __version__
from harmone.errors import StoreError
from harmone.metrics import (
    PROFILE_OUTCOMES,
    REFUSAL_REASONS,
    Histogram,
    LoadMetrics,
    RelayMetrics,
)
from harmone.relay.state import ChargerKey, LiveCharger
from harmone.store.store import Store

__all__ = ["CONTENT_TYPE", "MetricsService"]

log = logging.getLogger(__name__)

#: The Prometheus text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RelaySource(Protocol):
    """What the metrics read of the relay (its registry satisfies it)."""

    @property
    def metrics(self) -> RelayMetrics: ...

    @property
    def live(self) -> Mapping[ChargerKey, LiveCharger]: ...


class LoadSource(Protocol):
    """What the metrics read of load management (its service satisfies it)."""

    @property
    def metrics(self) -> LoadMetrics: ...

    def flags(self) -> dict[str, dict[str, int]]: ...


class MetricsService:
    """`scrape()` returns the metrics in the Prometheus text format."""

    def __init__(self, relay: RelaySource, loadmgmt: LoadSource, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._store = store
        self._collector = _HarmoneCollector(relay, loadmgmt)
        self.registry.register(self._collector)
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds (Linux only)
        ProcessCollector(registry=self.registry)

    async def scrape(self) -> bytes:
        """Read what lives in the database, then every metric (nothing waits in between: one
        scrape sees one moment)."""
        sites: list[str] = []
        backlog: dict[str, int] = {}
        try:
            sites = [site.uid for site in await self._store.sites.all()]
            backlog = await self._store.journal.count_by_site()
        except StoreError as exc:
            log.warning("metrics: the database could not be read: %s", exc)
        self._collector.stored(sites, backlog)
        return generate_latest(self.registry)


class _HarmoneCollector(Collector):
    def __init__(self, relay: RelaySource, loadmgmt: LoadSource) -> None:
        self._relay = relay
        self._loadmgmt = loadmgmt
        self._sites: list[str] = []
        self._backlog: dict[str, int] = {}

    def stored(self, sites: list[str], backlog: dict[str, int]) -> None:
        self._sites = sites
        self._backlog = backlog

    def collect(self) -> Iterator[Metric]:
        relay = self._relay.metrics
        load = self._loadmgmt.metrics
        connected: Counter[str] = Counter()
        upstream: Counter[str] = Counter()
        live_sites: set[str] = set()
        for (site_uid, _), live in self._relay.live.items():
            live_sites.add(site_uid)
            connected[site_uid] += live.connected
            upstream[site_uid] += live.connected and live.upstream_connected
        sites = sorted(set(self._sites) | live_sites | set(self._backlog))

        info = GaugeMetricFamily("harmone_info", "HARMON-E's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _per_site(
            "harmone_chargers_connected",
            "Chargers connected to HARMON-E now",
            sites,
            connected,
        )
        yield _per_site(
            "harmone_cpms_links_up",
            "Connected chargers whose CPMS link is up now",
            sites,
            upstream,
        )
        yield _per_site(
            "harmone_journal_backlog",
            "Messages journaled while the CPMS was away, not yet delivered to it",
            sites,
            self._backlog,
        )

        frames = CounterMetricFamily(
            "harmone_frames",
            "OCPP frames by sender and receiver (charger_to_cpms and cpms_to_charger are "
            "relayed; charger_to_harmone are answered or dropped by HARMON-E; harmone_to_* "
            "are its own: local answers, its calls, journal replays)",
            labels=["site", "direction"],
        )
        latency = HistogramMetricFamily(
            "harmone_cpms_call_duration_seconds",
            "Seconds from a charger's call relayed to the CPMS to the CPMS's answer",
            labels=["site"],
        )
        for site_uid, traffic in sorted(relay.traffic.items()):
            for direction, n in traffic.directions():
                frames.add_metric([site_uid, direction], n)
            _add_histogram(latency, [site_uid], traffic.cpms_latency)
        yield frames
        yield latency

        accepted = CounterMetricFamily(
            "harmone_handshakes_accepted", "Charger WebSocket handshakes accepted"
        )
        accepted.add_metric([], relay.accepted)
        yield accepted
        refused = CounterMetricFamily(
            "harmone_handshakes_refused",
            "Charger WebSocket handshakes refused, by reason (the connection log says more)",
            labels=["reason"],
        )
        for reason in (*REFUSAL_REASONS, *sorted(set(relay.refused) - set(REFUSAL_REASONS))):
            refused.add_metric([reason], relay.refused[reason])
        yield refused

        yield from self._load_metrics(load)

    def _load_metrics(self, load: LoadMetrics) -> Iterable[Metric]:
        rounds = CounterMetricFamily(
            "harmone_allocation_rounds", "Load management rounds run", labels=["site"]
        )
        failed = CounterMetricFamily(
            "harmone_allocation_failures",
            "Rounds whose allocation failed (every managed connector paused)",
            labels=["site"],
        )
        duration = HistogramMetricFamily(
            "harmone_allocation_duration_seconds",
            "Seconds one load management round took (review, allocate, plan)",
            labels=["site"],
        )
        sent = CounterMetricFamily(
            "harmone_profiles_sent",
            "SetChargingProfile calls sent by load management",
            labels=["site"],
        )
        answers = CounterMetricFamily(
            "harmone_profile_answers",
            "How chargers answered load management's SetChargingProfile calls",
            labels=["site", "outcome"],
        )
        ignored = CounterMetricFamily(
            "harmone_profiles_ignored",
            "Times a charger was found drawing more than the limit it had accepted",
            labels=["site"],
        )
        for site_uid, counters in sorted(load.sites.items()):
            rounds.add_metric([site_uid], counters.rounds)
            failed.add_metric([site_uid], counters.failed_rounds)
            _add_histogram(duration, [site_uid], counters.round_seconds)
            sent.add_metric([site_uid], counters.sent)
            for outcome in PROFILE_OUTCOMES:
                answers.add_metric([site_uid, outcome], counters.outcomes[outcome])
            ignored.add_metric([site_uid], counters.ignored)
        yield from (rounds, failed, duration, sent, answers, ignored)

        flagged = GaugeMetricFamily(
            "harmone_chargers_flagged",
            "Chargers load management holds a flag against now (their draw is reserved "
            "instead of granted): no_answer, overdraw, rejected",
            labels=["site", "flag"],
        )
        for site_uid, flags in sorted(self._loadmgmt.flags().items()):
            for flag, n in sorted(flags.items()):
                flagged.add_metric([site_uid, flag], n)
        yield flagged


def _per_site(
    name: str, documentation: str, sites: list[str], values: Mapping[str, int]
) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["site"])
    for site_uid in sites:
        gauge.add_metric([site_uid], values.get(site_uid, 0))
    return gauge


def _add_histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    buckets: list[tuple[str, float]] = [(le, float(n)) for le, n in hist.cumulative()]
    family.add_metric(labels, buckets, hist.sum)
