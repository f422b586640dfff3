"""The continuity head start as a site setting (issue 9 point 6): parsed with clear errors,
off by default, through the REST API and the console's sharing form, and given to the
allocator."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

import httpx
import pytest
from console_support import signed_in
from support import make_site

from harmone.errors import ConfigError
from harmone.loadmgmt.config import parse_config
from harmone.loadmgmt.model import AllocationOptions
from harmone.services.accounts import Accounts
from harmone.web.serve import RunningServer

pytestmark = pytest.mark.usefixtures("cheap_argon2")

TREE: dict[str, Any] = {"min_interval": 0, "tree": {"id": "grid", "max_current": 63}}


def test_off_by_default_and_given_to_the_allocator_when_set() -> None:
    off = parse_config(TREE)
    assert off.continuity_horizon_minutes is None
    base = AllocationOptions()
    assert off.allocation_options(base).continuity_horizon is None
    on = parse_config({**TREE, "continuity_horizon_minutes": 120})
    assert on.allocation_options(base).continuity_horizon == timedelta(hours=2)
    assert parse_config(on.to_json()).continuity_horizon_minutes == 120


@pytest.mark.parametrize("bad", [0, -5, 2000, "2h", True])
def test_a_bad_horizon_says_what_is_wrong(bad: object) -> None:
    with pytest.raises(ConfigError, match="continuity_horizon_minutes"):
        parse_config({**TREE, "continuity_horizon_minutes": bad})


async def test_rest_and_console_set_it(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    lm = srv.runtime.loadmgmt
    await Accounts(srv.runtime.store).create_user("ems@example.com", "correct horse 1", "operator")
    token = await Accounts(srv.runtime.store).create_token("ems@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/sites/{site.uid}/load-management"
    async with httpx.AsyncClient(base_url=srv.url, headers=headers) as api:
        r = await api.put(url, json={**TREE, "continuity_horizon_minutes": 0})
        assert r.status_code == 422
        r = await api.put(url, json={**TREE, "continuity_horizon_minutes": 90})
        assert r.status_code == 200, r.text
        assert (await api.get(url)).json()["continuity_horizon_minutes"] == 90
    assert lm.config(site.uid).continuity_horizon_minutes == 90
    form_url = f"/sites/{site.uid}/load-management/settings"
    async with await signed_in(srv, "op@example.com", "operator") as op:
        page = html.unescape((await op.get(f"/sites/{site.uid}/load-management")).text)
        assert 'name="continuity_horizon_minutes"' in page and 'value="90"' in page
        version = page.split('name="version" value="', 1)[1].split('"', 1)[0]
        form = {"enabled": "1", "policy": "equal_share", "version": version}
        r = await op.post(form_url, {**form, "continuity_horizon_minutes": "two hours"})
        assert r.status_code == 422
        assert "horizon in minutes, 1 to 1440" in html.unescape(r.text)
        assert lm.config(site.uid).continuity_horizon_minutes == 90  # nothing saved
        r = await op.post(form_url, {**form, "continuity_horizon_minutes": "120"})
        assert r.status_code == 303
        assert lm.config(site.uid).continuity_horizon_minutes == 120
        page = html.unescape((await op.get(f"/sites/{site.uid}/load-management")).text)
        version = page.split('name="version" value="', 1)[1].split('"', 1)[0]
        r = await op.post(form_url, {**form, "version": version, "continuity_horizon_minutes": ""})
        assert r.status_code == 303
        assert lm.config(site.uid).continuity_horizon_minutes is None  # empty: off
