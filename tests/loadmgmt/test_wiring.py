"""Charger wiring in the load-management configuration and in W profiles."""

from __future__ import annotations

import pytest

from harmone.errors import ConfigError
from harmone.loadmgmt import Phase, Wiring
from harmone.loadmgmt.config import parse_config
from harmone.loadmgmt.profiles import set_charging_profile
from harmone.ocpp.versions import OcppVersion

TREE = {"id": "grid", "max_current": 63}


def _charger(**fields: object) -> dict[str, object]:
    return {"tree": TREE, "chargers": {"CP": fields}}


def test_existing_configurations_keep_their_meaning() -> None:
    one = parse_config(_charger(phases=1, phase_rotation=["L2"])).chargers["CP"]
    three = parse_config(_charger()).chargers["CP"]
    assert (one.wiring, one.phases, one.voltage) == (Wiring.LN, 1, 230)
    assert (three.wiring, three.phases) == (Wiring.THREE_PHASE, 3)
    assert three.to_json()["wiring"] == "3-phase"


def test_an_l_l_charger_names_its_lines_and_its_line_to_line_voltage() -> None:
    config = parse_config(_charger(wiring="L-L", phase_rotation=["L3", "L1"], voltage=208))
    s = config.chargers["CP"]
    assert (s.wiring, s.phases, s.voltage) == (Wiring.LL, 1, 208)
    spec = s.spec("CP")
    assert spec.grid_phases == (Phase.L3, Phase.L1)
    assert spec.watts_per_amp() == 208
    again = parse_config({"tree": TREE, "chargers": {"CP": s.to_json()}})
    assert again.chargers["CP"] == s


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"wiring": "L-L", "phase_rotation": ["L1", "L2"]}, "voltage is required"),
        ({"wiring": "L-L", "voltage": 208, "phases": 3}, "reports 1"),
        ({"wiring": "L-L", "voltage": 240, "phase_rotation": ["L1"]}, "rotation"),
        ({"wiring": "2-phase"}, "wiring must be one of"),
        ({"wiring": "3-phase", "phases": 1}, "reports 3"),
        ({"default_dwell_minutes": -5}, "default_dwell_minutes"),
    ],
)
def test_wrong_wiring_is_refused_saying_why(fields: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_config(_charger(**fields))


def test_operator_defaults_for_cars_that_do_not_tell() -> None:
    s = parse_config(_charger(default_dwell_minutes=480, default_energy_kwh=15)).chargers["CP"]
    assert (s.default_dwell_minutes, s.default_energy_kwh) == (480, 15)
    assert s.to_json()["default_energy_kwh"] == 15


def _limit(payload: dict[str, object]) -> float:
    profile = payload["csChargingProfiles"]
    assert isinstance(profile, dict)
    return float(profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"])


@pytest.mark.parametrize(
    ("phases", "voltage", "wiring", "watts"),
    [
        (1, 208, Wiring.LL, 6_656.0),  # 32 A between two lines at 208 V
        (1, 230, Wiring.LN, 7_360.0),
        (3, 230, Wiring.THREE_PHASE, 22_080.0),
        (1, 230, Wiring.THREE_PHASE, 7_360.0),  # a one-phase car on a three-phase charger
    ],
)
def test_w_limits_follow_the_wiring(
    phases: int, voltage: float, wiring: Wiring, watts: float
) -> None:
    payload = set_charging_profile(
        OcppVersion.V16,
        "TxDefaultProfile",
        1,
        32,
        unit="W",
        phases=phases,
        voltage=voltage,
        wiring=wiring,
    )
    assert _limit(payload) == watts


def test_w_limits_are_rounded_down() -> None:
    payload = set_charging_profile(
        OcppVersion.V16, "TxDefaultProfile", 1, 6.03, unit="W", phases=1, voltage=208.3
    )
    assert _limit(payload) == 1256.0  # 1256.049 W: never above the grant
