"""The `harmone` command: parses arguments into config objects and hands over.

This is the one place that reads the environment (`HARMONE_DB`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harmone import __version__
from harmone.config import RelayConfig, ServerConfig, normalise_public_url
from harmone.errors import HarmoneError

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("HARMONE_DB"),
        help="SQLAlchemy database URL (sqlite:///path.db, postgresql://user@host/db); "
        "default: $HARMONE_DB",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harmone", description=__doc__)
    parser.add_argument("--version", action="version", version=f"harmone {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create or migrate the schema and the first admin user")
    _add_db(p)
    p.add_argument("--admin-email", required=True)
    p.add_argument("--admin-password-file", required=True, type=Path)

    p = sub.add_parser("serve", help="serve the console, the REST API and the OCPP endpoint")
    _add_db(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--public-url", help="scheme+host(+port) cloud chargers use, e.g. wss://x")
    d = RelayConfig()
    p.add_argument(
        "--upstream-connect-timeout",
        type=float,
        default=d.upstream_connect_timeout,
        help="seconds a charger waits for its CPMS handshake before it is accepted "
        "without it (default %(default)s)",
    )
    p.add_argument(
        "--call-timeout",
        type=float,
        default=d.call_timeout,
        help="seconds a call towards a charger may stay unanswered (default %(default)s)",
    )
    p.add_argument(
        "--max-frame-bytes",
        type=int,
        default=d.max_frame_bytes,
        help="largest OCPP frame accepted (default %(default)s)",
    )
    p.add_argument(
        "--flood-rate",
        type=float,
        default=d.flood_rate,
        help="frames per second a charger may sustain (default %(default)s)",
    )
    p.add_argument(
        "--flood-burst",
        type=int,
        default=d.flood_burst,
        help="frames a charger may send in a burst (default %(default)s)",
    )
    p.add_argument(
        "--backoff-max",
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

    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = tsub.add_parser("create", help="print a new API token for a user")
    _add_db(t)
    t.add_argument("--email", required=True)

    p = sub.add_parser("simulate", help="run simulated chargers against an OCPP URL")
    p.add_argument("--url", required=True, help="the site's OCPP URL (as the Control Hub shows)")
    p.add_argument("--chargers", type=int, default=1)
    p.add_argument("--ocpp", choices=["1.6", "2.0.1"], default="1.6")
    p.add_argument("--prefix", default="SIM", help="charge point id prefix (default %(default)s)")
    p.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds to run before stopping (default %(default)s)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        help="heartbeat interval in seconds (default %(default)s)",
    )

    p = sub.add_parser("simulate-cpms", help="run a minimal CPMS that logs what it receives")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
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
        )
        return serve(config)
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
