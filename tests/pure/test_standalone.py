"""The standalone responder, and the version and schema tables it stands on."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jsonschema import validators
from support import FixedClock

from harmone.errors import ConfigError, OcppError
from harmone.ocpp.schemas import (
    has_response,
    known_actions,
    load_schema,
    validate_request,
    validate_response,
)
from harmone.ocpp.standalone import StandaloneResponder, answered_actions
from harmone.ocpp.versions import (
    ERROR_KINDS,
    SUPPORTED_SUBPROTOCOLS,
    OcppVersion,
    error_code,
    subprotocol_for,
    version_for_subprotocol,
)

V16, V201, V21 = OcppVersion.V16, OcppVersion.V201, OcppVersion.V21
VERSIONS = list(OcppVersion)
NOW = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
NOW_TEXT = "2025-03-04T05:06:07.890Z"
TS = "2025-03-04T05:00:00Z"


class Counter:
    """A transaction id factory that records how often it was asked."""

    def __init__(self, start: int = 1) -> None:
        self._ids = itertools.count(start)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return next(self._ids)


def responder(ids: Callable[[], int] | None = None, interval: int = 300) -> StandaloneResponder:
    return StandaloneResponder(FixedClock(NOW), ids or Counter(), heartbeat_interval=interval)


# ---- requests built from the schemas ---------------------------------------------------------


def _build(schema: dict[str, Any], root: dict[str, Any], full: bool) -> Any:
    """A valid instance of `schema`: required fields only, or (full) every field."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _build(root["definitions"][name], root, full)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        names = list(props) if full else schema.get("required", [])
        return {name: _build(props[name], root, full) for name in names}
    if kind == "array":
        count = max(schema.get("minItems", 0), 1 if full else 0)
        return [_build(schema["items"], root, full) for _ in range(count)]
    if kind == "string" or kind is None:  # untyped: DataTransfer's free-form data
        fmt = schema.get("format")
        if fmt == "date-time":
            return TS
        if fmt == "uri":
            return "https://example.com/x"
        return "x"
    if kind in ("integer", "number"):
        return schema.get("minimum", min(1, schema.get("maximum", 1)))
    if kind == "boolean":
        return False
    raise AssertionError(f"cannot build an instance of {schema}")


def request(version: OcppVersion, action: str, *, full: bool = False) -> dict[str, Any]:
    schema = load_schema(version, action, "request")
    built = _build(schema, schema, full)
    validate_request(version, action, built, check_formats=True)
    return built  # type: ignore[no-any-return]


ANSWERED = [(v, a) for v in VERSIONS for a in sorted(answered_actions(v))]


def codes(version: OcppVersion) -> set[str]:
    return {error_code(version, kind) for kind in ERROR_KINDS}


# ---- versions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subprotocol", "version"),
    [("ocpp1.6", V16), ("ocpp2.0.1", V201), ("ocpp2.1", V21)],
)
def test_subprotocols_map_both_ways(subprotocol: str, version: OcppVersion) -> None:
    assert version_for_subprotocol(subprotocol) is version
    assert subprotocol_for(version) == version.subprotocol == subprotocol
    assert subprotocol in SUPPORTED_SUBPROTOCOLS


@pytest.mark.parametrize("subprotocol", [None, "", "ocpp2.0", "OCPP1.6", "ocpp1.5", "ocpp1.6j"])
def test_unknown_subprotocols_have_no_version(subprotocol: str | None) -> None:
    assert version_for_subprotocol(subprotocol) is None


def test_supported_subprotocols_newest_first() -> None:
    assert SUPPORTED_SUBPROTOCOLS == ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")


