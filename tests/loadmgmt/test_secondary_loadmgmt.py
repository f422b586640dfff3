"""Load management and a secondary CPMS (issue 14): the secondary's SetChargingProfile is obeyed
only when its rule lets it through (then it is one more CPMS cap), and it never sees
HARMON-E's own profiles. `ocpp`-package charger and backends, 1.6."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16
from secondary_support import two_backend_site
from support import harmone_server, wait_for
from test_loadmgmt_e2e import CONFIG, _api

from harmone.errors import SimulatorError
from harmone.loadmgmt.profiles import PROFILE_ID_BASE
from harmone.sim import SimulatedCharger, SimulatedCpms


def _profile(tx: int, limit: float) -> Any:
    return call16.SetChargingProfile(
        connector_id=1,
        cs_charging_profiles={
            "chargingProfileId": 7,
            "stackLevel": 0,
            "transactionId": tx,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            },
        },
    )


@pytest.mark.parametrize("rule", ["read-only", "allow:SetChargingProfile"])
async def test_a_secondary_profile_counts_only_when_the_rule_allows_it(
    tmp_path: Path, rule: str
) -> None:
    async with (
        SimulatedCpms(transaction_id_start=100) as primary,
        SimulatedCpms(transaction_id_start=900) as secondary,
        harmone_server(tmp_path) as srv,
        await _api(srv) as api,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url, rule)
        r = await api.put(f"/api/v1/sites/{uid}/load-management", json=CONFIG)
        assert r.status_code == 200, r.text
        async with SimulatedCharger(url, "LM", "1.6") as sim:
            await sim.boot()
            tx = await sim.start_transaction(1, "TAG")
            assert tx == 100  # the primary's id: the charger knows no other
            await wait_for(lambda: sim.current_limit(1) == 32, 10)
            link: Any = srv.runtime.hub.link(uid, "LM")
            await wait_for(lambda: link._secondary._to_secondary == {100: 900})
            if rule == "read-only":
                with pytest.raises(SimulatorError):
                    await secondary.call("LM", _profile(900, 20))
                assert not any(
                    a == "SetChargingProfile" and str(_profile_id(p)) == "7"
                    for a, p in sim.received_calls
                )
                assert sim.current_limit(1) == 32
            else:
                result = await secondary.call("LM", _profile(900, 20))
                assert result.status == "Accepted"
                # it reached the charger with the charger's transaction id, and it caps
                installed = [p for p in sim.profiles if p.profile_id == 7]
                assert installed and installed[0].profile["transactionId"] == 100
                await wait_for(lambda: sim.current_limit(1) == 20, 10)
                # load management stays on top when the site shrinks
                cfg = {**CONFIG, "tree": {"id": "grid", "max_current": 10}}
                await api.put(f"/api/v1/sites/{uid}/load-management", json=cfg)
                await wait_for(lambda: sim.current_limit(1) == 10, 10)
        # neither backend saw HARMON-E's own profiles or their answers
        for backend in (primary, secondary):
            frames = backend.raw_frames["LM"]
            assert not any(str(PROFILE_ID_BASE)[:3] in f for f in frames if "ChargingProfile" in f)
            assert all('"hm-' not in f for f in frames)


def _profile_id(payload: dict[str, Any]) -> Any:
    prof = payload.get("cs_charging_profiles") or payload.get("csChargingProfiles") or {}
    return prof.get("charging_profile_id") or prof.get("chargingProfileId")
