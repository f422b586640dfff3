"""The domain's site and charger rules, and the REST bodies derived from them (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from harmone.domain import ChargerIdentity, SiteSettings, changed, settings
from harmone.errors import ConfigError
from harmone.web.schemas import ChargerOut, ChargerPatch, SiteIn, SiteOut, SitePatch


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": " ", "type": "cloud"}, "name: a site name must not be empty"),
        ({"name": "x" * 201, "type": "cloud"}, "name: a site name is longer than 200"),
        ({"name": "x", "type": "roof"}, "type: Input should be 'cloud' or 'gateway'"),
        ({"name": "x", "type": "gateway"}, "gateway_host: a gateway site needs"),
        ({"name": "x", "type": "gateway", "gateway_host": "a b"}, "neither an IP address"),
        ({"name": "x", "type": "cloud", "cpms_url": "https://c"}, "must start with ws://"),
        ({"name": "x", "type": "cloud", "cpms_url": "ws://c/?q=1"}, "query or fragment"),
        ({"name": "x", "type": "cloud", "cpms_url": "ws://c:99999"}, "invalid port"),
        ({"name": "x", "type": "cloud", "charger_auth": "false"}, "true or false"),
        ({"name": "x", "type": "cloud", "offline_mode": "lax"}, "offline_mode: "),
        ({"name": "x", "type": "cloud", "uid": "u"}, "cannot set uid on a site"),
    ],
)
def test_site_rules(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(SiteSettings, fields, "site")


def test_site_values_are_normalised() -> None:
    site = settings(
        SiteSettings,
        {"name": " Depot ", "type": "cloud", "cpms_url": " wss://c.example/ocpp/ "},
        "site",
    )
    assert (site.name, site.cpms_url, site.gateway_host) == ("Depot", "wss://c.example/ocpp", None)
    assert (site.offline_mode, site.charger_auth) == ("hold", False)


def test_changed_validates_the_merged_whole() -> None:
    cloud = settings(SiteSettings, {"name": "Depot", "type": "cloud"}, "site")
    with pytest.raises(ConfigError, match="gateway_host: a gateway site needs"):
        changed(cloud, {"type": "gateway"}, "site")
    with pytest.raises(ConfigError, match="cannot set colour on a site"):
        changed(cloud, {"colour": "red"}, "site")
    gateway = changed(cloud, {"type": "gateway", "gateway_host": "box.local"}, "site")
    assert (gateway.name, gateway.type, gateway.gateway_host) == ("Depot", "gateway", "box.local")


def test_patch_bodies_are_the_settings_with_every_field_optional() -> None:
    assert SitePatch.model_validate({}).changes() == {}
    assert SitePatch.model_validate({"name": " B "}).changes() == {"name": "B"}
    # a field that is sent obeys its rule: null is no name
    with pytest.raises(ValidationError, match="a site name must be a string"):
        SitePatch.model_validate({"name": None})
    with pytest.raises(ValidationError, match="Extra inputs"):
        SitePatch.model_validate({"uid": "x"})
    # a rule across fields is the store's to check on the merged site, not the patch's
    assert SitePatch.model_validate({"type": "gateway"}).changes() == {"type": "gateway"}
    assert ChargerPatch.model_validate({"name": ""}).changes() == {"name": None}
    with pytest.raises(ValidationError, match="ws://"):
        ChargerPatch.model_validate({"cpms_url": "ftp://x"})
    # the base models keep their required fields
    with pytest.raises(ValidationError):
        SiteIn.model_validate({})


def test_rest_bodies_derive_their_fields_from_the_domain() -> None:
    writable = set(SiteSettings.model_fields)
    assert set(SiteIn.model_fields) == writable == set(SitePatch.model_fields)
    assert set(SiteOut.model_fields) == writable | {"uid", "created_at", "ocpp_url"}
    identity = list(ChargerIdentity.model_fields)
    assert identity == ["vendor", "model", "serial_number", "firmware_version"]
    out = list(ChargerOut.model_fields)
    assert out[out.index("vendor") : out.index("vendor") + 4] == identity


def test_identity_over_an_older_one() -> None:
    old = ChargerIdentity(vendor="ACME", model="W1", firmware_version="1.0")
    new = ChargerIdentity(vendor="ACME", firmware_version="2.0")
    assert new.over(old) == ChargerIdentity(vendor="ACME", model="W1", firmware_version="2.0")