ERROR_TABLE = [
    ("format", "FormationViolation", "FormatViolation"),
    ("protocol", "ProtocolError", "ProtocolError"),
    ("type_constraint", "TypeConstraintViolation", "TypeConstraintViolation"),
    ("property_constraint", "PropertyConstraintViolation", "PropertyConstraintViolation"),
    ("occurrence_constraint", "OccurenceConstraintViolation", "OccurrenceConstraintViolation"),
    ("not_implemented", "NotImplemented", "NotImplemented"),
    ("not_supported", "NotSupported", "NotSupported"),
    ("internal", "InternalError", "InternalError"),
    ("security", "SecurityError", "SecurityError"),
    ("generic", "GenericError", "GenericError"),
    ("rpc_framework", "ProtocolError", "RpcFrameworkError"),
    ("message_type_not_supported", "GenericError", "MessageTypeNotSupported"),
]


@pytest.mark.parametrize(("kind", "v16", "v2x"), ERROR_TABLE)
def test_error_codes_per_version(kind: str, v16: str, v2x: str) -> None:
    assert error_code(V16, kind) == v16
    assert error_code(V201, kind) == v2x
    assert error_code(V21, kind) == v2x


def test_every_error_kind_is_tabled() -> None:
    assert {kind for kind, _, _ in ERROR_TABLE} == ERROR_KINDS


def test_unknown_error_kind_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown OCPP error kind"):
        error_code(V16, "FormatViolation")


# ---- schemas ---------------------------------------------------------------------------------


def test_every_schema_is_a_valid_schema_of_its_draft() -> None:
    for version in VERSIONS:
        for action in known_actions(version):
            directions = ("request", "response") if has_response(version, action) else ("request",)
            for direction in directions:
                schema = load_schema(version, action, direction)  # type: ignore[arg-type]
                validators.validator_for(schema).check_schema(schema)


@pytest.mark.parametrize(
    ("version", "present", "absent"),
    [
        (V16, {"BootNotification", "Reset", "SignCertificate", "StartTransaction"}, {"Foo"}),
        (V201, {"BootNotification", "TransactionEvent", "Reset"}, {"StartTransaction"}),
        (V21, {"TransactionEvent", "BatterySwap", "NotifyPeriodicEventStream"}, {"Response"}),
    ],
)
def test_known_actions(version: OcppVersion, present: set[str], absent: set[str]) -> None:
    actions = known_actions(version)
    assert present <= actions
    assert not absent & actions
    assert not any(a.endswith(("Request", "Response")) for a in actions)


def test_a_send_has_no_response() -> None:
    assert not has_response(V21, "NotifyPeriodicEventStream")
    validate_request(
        V21,
        "NotifyPeriodicEventStream",
        {"id": 1, "pending": 0, "basetime": TS, "data": [{"t": 0, "v": "1"}]},
    )
    with pytest.raises(OcppError) as caught:
        validate_response(V21, "NotifyPeriodicEventStream", {})
    assert caught.value.code == "NotImplemented"


def test_load_schema_returns_a_copy() -> None:
    load_schema(V16, "Heartbeat", "request")["type"] = "array"
    validate_request(V16, "Heartbeat", {})


@pytest.mark.parametrize("action", ["../BootNotification", "", "BootNotificationRequest", "x/y"])
def test_schema_lookup_only_by_known_name(action: str) -> None:
    with pytest.raises(OcppError) as caught:
        validate_request(V201, action, {})
    assert caught.value.code == "NotImplemented"


def _profile_16(limit: float) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            },
        },
    }


@pytest.mark.parametrize("limit", [0, 6, 21.3, 0.1, 16.0, 1e20])
def test_multiple_of_is_decimal_exact(limit: float) -> None:
    # Binary floats would reject 21.3 as a multiple of 0.1.
    validate_request(V16, "SetChargingProfile", _profile_16(limit))


@pytest.mark.parametrize("limit", [21.35, 0.05, float("nan"), float("inf"), float("-inf")])
def test_multiple_of_rejects_without_raising(limit: float) -> None:
    with pytest.raises(OcppError) as caught:
        validate_request(V16, "SetChargingProfile", _profile_16(limit))
    assert caught.value.code == "PropertyConstraintViolation"


