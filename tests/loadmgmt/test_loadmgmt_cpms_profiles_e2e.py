"""The CPMS's own profiles through the relay, read the way the charger reads them (issue 9,
rows 3 and 4): real sockets, a CPMS built on the `ocpp` package sending SetChargingProfile
through HARMON-E, and simulated chargers that apply what they accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from support import harmone_server, make_site, wait_for
from test_loadmgmt_e2e import _api, _tx_limits

from harmone.sim import SimulatedCharger, SimulatedCpms

CONFIG: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 0.5,
    "min_interval": 0,
    "tree": {"id": "grid", "max_current": 32},
    "default_charger": {"max_current": 32, "phases": 3},
}


def _profile(
    version: str,
    pid: int,
    purpose: str,
    amps: float,
    transaction_id: int | str | None = None,
) -> dict[str, Any]:
    """One CPMS profile, stack level 0, Relative, one period: as CPMSs send them."""
    period = [{"startPeriod": 0, "limit": amps}]
    if version == "1.6":
        profile: dict[str, Any] = {
            "chargingProfileId": pid,
            "stackLevel": 0,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": period},
        }
        if transaction_id is not None:
            profile["transactionId"] = transaction_id
        return profile
    profile = {
        "id": pid,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        "chargingSchedule": [
            {"id": pid, "chargingRateUnit": "A", "chargingSchedulePeriod": period}
        ],
    }
    if transaction_id is not None:
        profile["transactionId"] = str(transaction_id)
    return profile


async def _set(cpms: SimulatedCpms, cpid: str, version: str, connector: int, profile: Any) -> None:
    if version == "1.6":
        request: Any = call16.SetChargingProfile(
            connector_id=connector, cs_charging_profiles=profile
        )
    else:
        request = call201.SetChargingProfile(evse_id=connector, charging_profile=profile)
    result = await cpms.call(cpid, request)
    assert result.status == "Accepted"


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_cpms_tx_profile_over_a_zero_default_lets_the_car_draw_it(
    tmp_path: Path, version: str
) -> None:
    """Row 3: TxDefaultProfile 0 A on connector (EVSE) 0, then a 16 A TxProfile for the
    transaction. By OCPP the TxProfile overrides the default: the car may draw 16 A, and
    HARMON-E, whose own profile leads, must grant 16 A, not pin it at 0 A."""
    async with SimulatedCpms() as cpms, harmone_server(tmp_path) as srv, await _api(srv) as api:
        site, url = await make_site(srv, cpms.url)
        r = await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        assert r.status_code == 200, r.text
        cpid = f"ROW3-{version}"
        async with SimulatedCharger(url, cpid, version) as sim:
            await sim.boot()
            await sim.status(1, "Available")
            await wait_for(lambda: sim.current_limit(1) == 0)
            await _set(cpms, cpid, version, 0, _profile(version, 501, "TxDefaultProfile", 0))
            tx = await sim.start_transaction(1, "TAG")
            # only the CPMS's 0 A default applies to the transaction so far: nothing to grant
            await wait_for(lambda: bool(_tx_limits(sim)) and _tx_limits(sim)[-1] == 0)
            await _set(cpms, cpid, version, 1, _profile(version, 502, "TxProfile", 16, tx))
            await wait_for(lambda: sim.current_limit(1) == 16 and _tx_limits(sim)[-1] == 16)
            # HARMON-E's TxProfile is what the charger follows: above the CPMS's stack level
            leading = max(
                (p for p in sim.profiles if p.purpose == "TxProfile"), key=lambda p: p.stack_level
            )
            assert leading.stack_level >= 1 and leading.profile_id != 502
            status = (await api.get(f"/api/v1/sites/{site.uid}/load-management/status")).json()
            (conn,) = status["connectors"]
            assert conn["granted"] == 16 and "capped_by_cpms" in conn["reason_kinds"]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_cpms_tx_profile_ends_with_its_transaction(tmp_path: Path, version: str) -> None:
    """Row 4: an 8 A TxProfile for T1; T1 ends; T2 starts alone on the 32 A site: the 8 A
    belonged to T1 only, T2 is granted (and may draw) 32 A."""
    async with SimulatedCpms() as cpms, harmone_server(tmp_path) as srv, await _api(srv) as api:
        site, url = await make_site(srv, cpms.url)
        r = await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        assert r.status_code == 200, r.text
        cpid = f"ROW4-{version}"
        async with SimulatedCharger(url, cpid, version) as sim:
            await sim.boot()
            await sim.status(1, "Available")
            t1 = await sim.start_transaction(1, "TAG-1")
            await wait_for(lambda: sim.current_limit(1) == 32)
            await _set(cpms, cpid, version, 1, _profile(version, 601, "TxProfile", 8, t1))
            await wait_for(lambda: sim.current_limit(1) == 8 and _tx_limits(sim)[-1] == 8)
            await sim.stop_transaction(1, wh=500)
            await wait_for(lambda: sim.current_limit(1) == 0)  # HARMON-E's default
            sent = len(_tx_limits(sim))
            t2 = await sim.start_transaction(1, "TAG-2")
            assert t2 != t1
            await wait_for(lambda: sim.current_limit(1) == 32)
            assert _tx_limits(sim)[sent:] == [32]
