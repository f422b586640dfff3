"""What the Control Hub says about a site's OCPP URL: its format, whether it is encrypted,
the port a firewall must let through, and whether only this machine can reach it.

The explanation is derived from the URL the page shows (the API's `ocpp_url`), so that it
cannot disagree with it: without `--public-url`, a cloud site's URL is the address HARMON-E
listens on, e.g. `ws://127.0.0.1:8080/…`, which is neither TLS nor reachable from a charger.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OcppUrlFacts", "ocpp_url_facts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OcppUrlFacts:
    #: The URL with the site UID as a placeholder, e.g. "ws://127.0.0.1:8080/{site-UID}".
    url_format: str
    #: wss:// (WebSocket over TLS) rather than ws://.
    tls: bool
    #: The TCP port chargers connect to.
    port: int
    #: The host is this machine's loopback address: no charger elsewhere can reach it.
    local_only: bool
    host: str


def _loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ocpp_url_facts(ocpp_url: str, site_uid: str) -> OcppUrlFacts:
    """The facts of `ocpp_url` (which ends with `/{site_uid}`)."""
    parts = urlsplit(ocpp_url)
    tls = parts.scheme == "wss"
    host = parts.hostname or ""
    base = ocpp_url.removesuffix(f"/{site_uid}")
    return OcppUrlFacts(
        url_format=f"{base}/{{site-UID}}",
        tls=tls,
        port=parts.port or (443 if tls else 80),
        local_only=_loopback(host),
        host=host,
    )