@pytest.mark.parametrize(
    "stamp",
    ["yesterday", "2025-03-04T05:06:07", "2025-13-04T05:06:07Z", "2025-03-04 05:06:07Z", ""],
)
def test_date_time_checked_only_on_request(stamp: str) -> None:
    validate_response(V16, "Heartbeat", {"currentTime": stamp})
    with pytest.raises(OcppError) as caught:
        validate_response(V16, "Heartbeat", {"currentTime": stamp}, check_formats=True)
    assert caught.value.code == "PropertyConstraintViolation"


@pytest.mark.parametrize(
    "stamp", [TS, "2025-03-04T05:06:07.123456789+01:00", "2025-03-04t05:06:07z", NOW_TEXT]
)
def test_date_time_accepts_rfc3339(stamp: str) -> None:
    validate_response(V201, "Heartbeat", {"currentTime": stamp}, check_formats=True)


def test_error_description_is_bounded_and_details_locate_the_fault() -> None:
    with pytest.raises(OcppError) as caught:
        validate_request(
            V201, "Authorize", {"idToken": {"idToken": "x" * 5000, "type": "ISO14443"}}
        )
    assert caught.value.code == "PropertyConstraintViolation"
    assert len(caught.value.description) <= 255
    assert caught.value.details == {"path": "/idToken/idToken", "constraint": "maxLength"}


def test_pathologically_deep_payload_is_a_format_error() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    for version in VERSIONS:
        with pytest.raises(OcppError) as caught:
            validate_request(version, "Heartbeat", deep)
        assert caught.value.code == error_code(version, "format")


# ---- answers ---------------------------------------------------------------------------------


def test_answered_actions_are_known_and_have_answers() -> None:
    for version in VERSIONS:
        assert answered_actions(version) <= known_actions(version)
        assert all(has_response(version, a) for a in answered_actions(version))


@pytest.mark.parametrize(("version", "action"), ANSWERED)
@pytest.mark.parametrize("full", [False, True], ids=["minimal", "full"])
def test_every_answer_is_schema_valid(version: OcppVersion, action: str, full: bool) -> None:
    answer = responder().answer(version, action, request(version, action, full=full))
    validate_response(version, action, answer, check_formats=True)


