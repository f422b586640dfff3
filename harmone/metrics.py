"""What the engines count for Prometheus, kept as plain numbers.

The relay and load management increment these at the event (an int attribute per frame, a
bucket per call answered); `harmone.services.metrics` reads them, with the engines' current
state, when `/metrics` is scraped. Nothing here imports the engines or the web, and nothing
here touches the `prometheus_client` global registry: every application has its own numbers,
so that tests can run many in one process.

Why not `prometheus_client` counters directly: a labelled child is looked up per increment,
under a lock. The relay counts every frame; an attribute increment on a per-site object the
link keeps is the cheapest it gets (see docs/performance.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

__all__ = [
    "CALL_BUCKETS",
    "PROFILE_OUTCOMES",
    "REFUSAL_REASONS",
    "ROUND_BUCKETS",
    "Histogram",
    "LoadMetrics",
    "RelayMetrics",
    "SiteLoadCounters",
    "SiteTraffic",
]

#: Seconds, for a CPMS's answer to a charger's call (the call timeout is 30 s by default).
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds, for one load management round (review, allocate, plan).
ROUND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

#: Why a charger's handshake was refused: the label values of `harmone_handshakes_refused`.
REFUSAL_REASONS = (
    "bad_request",  # not a valid WebSocket upgrade
    "bad_url",  # no site UID, no charger id, extra path segments
    "unknown_site",
    "invalid_identity",  # the charge point id breaks a rule (length, ':', '/', 2.x charset)
    "unsupported_version",  # no OCPP version HARMON-E relays was offered
    "charger_auth",  # the site checks charger passwords and this one failed
    "cpms_refused",  # the CPMS refused the dial; the charger gets the same status
    "cpms_unavailable",  # strict offline mode and the CPMS cannot be reached
    "storage",  # HARMON-E could not store the new charger
)

#: How a charger answered a SetChargingProfile of HARMON-E's (label `outcome`).
PROFILE_OUTCOMES = (
    "accepted",
    "rejected",  # status other than Accepted, or a CallError
    "unanswered",  # no answer within the call timeout
    "undelivered",  # the charger was gone, or the call could not be sent
    "moot",  # refused because its transaction had just ended: not held against it
)


class Histogram:
    """Bucket counts, a sum and a count; read at scrape time. `observe` is a bisect and two
    additions (no lock: everything runs in the event loop's thread)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: per bucket (not cumulative); the last one is +Inf
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) per bucket, as Prometheus exposes them."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class SiteTraffic:
    """Frames of one site's chargers, by who sent them to whom; held by each of its links."""

    __slots__ = (
        "charger_to_cpms",
        "charger_to_harmone",
        "cpms_latency",
        "cpms_to_charger",
        "harmone_to_charger",
        "harmone_to_cpms",
    )

    def __init__(self) -> None:
        #: relayed from the charger to its CPMS
        self.charger_to_cpms = 0
        #: relayed from the CPMS to the charger
        self.cpms_to_charger = 0
        #: from the charger, answered or dropped by HARMON-E (CPMS away, broken, flood)
        self.charger_to_harmone = 0
        #: HARMON-E's own frames to the charger: local answers, its own calls
        self.harmone_to_charger = 0
        #: HARMON-E's own frames to the CPMS: journaled messages replayed
        self.harmone_to_cpms = 0
        #: seconds from a charger's call relayed to the CPMS to the CPMS's answer
        self.cpms_latency = Histogram(CALL_BUCKETS)

    def directions(self) -> tuple[tuple[str, int], ...]:
        return (
            ("charger_to_cpms", self.charger_to_cpms),
            ("cpms_to_charger", self.cpms_to_charger),
            ("charger_to_harmone", self.charger_to_harmone),
            ("harmone_to_charger", self.harmone_to_charger),
            ("harmone_to_cpms", self.harmone_to_cpms),
        )


class RelayMetrics:
    """The relay's counters: per-site traffic, handshakes accepted and refused."""

    def __init__(self) -> None:
        self.traffic: dict[str, SiteTraffic] = {}
        self.accepted = 0
        #: refusals by reason (one of REFUSAL_REASONS); no site label: a refused
        #: handshake's site UID is whatever the caller typed
        self.refused: Counter[str] = Counter()

    def site(self, site_uid: str) -> SiteTraffic:
        """The traffic counters of a site (a link looks them up once, when it is built)."""
        traffic = self.traffic.get(site_uid)
        if traffic is None:
            traffic = self.traffic[site_uid] = SiteTraffic()
        return traffic


class SiteLoadCounters:
    """What load management did for one site."""

    __slots__ = ("failed_rounds", "ignored", "outcomes", "round_seconds", "rounds", "sent")

    def __init__(self) -> None:
        self.rounds = 0
        #: rounds whose allocation failed (every managed connector paused)
        self.failed_rounds = 0
        self.round_seconds = Histogram(ROUND_BUCKETS)
        #: SetChargingProfile calls sent
        self.sent = 0
        #: their answers, by outcome (one of PROFILE_OUTCOMES)
        self.outcomes: Counter[str] = Counter()
        #: a charger found drawing more than the limit it had accepted
        self.ignored = 0


class LoadMetrics:
    """Load management's counters, per site."""

    def __init__(self) -> None:
        self.sites: dict[str, SiteLoadCounters] = {}

    def site(self, site_uid: str) -> SiteLoadCounters:
        counters = self.sites.get(site_uid)
        if counters is None:
            counters = self.sites[site_uid] = SiteLoadCounters()
        return counters
