"""schemathesis against the OpenAPI document (issues 5 and 16): zero 5xx, answers as
documented, and every operation reaches its handler.

HARMON-E runs for real (uvicorn on 127.0.0.1) in a thread with its own event loop, because
schemathesis calls it synchronously. Requests carry an admin's Bearer token, so that they reach
the handlers rather than stop at 401. Each operation has live objects of its own (a site with
a registered charger and a load-management tree, a user), so that no operation destroys what
another one fuzzes; a DELETE gets a fresh site or user for each example. Half the examples
aim their path parameters at those objects, the other half keep the generated values (404s
and 422s). Each operation gets a bounded number of positive and negative examples, and the
last test checks that each operation that ran got at least one 2xx, i.e. reached its handler;
the counts go to `artifacts/openapi-fuzz.txt`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import settings
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
ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "openapi-fuzz.txt"
CHARGER_ID = "CP-1"
NODE_ID = "n1"
LOAD_CONFIG = {
    "tree": {
        "id": "grid",
        "max_current": 63,
        "children": [{"id": NODE_ID, "max_current": 32, "metered": True}],
    },
    "chargers": {CHARGER_ID: {"node": NODE_ID}},
}
#: What a path parameter aimed at the operation's own objects holds until the test fills it in.
KNOWN = {"uid": "KNOWN-SITE", "charger_id": CHARGER_ID, "node_id": NODE_ID, "user_id": 0}


@dataclass
class LiveApi:
    url: str
    token: str
    http: httpx.Client = field(init=False)
    #: Objects of each operation, created on its first example.
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def _ok(self, response: httpx.Response) -> Any:
        assert response.is_success, response.text
        return response.json()

    def new_site(self, name: str) -> str:
        # the gateway operations (pairing codes) are for gateway sites only
        kind = {"type": "gateway", "gateway_host": "192.0.2.10"} if "/gateway" in name else {}
        site = self._ok(
            self.http.post("/api/v1/sites", json={"name": name, "type": "cloud", **kind})
        )
        uid: str = site["uid"]
        self._ok(
            self.http.put(
                f"/api/v1/sites/{uid}/chargers/{CHARGER_ID}/password",
                json={"password": "fuzzed-charger-password"},
            )
        )
        self._ok(self.http.put(f"/api/v1/sites/{uid}/load-management", json=LOAD_CONFIG))
        return uid

    def new_user(self, email: str) -> int:
        body = {"email": email, "password": "correct horse battery", "role": "viewer"}
        user_id: int = self._ok(self.http.post("/api/v1/users", json=body))["id"]
        return user_id

    def objects_for(self, label: str, deleting: bool) -> dict[str, Any]:
        """The operation's own site and user; fresh ones for an operation that deletes."""
        number = len(self.objects) + sum(self.requests.values())
        if deleting:
            return {"uid": self.new_site(label), "user_id": self.new_user(f"d{number}@x.example")}
        if label not in self.objects:
            self.objects[label] = {
                "uid": self.new_site(label),
                "user_id": self.new_user(f"op{len(self.objects)}@x.example"),
            }
        return self.objects[label]


def _serve(db: Path, ready: list[str], started: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        config = ServerConfig(db_url=f"sqlite:///{db}", host="127.0.0.1", port=0)
        async with running_server(config) as srv:
            accounts = Accounts(srv.runtime.store)
            await accounts.create_user("schema@example.com", "correct horse battery", "admin")
            ready.extend([srv.url, await accounts.create_token("schema@example.com")])
            started.set()
            await asyncio.to_thread(stop.wait)

    try:
        asyncio.run(main())
    finally:
        started.set()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    ready: list[str] = []
    started, stop = threading.Event(), threading.Event()
    db = tmp_path_factory.mktemp("openapi") / "harmone.db"
    thread = threading.Thread(target=_serve, args=(db, ready, started, stop), daemon=True)
    thread.start()
    started.wait(60)
    try:
        assert ready, "HARMON-E did not start"
        api = LiveApi(*ready)
        yield api
        api.http.close()
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


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    # half the time, the operation's own objects instead of the generated values; first, so
    # that the documented examples (tried first, with the simplest draw) reach a handler
    if not path_parameters or not set(path_parameters) & set(KNOWN):
        return st.just(path_parameters)
    aimed = {**path_parameters, **{k: v for k, v in KNOWN.items() if k in path_parameters}}
    return st.sampled_from([aimed, path_parameters])


def test_served_document_is_the_one_fuzzed(live_api: LiveApi) -> None:
    served = httpx.get(f"{live_api.url}/api/v1/openapi.json", timeout=10).json()
    assert served == DOCUMENT


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None)
def test_api_never_fails_and_answers_as_documented(case: Any, live_api: LiveApi) -> None:
    label = case.operation.label
    params = case.path_parameters
    if params and any(params.get(k) == v for k, v in KNOWN.items() if k in ("uid", "user_id")):
        objects = live_api.objects_for(label, deleting=case.method.upper() == "DELETE")
        for name in ("uid", "user_id"):
            if params.get(name) == KNOWN[name]:
                params[name] = objects[name]
    response = case.call(
        base_url=live_api.url,
        headers={"Authorization": f"Bearer {live_api.token}"},
        timeout=30,
    )
    live_api.requests[label] += 1
    if 200 <= response.status_code < 300:
        live_api.successes[label] += 1
    case.validate_response(
        response,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )


def test_every_fuzzed_operation_reached_its_handler(live_api: LiveApi) -> None:
    """Run after the fuzz: an operation that never got a 2xx was only fuzzing its 404s."""
    if not live_api.requests:
        pytest.skip("runs after test_api_never_fails_and_answers_as_documented")
    width = max(len(label) for label in live_api.requests)
    lines = [f"{'operation':<{width}}  requests  2xx"]
    lines += [
        f"{label:<{width}}  {count:>8}  {live_api.successes[label]:>3}"
        for label, count in sorted(live_api.requests.items())
    ]
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    never = sorted(label for label in live_api.requests if not live_api.successes[label])
    assert never == [], "\n".join(lines)