@pytest.mark.parametrize(
    ("version", "action", "payload", "expected"),
    [
        (
            V16,
            "BootNotification",
            {"chargePointVendor": "ACME", "chargePointModel": "Wallbox"},
            {"status": "Accepted", "currentTime": NOW_TEXT, "interval": 300},
        ),
        (V16, "Heartbeat", {}, {"currentTime": NOW_TEXT}),
        (V16, "Authorize", {"idTag": "04A2B3"}, {"idTagInfo": {"status": "Accepted"}}),
        (
            V16,
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
            {},
        ),
        (
            V16,
            "StopTransaction",
            {"transactionId": 5, "meterStop": 1000, "timestamp": TS, "idTag": "04A2B3"},
            {"idTagInfo": {"status": "Accepted"}},
        ),
        (V16, "StopTransaction", {"transactionId": 5, "meterStop": 1000, "timestamp": TS}, {}),
        (
            V16,
            "MeterValues",
            {"connectorId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [{"value": "1"}]}]},
            {},
        ),
        (V16, "DataTransfer", {"vendorId": "com.acme"}, {"status": "UnknownVendorId"}),
        (V16, "DiagnosticsStatusNotification", {"status": "Idle"}, {}),
        (V16, "FirmwareStatusNotification", {"status": "Installed"}, {}),
        (V16, "SignCertificate", {"csr": "-----BEGIN"}, {"status": "Rejected"}),
        (V16, "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": TS}, {}),
        (V16, "LogStatusNotification", {"status": "Idle"}, {}),
        (
            V201,
            "BootNotification",
            {"chargingStation": {"model": "W", "vendorName": "ACME"}, "reason": "PowerUp"},
            {"status": "Accepted", "currentTime": NOW_TEXT, "interval": 300},
        ),
        (
            V201,
            "Authorize",
            {"idToken": {"idToken": "04A2B3", "type": "ISO14443"}},
            {"idTokenInfo": {"status": "Accepted"}},
        ),
        (
            V201,
            "TransactionEvent",
            {
                "eventType": "Started",
                "timestamp": TS,
                "triggerReason": "Authorized",
                "seqNo": 0,
                "transactionInfo": {"transactionId": "tx-1"},
                "idToken": {"idToken": "04A2B3", "type": "ISO14443"},
            },
            {"idTokenInfo": {"status": "Accepted"}},
        ),
        (
            V201,
            "TransactionEvent",
            {
                "eventType": "Updated",
                "timestamp": TS,
                "triggerReason": "MeterValuePeriodic",
                "seqNo": 1,
                "transactionInfo": {"transactionId": "tx-1"},
            },
            {},
        ),
        (V201, "DataTransfer", {"vendorId": "com.acme"}, {"status": "UnknownVendorId"}),
        (
            V201,
            "NotifyEVChargingNeeds",
            {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase"}},
            {"status": "Rejected"},
        ),
        (
            V201,
            "Get15118EVCertificate",
            {
                "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
                "action": "Install",
                "exiRequest": "AAAA",
            },
            {"status": "Failed", "exiResponse": ""},
        ),
        (V201, "SignCertificate", {"csr": "-----BEGIN"}, {"status": "Rejected"}),
        (
            V21,
            "NotifyEVChargingNeeds",
            {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase"}},
            {"status": "NoChargingProfile"},
        ),
        (
            V21,
            "VatNumberValidation",
            {"vatNumber": "NL123", "evseId": 2},
            {"vatNumber": "NL123", "evseId": 2, "status": "Rejected"},
        ),
        (
            V21,
            "VatNumberValidation",
            {"vatNumber": "NL123"},
            {"vatNumber": "NL123", "status": "Rejected"},
        ),
    ],
)
def test_answers(
    version: OcppVersion, action: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert responder().answer(version, action, payload) == expected


def test_certificate_chain_status_fails_each_certificate() -> None:
    hash_data = {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": "a",
        "issuerKeyHash": "b",
        "serialNumber": "c",
    }
    payload = {
        "certificateStatusRequests": [
            {"certificateHashData": hash_data, "source": "OCSP", "urls": ["https://ocsp"]},
            {
                "certificateHashData": {**hash_data, "serialNumber": "d"},
                "source": "CRL",
                "urls": ["https://crl"],
            },
        ]
    }
    answer = responder().answer(V21, "GetCertificateChainStatus", payload)
    assert answer == {
        "certificateStatus": [
            {
                "certificateHashData": hash_data,
                "source": "OCSP",
                "status": "Failed",
                "nextUpdate": NOW_TEXT,
            },
            {
                "certificateHashData": {**hash_data, "serialNumber": "d"},
                "source": "CRL",
                "status": "Failed",
                "nextUpdate": NOW_TEXT,
            },
        ]
    }


def test_boot_grants_the_configured_heartbeat_interval() -> None:
    for version in VERSIONS:
        answer = responder(interval=60).answer(
            version, "BootNotification", request(version, "BootNotification")
        )
        assert answer["interval"] == 60


@pytest.mark.parametrize("interval", [0, -1, True, 1.5, "300"])
def test_heartbeat_interval_must_be_positive_seconds(interval: Any) -> None:
    with pytest.raises(ConfigError):
        StandaloneResponder(FixedClock(NOW), Counter(), heartbeat_interval=interval)


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (datetime(2025, 3, 4, 6, 6, 7, 890000, tzinfo=timezone(timedelta(hours=1))), NOW_TEXT),
        (datetime(2025, 3, 4, 5, 6, 7, 890999), NOW_TEXT),  # naive is taken as UTC
        (datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC), "2025-03-04T05:06:07.000Z"),
    ],
)
def test_times_are_utc_with_milliseconds(now: datetime, text: str) -> None:
    answer = StandaloneResponder(FixedClock(now), Counter()).answer(V201, "Heartbeat", {})
    assert answer == {"currentTime": text}


