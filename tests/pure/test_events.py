"""Typed OCPP events: what each watched frame means, for 1.6 and 2.x, decoded once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from harmone.ocpp.events import (
    BootAnswered,
    Booted,
    ChargingNeeds,
    ConnectorStatusChanged,
    MeterReading,
    ProfileKind,
    ProfilePurpose,
    ProfileRequested,
    ProfilesCleared,
    ProfileSet,
    Sample,
    SchedulePeriod,
    TransactionEnded,
    TransactionStarted,
    interpret,
    parse_timestamp,
)
from harmone.ocpp.framing import MessageType
from harmone.ocpp.versions import OcppVersion

V16, V201, V21 = OcppVersion.V16, OcppVersion.V201, OcppVersion.V21
CALL, RESULT = MessageType.CALL, MessageType.CALLRESULT
T0 = datetime(2026, 1, 1, tzinfo=UTC)

PROFILE16 = {
    "connectorId": 2,
    "csChargingProfiles": {
        "chargingProfileId": 5,
        "transactionId": 77,
        "stackLevel": 3,
        "chargingProfilePurpose": "ChargePointMaxProfile",
        "chargingProfileKind": "Absolute",
        "validFrom": "2026-01-01T00:00:00Z",
        "chargingSchedule": {
            "duration": 3600,
            "startSchedule": "2026-01-01T00:00:00Z",
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 11000, "numberPhases": 3},
                {"startPeriod": 600, "limit": 7400.5},
            ],
        },
    },
}
PROFILE201 = {
    "evseId": 1,
    "chargingProfile": {
        "id": 8,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Recurring",
        "recurrencyKind": "Daily",
        "chargingSchedule": [
            {
                "id": 1,
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16, "phaseToUse": 2}],
            }
        ],
    },
}

CASES: list[tuple[str, OcppVersion, str, MessageType, str, Any, Any, tuple[Any, ...]]] = [
    (
        "1.6 boot",
        V16,
        "charger",
        CALL,
        "BootNotification",
        {"chargePointVendor": "V", "chargePointModel": "M", "chargeBoxSerialNumber": "S"},
        None,
        (Booted("V", "M", "S", None),),
    ),
    (
        "2.0.1 boot",
        V201,
        "charger",
        CALL,
        "BootNotification",
        {
            "reason": "PowerUp",
            "chargingStation": {"vendorName": "V", "model": "M", "firmwareVersion": "1"},
        },
        None,
        (Booted("V", "M", None, "1"),),
    ),
    (
        "boot answered by the CPMS",
        V16,
        "cpms",
        RESULT,
        "BootNotification",
        {"status": "Pending", "currentTime": "2026-01-01T00:00:00Z", "interval": 30},
        {"chargePointVendor": "V", "chargePointModel": "M"},
        (BootAnswered(False, "Pending", 30),),
    ),
    (
        "1.6 status",
        V16,
        "charger",
        CALL,
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
        None,
        (ConnectorStatusChanged(1, "Charging", None, "NoError"),),
    ),
    (
        "2.0.1 status, per EVSE",
        V201,
        "charger",
        CALL,
        "StatusNotification",
        {
            "timestamp": "2026-01-01T00:00:00Z",
            "connectorStatus": "Occupied",
            "evseId": 2,
            "connectorId": 1,
        },
        None,
        (ConnectorStatusChanged(2, "Occupied", 1),),
    ),
    (
        "a vendor field does not hide the status",
        V16,
        "charger",
        CALL,
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Available", "x-vendor": 1},
        None,
        (ConnectorStatusChanged(1, "Available", None, "NoError"),),
    ),
    (
        "a wrong type does",
        V16,
        "charger",
        CALL,
        "StatusNotification",
        {"connectorId": "1", "errorCode": "NoError", "status": "Available"},
        None,
        (),
    ),
    (
        "1.6 start accepted by the CPMS",
        V16,
        "cpms",
        RESULT,
        "StartTransaction",
        {"idTagInfo": {"status": "Accepted"}, "transactionId": 42},
        {"connectorId": 2, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"},
        (TransactionStarted(2, "42"),),
    ),
    (
        "1.6 start refused",
        V16,
        "cpms",
        RESULT,
        "StartTransaction",
        {"idTagInfo": {"status": "Invalid"}, "transactionId": 42},
        {"connectorId": 2, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"},
        (),
    ),
    (
        "1.6 stop",
        V16,
        "charger",
        CALL,
        "StopTransaction",
        {"transactionId": 42, "meterStop": 10, "timestamp": "2026-01-01T00:00:00Z"},
        None,
        (TransactionEnded("42"),),
    ),
    (
        "1.6 meter values: kW made W",
        V16,
        "charger",
        CALL,
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": 42,
            "meterValue": [
                {
                    "timestamp": "2026-01-01T00:00:00Z",
                    "sampledValue": [
                        {"value": "15.5", "measurand": "Current.Import", "phase": "L2"},
                        {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
                        {"value": "1234"},
                    ],
                }
            ],
        },
        None,
        (
            MeterReading(
                1,
                "42",
                T0,
                (
                    Sample("Current.Import", 15.5, "L2"),
                    Sample("Power.Active.Import", 7200.0, None, "W"),
                    Sample("Energy.Active.Import.Register", 1234.0),
                ),
            ),
        ),
    ),
    (
        "2.0.1 transaction started with a reading (multiplier applied)",
        V201,
        "charger",
        CALL,
        "TransactionEvent",
        {
            "eventType": "Started",
            "timestamp": "2026-01-01T00:00:00Z",
            "triggerReason": "CablePluggedIn",
            "seqNo": 0,
            "transactionInfo": {"transactionId": "T-1", "chargingState": "EVConnected"},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": [
                {
                    "timestamp": "2026-01-01T00:00:00Z",
                    "sampledValue": [
                        {
                            "value": 1.2,
                            "measurand": "Current.Import",
                            "phase": "L1",
                            "unitOfMeasure": {"unit": "A", "multiplier": 1},
                        }
                    ],
                }
            ],
        },
        None,
        (
            TransactionStarted(1, "T-1", "EVConnected"),
            MeterReading(1, "T-1", T0, (Sample("Current.Import", 12.0, "L1", "A"),)),
        ),
    ),
    (
        "2.0.1 update without evse: the reading names only its transaction",
        V201,
        "charger",
        CALL,
        "TransactionEvent",
        {
            "eventType": "Updated",
            "timestamp": "2026-01-01T00:00:00Z",
            "triggerReason": "MeterValuePeriodic",
            "seqNo": 3,
            "transactionInfo": {"transactionId": "T-1"},
            "meterValue": [
                {
                    "timestamp": "2026-01-01T00:00:00Z",
                    "sampledValue": [{"value": 9, "measurand": "Current.Import"}],
                }
            ],
        },
        None,
        (MeterReading(None, "T-1", T0, (Sample("Current.Import", 9.0),)),),
    ),
    (
        "2.0.1 transaction ended",
        V201,
        "charger",
        CALL,
        "TransactionEvent",
        {
            "eventType": "Ended",
            "timestamp": "2026-01-01T00:00:00Z",
            "triggerReason": "EVDeparted",
            "seqNo": 9,
            "transactionInfo": {"transactionId": "T-1", "stoppedReason": "EVDisconnected"},
            "evse": {"id": 1},
        },
        None,
        (TransactionEnded("T-1", 1, "EVDisconnected"),),
    ),
    (
        "2.0.1 charging needs",
        V201,
        "charger",
        CALL,
        "NotifyEVChargingNeeds",
        {
            "evseId": 1,
            "chargingNeeds": {
                "requestedEnergyTransfer": "AC_three_phase",
                "departureTime": "2026-01-01T08:00:00Z",
                "acChargingParameters": {
                    "energyAmount": 20000,
                    "evMinCurrent": 6,
                    "evMaxCurrent": 16,
                    "evMaxVoltage": 400,
                },
            },
        },
        None,
        (ChargingNeeds(1, 16.0, 6.0, 20000.0, datetime(2026, 1, 1, 8, tzinfo=UTC)),),
    ),
    (
        "the CPMS's clear, once the charger accepted it",
        V16,
        "charger",
        RESULT,
        "ClearChargingProfile",
        {"status": "Accepted"},
        {"connectorId": 1, "chargingProfilePurpose": "TxProfile"},
        (ProfilesCleared(None, 1, ProfilePurpose.TX, None, "cpms"),),
    ),
    (
        "a clear that matched nothing changes nothing",
        V201,
        "charger",
        RESULT,
        "ClearChargingProfile",
        {"status": "Unknown"},
        {"chargingProfileCriteria": {"evseId": 1}},
        (),
    ),
    (
        "a heartbeat means nothing here",
        V16,
        "charger",
        CALL,
        "Heartbeat",
        {},
        None,
        (),
    ),
]


@pytest.mark.parametrize(
    ("version", "sender", "kind", "action", "payload", "request_", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_each_watched_frame_means_what_the_spec_says(
    version: OcppVersion,
    sender: Any,
    kind: MessageType,
    action: str,
    payload: Any,
    request_: Any,
    expected: tuple[Any, ...],
) -> None:
    assert interpret(version, sender, kind, action, payload, request_) == expected


def test_a_1_6_profile_request_and_its_acceptance() -> None:
    (requested,) = interpret(V16, "cpms", CALL, "SetChargingProfile", PROFILE16)
    assert isinstance(requested, ProfileRequested) and requested.connector_id == 2
    profile = requested.profile
    assert profile.purpose is ProfilePurpose.STATION_MAX  # ChargePointMaxProfile, renamed
    assert profile.kind is ProfileKind.ABSOLUTE and profile.stack_level == 3
    assert profile.id == 5 and profile.transaction_id == "77" and profile.valid_from == T0
    (schedule,) = profile.schedules
    assert schedule.unit == "W" and schedule.duration == 3600 and schedule.start == T0
    assert schedule.periods == (
        SchedulePeriod(0, 11000.0, 3),
        SchedulePeriod(600, 7400.5),
    )
    accepted = interpret(
        V16, "charger", RESULT, "SetChargingProfile", {"status": "Accepted"}, PROFILE16
    )
    assert accepted == (ProfileSet(2, profile, "cpms"),)
    rejected = interpret(
        V16, "charger", RESULT, "SetChargingProfile", {"status": "Rejected"}, PROFILE16
    )
    assert rejected == ()


@pytest.mark.parametrize("version", [V201, V21])
def test_a_2x_profile_is_read_per_evse(version: OcppVersion) -> None:
    (event,) = interpret(
        version, "charger", RESULT, "SetChargingProfile", {"status": "Accepted"}, PROFILE201
    )
    assert isinstance(event, ProfileSet) and event.connector_id == 1
    assert event.profile.purpose is ProfilePurpose.TX_DEFAULT
    assert event.profile.kind is ProfileKind.RECURRING and event.profile.recurrency == "Daily"
    assert event.profile.schedules[0].periods == (SchedulePeriod(0, 16.0, None, 2),)


def test_a_profile_with_a_timestamp_that_is_not_iso_8601_gives_no_event() -> None:
    bad = {**PROFILE201, "chargingProfile": {**PROFILE201["chargingProfile"], "validTo": "soon"}}
    assert interpret(V201, "cpms", CALL, "SetChargingProfile", bad) == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-01T01:00:00+01:00", T0),
        ("2026-01-01T00:00:00", T0),  # no offset: OCPP times are UTC
        ("yesterday", None),
    ],
)
def test_timestamps(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected
