"""Configuration, read in one place (the CLI) into frozen value objects.

Core code receives these objects; it never reads the environment itself.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from harmone.errors import ConfigError
from harmone.loadmgmt.model import AllocationOptions
from harmone.loadmgmt.state import Timing

__all__ = [
    "ClusterConfig",
    "RelayConfig",
    "ServerConfig",
    "check_tls_files",
    "check_upstream_ca",
    "normalise_public_url",
    "parse_listen",
]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Limits and timings of the OCPP relay."""

    #: How long a charger's handshake waits for its CPMS before it is accepted without it.
    upstream_connect_timeout: float = 3.0
    #: How long a CALL towards a charger may stay unanswered before its slot is freed.
    call_timeout: float = 30.0
    #: Reconnect backoff towards the CPMS: first delay, cap, and +/- jitter fraction.
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    backoff_jitter: float = 0.3
    #: Largest frame accepted from a charger or a CPMS, in bytes (RFC 6455 payload).
    max_frame_bytes: int = 1 << 20
    #: Per-charger flood limit: a token bucket of `flood_burst` frames refilled at `flood_rate`/s.
    flood_rate: float = 50.0
    flood_burst: int = 200
    #: Heartbeat interval HARMON-E gives a charger when it answers BootNotification itself.
    heartbeat_interval: int = 300
    #: How many recent frames per charger are kept for the message inspector, and at most
    #: how many bytes of them (the oldest go first).
    inspector_frames: int = 200
    inspector_bytes: int = 16384
    #: How many connection attempts per site are kept (older ones are pruned).
    attempts_kept_per_site: int = 1000
    #: Proxy for upstream connections: None means connect directly.
    upstream_proxy: str | None = None
    #: CA certificates (PEM) that wss:// CPMS certificates are verified against; None: the
    #: system's trust store.
    upstream_ca: Path | None = None
    #: Charger authentication: this many wrong credentials within `auth_failure_window`
    #: seconds lock a charger out (HTTP 429) until the oldest of them ages out.
    auth_max_failures: int = 10
    auth_failure_window: float = 300.0
    #: Keep-alive: a charger or CPMS connection quiet for this long is pinged, and dropped if
    #: it does not answer within `keepalive_timeout` (a peer gone without closing).
    keepalive_interval: float = 30.0
    keepalive_timeout: float = 30.0
    #: At most this many CPMS handshakes in progress at once: after a restart or a blip,
    #: thousands of chargers reconnect together and the CPMS must not be hit by all of them.
    max_concurrent_dials: int = 100
    #: At most this many charger handshakes worked on at once; the others wait, accepted and
    #: paused. During a reconnect storm this keeps each turn of the event loop short, so that
    #: the API, the console and the connected chargers are served in between.
    max_concurrent_handshakes: int = 64
    #: Secondary CPMS: frames queued for it while it is away or slow (the oldest are dropped
    #: beyond), its call rate (a token bucket), and how many of its calls may wait for the
    #: charger's one-CALL slot at once.
    secondary_queue: int = 1000
    secondary_queue_chars: int = 1 << 20
    secondary_call_rate: float = 10.0
    secondary_call_burst: int = 20
    secondary_waiting_calls: int = 4

    def __post_init__(self) -> None:
        if self.upstream_connect_timeout <= 0 or self.call_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ConfigError("backoff must satisfy 0 < initial <= max")
        if not 0 <= self.backoff_jitter < 1:
            raise ConfigError("backoff jitter must be in [0, 1)")
        if self.max_frame_bytes < 1024:
            raise ConfigError("max frame size must be at least 1024 bytes")
        if self.flood_rate <= 0 or self.flood_burst < 1:
            raise ConfigError("flood limits must be positive")
        if self.keepalive_interval <= 0 or self.keepalive_timeout <= 0:
            raise ConfigError("keep-alive interval and timeout must be positive")
        if (
            self.secondary_queue < 1
            or self.secondary_queue_chars < 1
            or self.secondary_call_rate <= 0
            or self.secondary_call_burst < 1
            or self.secondary_waiting_calls < 1
        ):
            raise ConfigError("the secondary CPMS limits must be positive")
        if self.max_concurrent_dials < 1:
            raise ConfigError("max_concurrent_dials must be at least 1")
        if self.max_concurrent_handshakes < 1:
            raise ConfigError("max_concurrent_handshakes must be at least 1")
        if self.auth_max_failures < 1 or self.auth_failure_window <= 0:
            raise ConfigError("the charger authentication lock-out limits must be positive")
        if self.upstream_ca is not None:
            check_upstream_ca(self.upstream_ca)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One node of many (`harmone serve --cluster`): see docs/scale-out.md."""

    #: the NATS server, nats://host:port
    nats_url: str
    #: this node's name on NATS (unique among the nodes; default: host-pid)
    node_id: str
    #: the cluster's name: every subject starts with it, and the lease bucket is named after
    #: it, so that several clusters (or test runs) can share one NATS server
    name: str = "harmone"
    #: how often the node announces itself, s; a node silent for 3 intervals is gone
    heartbeat: float = 1.0
    #: how long a site's load-management lease lives without renewal, s (renewed every third)
    lease_ttl: float = 5.0

    def __post_init__(self) -> None:
        if not self.nats_url.startswith(("nats://", "tls://")):
            raise ConfigError(f"--cluster {self.nats_url}: give a NATS URL, nats://HOST:PORT")
        for option, value in (("--node-id", self.node_id), ("--cluster-name", self.name)):
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
                raise ConfigError(f"{option} {value!r}: use 1-64 letters, digits, '-' or '_'")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What `harmone serve` runs with."""

    db_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    #: scheme+host(+port) cloud chargers must use, e.g. wss://ocpp.example.com; None: derived.
    public_url: str | None = None
    relay: RelayConfig = field(default_factory=RelayConfig)
    #: Largest HTTP request body accepted (REST API and console); larger ones get 413.
    max_request_bytes: int = 4 << 20
    #: Seconds given to connections to close on SIGTERM/SIGINT.
    shutdown_grace: float = 5.0
    #: Load management: reaction timings and allocator tuning (defaults suit real sites).
    load_timing: Timing = field(default_factory=Timing)
    load_options: AllocationOptions = field(default_factory=AllocationOptions)
    #: The OCPP endpoint (and the console and API) over TLS: certificate chain and private
    #: key, PEM. Both or neither; with them, chargers use wss:// (security profile 2).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Where to serve /metrics without authentication as well (host, port); None: only on
    #: the main port, behind the API's authentication.
    metrics_listen: tuple[str, int] | None = None
    #: True on a gateway box (`harmone gateway`), which runs its gateway site's load
    #: management; the cloud keeps a gateway site's configuration but does not run it.
    gateway_box: bool = False
    #: None: a single node (the default); else one node of a cluster on NATS + PostgreSQL
    cluster: ClusterConfig | None = None

    def __post_init__(self) -> None:
        if self.cluster is not None and not self.db_url.startswith("postgresql"):
            raise ConfigError(
                "--cluster needs a PostgreSQL --db (postgresql://…) shared by every node; "
                f"{self.db_url.split(':', 1)[0]} is one process's own database"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_cert is not None and self.tls_key is not None:
            check_tls_files(self.tls_cert, self.tls_key)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def _readable(path: Path, option: str) -> None:
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None


def _no_passphrase() -> str:
    # Without this callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ConfigError("the key is encrypted; HARMON-E needs it unencrypted (protect the file)")


def check_tls_files(cert: Path, key: Path) -> None:
    """ConfigError, in one line, unless `cert` and `key` make a usable server certificate.

    Checked at start-up so that an operator sees which file is wrong, not an OpenSSL trace
    from inside the server.
    """
    _readable(cert, "--tls-cert")
    _readable(key, "--tls-key")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise ConfigError(f"--tls-cert {cert}: no PEM certificate in it") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, _no_passphrase)
    except ConfigError as exc:
        raise ConfigError(f"--tls-key {key}: {exc}") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"--tls-key {key} is not the private key of the certificate in --tls-cert {cert}"
            ) from None
        raise ConfigError(f"--tls-key {key}: no usable PEM private key in it") from None


def check_upstream_ca(path: Path) -> None:
    """ConfigError unless `path` holds at least one PEM CA certificate."""
    _readable(path, "--upstream-ca")
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        raise ConfigError(f"--upstream-ca {path}: no PEM CA certificate in it") from None


def normalise_public_url(url: str) -> str:
    """Check a --public-url value and drop a trailing slash.

    Chargers need a WebSocket URL; an http(s) URL is almost always a typo for ws(s) and is
    refused rather than silently rewritten, so that the Control Hub never shows a guess.
    """
    url = url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("ws", "wss") or not rest:
        raise ConfigError(f"--public-url must look like wss://host[:port], got {url!r}")
    if "?" in rest or "#" in rest:
        raise ConfigError("--public-url must not contain a query or fragment")
    return url


def parse_listen(value: str, option: str = "--metrics-listen") -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets: `[::1]:9100`) as (host, port); the host is
    required, so that nothing listens on an address the operator did not name."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(
            f"{option} must be HOST:PORT, e.g. 127.0.0.1:9100 or [::1]:9100, got {value!r}"
        )
    return host, int(port_text)
