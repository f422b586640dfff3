"""schemathesis against the OpenAPI document (issue 5): zero 5xx, answers as documented.

HARMON-E runs for real (uvicorn on 127.0.0.1) in a thread with its own event loop, because
schemathesis calls it synchronously. Requests carry an admin's Bearer token, so that they reach
the handlers rather than stop at 401; one site with one charger exists, and path parameters
are sometimes swapped for theirs, so that requests reach existing objects and not only 404s.
Each operation gets a bounded number of positive and negative (schema-violating) examples.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from harmone.config import ServerConfig
from harmone.services.accounts import Accounts
from harmone.web.app import create_app
from harmone.web.serve import running_server

EXAMPLES_PER_OPERATION = 30


@dataclass(frozen=True)
class LiveApi:
    url: str
    token: str
    site_uid: str
    charger_id: str


def _serve(db: Path, ready: list[LiveApi], started: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        config = ServerConfig(db_url=f"sqlite:///{db}", host="127.0.0.1", port=0)
        async with running_server(config) as srv:
            store = srv.runtime.store
            await Accounts(store).create_user(
                "schema@example.com", "correct horse battery", "admin"
            )
            token = await Accounts(store).create_token("schema@example.com")
            site = await store.sites.create("Fuzzed", "cloud")
            await store.chargers.register(site.uid, "CP-1")
            ready.append(LiveApi(srv.url, token, site.uid, "CP-1"))
            started.set()
            await asyncio.to_thread(stop.wait)

    try:
        asyncio.run(main())
    finally:
        started.set()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    ready: list[LiveApi] = []
    started, stop = threading.Event(), threading.Event()
    db = tmp_path_factory.mktemp("openapi") / "harmone.db"
    thread = threading.Thread(target=_serve, args=(db, ready, started, stop), daemon=True)
    thread.start()
    started.wait(30)
    try:
        assert ready, "HARMON-E did not start"
        KNOWN.update(uid=ready[0].site_uid, charger_id=ready[0].charger_id)
        yield ready[0]
    finally:
        stop.set()
        thread.join(30)


def _document() -> dict[str, Any]:
    """The OpenAPI document, built without serving (test_served_document_is_the_one_fuzzed
    checks that the server serves the same). schemathesis's `from_fixture` cannot be used:
    4.32.5 sets a private attribute pytest 9 no longer has."""
    app = create_app(ServerConfig(db_url="sqlite://"), lambda: "ws://127.0.0.1")
    document: dict[str, Any] = app.api.openapi()
    return document


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
#: Path parameters of the site and charger that exist, filled in by `live_api`.
KNOWN: dict[str, str] = {}


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    # half the time, the existing site and charger instead of random strings
    if not path_parameters or not set(path_parameters) & set(KNOWN):
        return st.just(path_parameters)
    swapped = {**path_parameters, **{k: v for k, v in KNOWN.items() if k in path_parameters}}
    return st.sampled_from([path_parameters, swapped])


def test_served_document_is_the_one_fuzzed(live_api: LiveApi) -> None:
    served = httpx.get(f"{live_api.url}/api/v1/openapi.json", timeout=10).json()
    assert served == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_fails_and_answers_as_documented(case: Any, live_api: LiveApi) -> None:
    case.call_and_validate(
        base_url=live_api.url,
        headers={"Authorization": f"Bearer {live_api.token}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        timeout=10,
    )