def test_transaction_ids_come_from_the_factory() -> None:
    ids = Counter(start=41)
    r = responder(ids)
    start = request(V16, "StartTransaction")
    got = [r.answer(V16, "StartTransaction", start)["transactionId"] for _ in range(3)]
    assert got == [41, 42, 43]
    assert ids.calls == 3
    # Nothing else draws an id: not the 1.6 stop, nor 2.x transactions (the charger owns them).
    r.answer(V16, "StopTransaction", request(V16, "StopTransaction", full=True))
    for version in (V201, V21):
        r.answer(version, "TransactionEvent", request(version, "TransactionEvent", full=True))
    assert ids.calls == 3


def test_a_bad_factory_gives_internal_error_not_a_bad_answer() -> None:
    r = StandaloneResponder(FixedClock(NOW), lambda: "T-1")  # type: ignore[arg-type,return-value]
    with pytest.raises(OcppError) as caught:
        r.answer(V16, "StartTransaction", request(V16, "StartTransaction"))
    assert caught.value.code == "InternalError"


# ---- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "action", "code"),
    [
        (V16, "Foo", "NotImplemented"),
        (V16, "TransactionEvent", "NotImplemented"),  # a 2.x action
        (V16, "heartbeat", "NotImplemented"),  # names are case-sensitive
        (V201, "StartTransaction", "NotImplemented"),  # a 1.6 action
        (V201, "BatterySwap", "NotImplemented"),  # new in 2.1
        (V21, "", "NotImplemented"),
        (V16, "Reset", "NotSupported"),  # CSMS-initiated
        (V16, "RemoteStartTransaction", "NotSupported"),
        (V201, "SetChargingProfile", "NotSupported"),
        (V201, "GetVariables", "NotSupported"),
        (V21, "RequestStartTransaction", "NotSupported"),
        (V21, "NotifyPeriodicEventStream", "NotSupported"),  # a SEND: nothing to answer
    ],
)
def test_unknown_and_unsupported_actions(version: OcppVersion, action: str, code: str) -> None:
    with pytest.raises(OcppError) as caught:
        responder().answer(version, action, {})
    assert caught.value.code == code


def test_every_known_action_is_answered_or_not_supported() -> None:
    r = responder()
    for version in VERSIONS:
        for action in known_actions(version) - answered_actions(version):
            with pytest.raises(OcppError) as caught:
                r.answer(version, action, {})
            assert caught.value.code == "NotSupported"


_STATUS_16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
_STATUS_2X = {"timestamp": TS, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}


@pytest.mark.parametrize(
    ("version", "action", "payload", "code"),
    [
        # missing required field
        (
            V16,
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError"},
            "OccurenceConstraintViolation",
        ),
        (
            V201,
            "StatusNotification",
            {k: v for k, v in _STATUS_2X.items() if k != "evseId"},
            "OccurrenceConstraintViolation",
        ),
        (V21, "Authorize", {}, "OccurrenceConstraintViolation"),
        (V16, "MeterValues", {"connectorId": 1, "meterValue": []}, "OccurenceConstraintViolation"),
        # wrong type
        (V16, "StatusNotification", {**_STATUS_16, "connectorId": "1"}, "TypeConstraintViolation"),
        (
            V16,
            "StartTransaction",
            {"connectorId": 1, "idTag": 12, "meterStart": 0, "timestamp": TS},
            "TypeConstraintViolation",
        ),
        (V201, "Heartbeat", {"customData": "x"}, "TypeConstraintViolation"),
        (V201, "StatusNotification", {**_STATUS_2X, "evseId": None}, "TypeConstraintViolation"),
        (V21, "StatusNotification", {**_STATUS_2X, "evseId": 1.5}, "TypeConstraintViolation"),
        # bad value
        (
            V16,
            "StatusNotification",
            {**_STATUS_16, "status": "Broken"},
            "PropertyConstraintViolation",
        ),
        (
            V201,
            "StatusNotification",
            {**_STATUS_2X, "connectorStatus": "Broken"},
            "PropertyConstraintViolation",
        ),
        (V21, "StatusNotification", {**_STATUS_2X, "evseId": -1}, "PropertyConstraintViolation"),
        (V16, "Authorize", {"idTag": "x" * 21}, "PropertyConstraintViolation"),
        # wrong structure
        (V16, "Heartbeat", {"extra": 1}, "FormationViolation"),
        (V201, "Heartbeat", {"extra": 1}, "FormatViolation"),
        (V21, "Heartbeat", [], "FormatViolation"),
        (V16, "Heartbeat", None, "FormationViolation"),
        (V201, "Heartbeat", "{}", "FormatViolation"),
    ],
)
def test_invalid_requests(version: OcppVersion, action: str, payload: Any, code: str) -> None:
    with pytest.raises(OcppError) as caught:
        responder().answer(version, action, payload)
    assert caught.value.code == code


