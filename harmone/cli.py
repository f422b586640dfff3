"""The `harmone` command line.

It parses arguments into the frozen config objects of `harmone.config` and hands over; it is
the one place that reads the environment (`HARMONE_DB`, `HARMONE_HOST`, `HARMONE_PORT`,
`HARMONE_METRICS_LISTEN`, `HARMONE_CLUSTER`, `HARMONE_NODE_ID`, `HARMONE_CLUSTER_NAME`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from harmone import __version__
from harmone.config import (
    ClusterConfig,
    RelayConfig,
    ServerConfig,
    normalise_public_url,
    parse_listen,
)
from harmone.errors import ConfigError, HarmoneError

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("HARMONE_DB"),
        help="SQLAlchemy database URL (sqlite:///path.db, postgresql://user@host/db); "
        "default: $HARMONE_DB",
    )


_DESCRIPTION = """\
HARMON-E sits between EV chargers and their CPMS: it relays every OCPP message unchanged and
shares each site's grid connection between the cars that charge.

Start here: `harmone init` creates the database and the first admin user, `harmone serve`
runs the web console, the REST API and the OCPP endpoint, `harmone token create` gives an API
token, `harmone gateway` runs a gateway site's box. `harmone simulate` and
`harmone simulate-cpms` run simulated chargers and a CPMS for a demo or a test without
hardware.
"""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harmone",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"harmone {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="DEBUG, INFO, WARNING or ERROR (default %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "init",
        help="create or migrate the database schema and the first admin user",
        description="Create or migrate the database schema and create the first admin user. "
        "Running it again is harmless: an existing admin is left alone.",
    )
    _add_db(p)
    p.add_argument(
        "--admin-email", required=True, metavar="EMAIL", help="e-mail of the first admin user"
    )
    p.add_argument(
        "--admin-password-file",
        required=True,
        type=Path,
        metavar="FILE",
        help="file holding the admin's password on its first line (kept out of the shell "
        "history and the process list)",
    )

    p = sub.add_parser(
        "serve",
        help="serve the web console, the REST API and the OCPP endpoint",
        description="Serve the web console, the REST API and the OCPP endpoint on one port "
        "until SIGINT or SIGTERM, then close every charger and CPMS connection and exit 0.",
    )
    _add_db(p)
    p.add_argument(
        "--host",
        default=os.environ.get("HARMONE_HOST", "127.0.0.1"),
        help="address to listen on; 0.0.0.0 for every interface (default: $HARMONE_HOST, "
        "else 127.0.0.1; now %(default)s)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("HARMONE_PORT", "8080"),
        help="port to listen on (default: $HARMONE_PORT, else 8080; now %(default)s)",
    )
    p.add_argument(
        "--public-url",
        metavar="URL",
        help="scheme+host(+port) that chargers of cloud sites must use, e.g. "
        "wss://ocpp.example.com (default: the address HARMON-E listens on)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=os.environ.get("HARMONE_METRICS_LISTEN") or None,
        help="also serve Prometheus metrics at http://HOST:PORT/metrics, without "
        "authentication (so bind it to an address only your Prometheus reaches); /metrics "
        "on the main port needs an API token either way (default: $HARMONE_METRICS_LISTEN, "
        "else off)",
    )
    p.add_argument(
        "--cluster",
        metavar="NATS_URL",
        default=os.environ.get("HARMONE_CLUSTER") or None,
        help="run as one node of many: nodes meet on this NATS server (nats://HOST:PORT, "
        "with JetStream) and share the PostgreSQL --db; see docs/scale-out.md (default: "
        "$HARMONE_CLUSTER, else a single node)",
    )
    p.add_argument(
        "--node-id",
        metavar="NAME",
        default=os.environ.get("HARMONE_NODE_ID") or None,
        help="this node's unique name in the cluster (default: host-pid)",
    )
    p.add_argument(
        "--cluster-name",
        metavar="NAME",
        default=os.environ.get("HARMONE_CLUSTER_NAME") or "harmone",
        help="the cluster's name on NATS: the first token of its subjects (default: "
        "$HARMONE_CLUSTER_NAME, else %(default)s)",
    )
    d = RelayConfig()
    p.add_argument(
        "--upstream-connect-timeout",
        metavar="SECONDS",
        type=float,
        default=d.upstream_connect_timeout,
        help="seconds a charger waits for its CPMS handshake before it is accepted "
        "without it (default %(default)s)",
    )
    p.add_argument(
        "--call-timeout",
        metavar="SECONDS",
        type=float,
        default=d.call_timeout,
        help="seconds a call towards a charger may stay unanswered (default %(default)s)",
    )
    p.add_argument(
        "--max-frame-bytes",
        metavar="BYTES",
        type=int,
        default=d.max_frame_bytes,
        help="largest OCPP frame accepted (default %(default)s)",
    )
    p.add_argument(
        "--flood-rate",
        metavar="PER_SECOND",
        type=float,
        default=d.flood_rate,
        help="frames per second a charger may sustain (default %(default)s)",
    )
    p.add_argument(
        "--flood-burst",
        metavar="FRAMES",
        type=int,
        default=d.flood_burst,
        help="frames a charger may send in a burst (default %(default)s)",
    )
    p.add_argument(
        "--backoff-max",
        metavar="SECONDS",
        type=float,
        default=d.backoff_max,
        help="longest delay between CPMS reconnect attempts (default %(default)s)",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve over TLS (wss://, https://): the server certificate chain, PEM; "
        "needs --tls-key",
    )
    p.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the private key of --tls-cert, PEM"
    )
    p.add_argument(
        "--upstream-ca",
        type=Path,
        metavar="FILE",
        help="CA certificates (PEM) that wss:// CPMS certificates must chain to "
        "(default: the system's trust store)",
    )

    p = sub.add_parser(
        "gateway",
        help="run HARMON-E on a gateway box in a site's LAN, managed from the cloud",
        description="Run the OCPP endpoint, relay, offline journal and load management of a "
        "gateway site on this box (its own SQLite database), serving wss:// on the port the "
        "cloud's Control Hub shows, and keep an outbound link to the cloud. First start: "
        "pair with the command the cloud shows (--cloud URL --pair CODE); later starts need "
        "only --db and run from the cached configuration when the cloud is unreachable.",
    )
    _add_db(p)
    p.add_argument("--cloud", metavar="URL", help="the cloud, e.g. https://harmone.example.com")
    p.add_argument("--pair", metavar="CODE", help="one-time pairing code from the cloud")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port to listen on (default: the port of the site's gateway host, else 443)",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="certificate chain, PEM "
        "(default: a self-signed one made beside the database on first start)",
    )
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="the private key of --tls-cert")
    p.add_argument(
        "--modbus-port",
        type=_port,
        default=None,
        help="serve the dynamic cluster limits over Modbus TCP on this port (usually 502; "
        "default: not served)",
    )
    p.add_argument(
        "--cloud-ca",
        type=Path,
        metavar="FILE",
        help="CA certificates (PEM) the cloud's certificate must chain to (default: the "
        "system's trust store)",
    )

    p = sub.add_parser("token", help="create API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = tsub.add_parser(
        "create",
        help="print a new API token for a user",
        description="Print a new API token for a user on stdout (one line). Tokens do not "
        "expire; create as many as you need.",
    )
    _add_db(t)
    t.add_argument("--email", required=True, metavar="EMAIL", help="the user's e-mail")

    p = sub.add_parser(
        "simulate",
        help="run simulated chargers against an OCPP URL",
        description="Run simulated chargers (built on the ocpp package) against a site's OCPP "
        "URL: boot, heartbeats, a charging session with meter values. Prints one line per "
        "charger; exits 0 when every charger ran its scenario.",
    )
    p.add_argument(
        "--url",
        required=True,
        help="the site's OCPP URL, as the Control Hub shows it (ws://… or wss://…)",
    )
    p.add_argument(
        "--chargers",
        type=int,
        default=1,
        metavar="N",
        help="how many chargers (default %(default)s)",
    )
    p.add_argument(
        "--ocpp",
        choices=["1.6", "2.0.1"],
        default="1.6",
        help="OCPP version the chargers speak (default %(default)s)",
    )
    p.add_argument("--prefix", default="SIM", help="charge point id prefix (default %(default)s)")
    p.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds to run before stopping (default %(default)s)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="heartbeat interval in seconds (default %(default)s)",
    )

    p = sub.add_parser(
        "simulate-cpms",
        help="run a minimal CPMS that prints what it receives",
        description="Run a minimal CPMS (built on the ocpp package) that accepts every "
        "charger and prints each message it receives, one line each.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=9000, help="port to listen on (default %(default)s)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until interrupted)",
    )
    return parser


def _need_db(args: argparse.Namespace) -> str:
    if not args.db:
        raise HarmoneError("no database: pass --db URL or set HARMONE_DB")
    return str(args.db)


def _cluster(args: argparse.Namespace) -> ClusterConfig | None:
    if not args.cluster:
        if args.node_id:
            raise ConfigError("--node-id goes with --cluster")
        return None
    node_id = args.node_id or f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
    return ClusterConfig(nats_url=args.cluster, node_id=node_id, name=args.cluster_name)


def _run(args: argparse.Namespace) -> int:
    if args.command == "init":
        from harmone.services.admin import init_database

        password = args.admin_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        return int(asyncio.run(init_database(_need_db(args), args.admin_email, password)))
    if args.command == "token":
        from harmone.services.admin import create_token

        return asyncio.run(create_token(_need_db(args), args.email))
    if args.command == "serve":
        from harmone.web.serve import serve

        relay = RelayConfig(
            upstream_connect_timeout=args.upstream_connect_timeout,
            call_timeout=args.call_timeout,
            max_frame_bytes=args.max_frame_bytes,
            flood_rate=args.flood_rate,
            flood_burst=args.flood_burst,
            backoff_max=args.backoff_max,
            upstream_ca=args.upstream_ca,
        )
        config = ServerConfig(
            db_url=_need_db(args),
            host=args.host,
            port=args.port,
            public_url=normalise_public_url(args.public_url) if args.public_url else None,
            relay=relay,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            metrics_listen=parse_listen(args.metrics_listen) if args.metrics_listen else None,
            cluster=_cluster(args),
        )
        return serve(config)
    if args.command == "gateway":
        from harmone.gateway.box import BoxConfig, run_box

        db = _need_db(args)
        if "://" not in db:
            # The pairing command says `--db box.db`: a plain path is the box's SQLite file.
            db = f"sqlite:///{Path(db).resolve()}"
        return run_box(
            BoxConfig(
                db_url=db,
                cloud_url=args.cloud,
                pair_code=args.pair,
                host=args.host,
                port=args.port,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                cloud_ca=args.cloud_ca,
                modbus_port=args.modbus_port,
            )
        )
    if args.command == "simulate":
        from harmone.sim.cli import run_simulate

        return asyncio.run(
            run_simulate(
                url=args.url,
                chargers=args.chargers,
                version=args.ocpp,
                prefix=args.prefix,
                duration=args.duration,
                heartbeat=args.heartbeat,
            )
        )
    if args.command == "simulate-cpms":
        from harmone.sim.cli import run_simulate_cpms

        return asyncio.run(run_simulate_cpms(args.host, args.port, args.duration))
    raise AssertionError(args.command)  # argparse guarantees one of the above


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(args)
    except HarmoneError as exc:
        print(f"harmone: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"harmone: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