def _mutations(version: OcppVersion, action: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    base = request(version, action, full=True)
    required = load_schema(version, action, "request").get("required", [])
    for name in required:
        yield (
            f"without {name}",
            {k: v for k, v in base.items() if k != name},
            "occurrence_constraint",
        )
    yield "with an unknown property", {**base, "harmoneSurplus": 1}, "format"


MUTATIONS = [
    pytest.param(v, a, payload, kind, id=f"{v}-{a}-{what}")
    for v, a in ANSWERED
    for what, payload, kind in _mutations(v, a)
]


@pytest.mark.parametrize(("version", "action", "payload", "kind"), MUTATIONS)
def test_every_answered_action_refuses_broken_payloads(
    version: OcppVersion, action: str, payload: dict[str, Any], kind: str
) -> None:
    with pytest.raises(OcppError) as caught:
        responder().answer(version, action, payload)
    assert caught.value.code == error_code(version, kind)
    assert len(caught.value.description) <= 255


# ---- property: answer or OcppError, nothing else ---------------------------------------------

# Besides arbitrary values, a few near the schemas' limits (lengths, enums, minimums).
_edges = st.sampled_from(["", "Accepted", "x" * 21, "x" * 256, -1, 0, 0.5, 2**31, 2**63])
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | _edges
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def _payloads(draw: st.DrawFn, version: OcppVersion, action: str) -> Any:
    """Arbitrary JSON, or a valid request of `action` with random edits (to get past the
    top-level checks and reach the nested ones and the handlers)."""
    if action not in answered_actions(version) or draw(st.integers(0, 3)) == 0:
        return draw(_json)
    payload = request(version, action, full=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 2))):
        keys = sorted(payload)
        edit = draw(st.sampled_from(["set", "drop", "add"]))
        if edit == "set" and keys:
            payload[draw(st.sampled_from(keys))] = draw(_json)
        elif edit == "drop" and keys:
            payload.pop(draw(st.sampled_from(keys)))
        else:
            payload[draw(st.text(max_size=12))] = draw(_json)
    return payload


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_answer_is_valid_or_an_ocpp_error(version: OcppVersion, data: st.DataObject) -> None:
    answered = st.sampled_from(sorted(answered_actions(version)))
    known = st.sampled_from(sorted(known_actions(version)))
    # Answered actions twice over: they are the ones with paths worth exploring.
    action = data.draw(answered | answered | known | st.text(max_size=20), label="action")
    payload = data.draw(_payloads(version, action), label="payload")
    outcome: dict[str, object] | OcppError
    try:
        outcome = responder().answer(version, action, payload)
    except OcppError as exc:
        outcome = exc
    if isinstance(outcome, OcppError):
        event(outcome.code)
        assert outcome.code in codes(version)
        assert outcome.code != "InternalError"
        assert len(outcome.description) <= 255
    else:
        event("answered")
        assert isinstance(outcome, dict)
        validate_response(version, action, outcome, check_formats=True)
