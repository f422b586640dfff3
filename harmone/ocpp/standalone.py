"""Answer a charger's calls when there is no CPMS, or the CPMS link is down.

Pure: no I/O, time and transaction ids are injected. The answers keep a charger working without
a back office: every boot is accepted, every id token is authorised (a site without CPMS charges
for free), notifications are acknowledged and ignored, and requests for services HARMON-E does
not offer (vendor data transfer, certificates, EV schedules) get the refusal the schema allows,
so that the charger falls back instead of waiting for something that will never come.

Every answer is checked against the response schema of the charger's version before it is
returned, including its date-time formats, so a faulty clock or id factory surfaces as an
InternalError instead of a malformed CALLRESULT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from harmone.clock import Clock
from harmone.errors import ConfigError, OcppError
from harmone.ocpp.schemas import known_actions, validate_request, validate_response
from harmone.ocpp.versions import OcppVersion, error_code

__all__ = ["StandaloneResponder", "answered_actions"]

Payload = dict[str, Any]
_Handler = Callable[["StandaloneResponder", Payload], dict[str, object]]

_ACCEPTED: dict[str, object] = {"status": "Accepted"}


def _empty(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    return {}


def _constant(answer: Mapping[str, object]) -> _Handler:
    def handler(self: StandaloneResponder, request: Payload) -> dict[str, object]:
        return dict(answer)

    return handler


def _boot(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    return {"status": "Accepted", "currentTime": self._timestamp(), "interval": self.interval}


def _heartbeat(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    return {"currentTime": self._timestamp()}


# ---- 1.6 -------------------------------------------------------------------------------------


def _authorize_16(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    return {"idTagInfo": dict(_ACCEPTED)}


def _start_transaction_16(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    return {"transactionId": self._next_transaction_id(), "idTagInfo": dict(_ACCEPTED)}


def _stop_transaction_16(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    # idTagInfo answers the idTag that stopped the transaction; without one there is nothing
    # to authorise.
    return {"idTagInfo": dict(_ACCEPTED)} if "idTag" in request else {}


# ---- 2.x -------------------------------------------------------------------------------------


def _authorize_2x(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    return {"idTokenInfo": dict(_ACCEPTED)}


def _transaction_event_2x(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    # The charger owns 2.x transaction ids; only an idToken needs an answer.
    return {"idTokenInfo": dict(_ACCEPTED)} if "idToken" in request else {}


def _certificate_chain_status_21(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    # One "Failed" per certificate asked about: HARMON-E has no OCSP or CRL access.
    now = self._timestamp()
    return {
        "certificateStatus": [
            {
                "certificateHashData": item["certificateHashData"],
                "source": item["source"],
                "status": "Failed",
                "nextUpdate": now,
            }
            for item in request["certificateStatusRequests"]
        ]
    }


def _vat_number_validation_21(self: StandaloneResponder, request: Payload) -> dict[str, object]:
    # No VAT register to ask: refuse, echoing what identifies the request.
    answer: dict[str, object] = {"vatNumber": request["vatNumber"], "status": "Rejected"}
    if "evseId" in request:
        answer["evseId"] = request["evseId"]
    return answer


_V16: dict[str, _Handler] = {
    "Authorize": _authorize_16,
    "BootNotification": _boot,
    # UnknownVendorId: HARMON-E implements no vendor extension at all.
    "DataTransfer": _constant({"status": "UnknownVendorId"}),
    "DiagnosticsStatusNotification": _empty,
    "FirmwareStatusNotification": _empty,
    "Heartbeat": _heartbeat,
    "LogStatusNotification": _empty,
    "MeterValues": _empty,
    "SecurityEventNotification": _empty,
    # No CA to sign with; "Accepted" would leave the charger waiting for CertificateSigned.
    "SignCertificate": _constant({"status": "Rejected"}),
    "SignedFirmwareStatusNotification": _empty,
    "StartTransaction": _start_transaction_16,
    "StatusNotification": _empty,
    "StopTransaction": _stop_transaction_16,
}

_V201: dict[str, _Handler] = {
    "Authorize": _authorize_2x,
    "BootNotification": _boot,
    "ClearedChargingLimit": _empty,
    "DataTransfer": _constant({"status": "UnknownVendorId"}),
    "FirmwareStatusNotification": _empty,
    # No contract certificate service: the exiResponse is required but there is no EXI to give.
    "Get15118EVCertificate": _constant({"status": "Failed", "exiResponse": ""}),
    "GetCertificateStatus": _constant({"status": "Failed"}),
    "Heartbeat": _heartbeat,
    "LogStatusNotification": _empty,
    "MeterValues": _empty,
    "NotifyChargingLimit": _empty,
    "NotifyCustomerInformation": _empty,
    "NotifyDisplayMessages": _empty,
    # "Accepted" promises a charging profile in answer; HARMON-E's load management sets limits
    # on its own schedule, so the station must go on with the limits it already has.
    "NotifyEVChargingNeeds": _constant({"status": "Rejected"}),
    "NotifyEVChargingSchedule": _constant(_ACCEPTED),
    "NotifyEvent": _empty,
    "NotifyMonitoringReport": _empty,
    "NotifyReport": _empty,
    "PublishFirmwareStatusNotification": _empty,
    "ReportChargingProfiles": _empty,
    "ReservationStatusUpdate": _empty,
    "SecurityEventNotification": _empty,
    "SignCertificate": _constant({"status": "Rejected"}),
    "StatusNotification": _empty,
    "TransactionEvent": _transaction_event_2x,
}

_V21: dict[str, _Handler] = {
    **_V201,
    # 2.1 has a value for exactly this: the CSMS will not send a profile for these needs.
    "NotifyEVChargingNeeds": _constant({"status": "NoChargingProfile"}),
    "BatterySwap": _empty,
    "ClosePeriodicEventStream": _empty,
    "GetCertificateChainStatus": _certificate_chain_status_21,
    "NotifyDERAlarm": _empty,
    "NotifyDERStartStop": _empty,
    "NotifyPriorityCharging": _empty,
    "NotifySettlement": _empty,
    # Nothing here would consume a periodic event stream.
    "OpenPeriodicEventStream": _constant({"status": "Rejected"}),
    "PullDynamicScheduleUpdate": _constant({"status": "Rejected"}),
    "ReportDERControl": _empty,
    "VatNumberValidation": _vat_number_validation_21,
}

_HANDLERS: dict[OcppVersion, dict[str, _Handler]] = {
    OcppVersion.V16: _V16,
    OcppVersion.V201: _V201,
    OcppVersion.V21: _V21,
}


def answered_actions(version: OcppVersion) -> frozenset[str]:
    """The actions `StandaloneResponder.answer` answers for `version`."""
    return frozenset(_HANDLERS[version])


class StandaloneResponder:
    """Answers a charger's CALLs in place of a CPMS.

    `next_transaction_id` hands out 1.6 transaction ids (2.x chargers choose their own);
    `heartbeat_interval` is the interval in seconds granted in BootNotification answers.
    """

    def __init__(
        self,
        clock: Clock,
        next_transaction_id: Callable[[], int],
        heartbeat_interval: int = 300,
    ) -> None:
        if (
            isinstance(heartbeat_interval, bool)
            or not isinstance(heartbeat_interval, int)
            or heartbeat_interval <= 0
        ):
            raise ConfigError(
                "heartbeat interval must be a positive number of seconds, "
                f"not {heartbeat_interval!r}"
            )
        self._clock = clock
        self._next_transaction_id = next_transaction_id
        self.interval = heartbeat_interval

    def answer(self, version: OcppVersion, action: str, payload: object) -> dict[str, object]:
        """The CALLRESULT payload for the charger's `action` CALL.

        Raises OcppError with `version`'s code: NotImplemented for an action the version does
        not define, NotSupported for one it defines but HARMON-E does not answer, a constraint
        or format violation for a payload that does not match the request schema, and
        InternalError if the answer itself would not match the response schema.
        """
        handler = _HANDLERS[version].get(action)
        if handler is None:
            if action in known_actions(version):
                raise OcppError(
                    f"HARMON-E does not answer {action} in place of a CPMS",
                    code=error_code(version, "not_supported"),
                )
            raise OcppError(
                f"OCPP {version} has no action {action!r}",
                code=error_code(version, "not_implemented"),
            )
        validate_request(version, action, payload)
        if not isinstance(payload, dict):  # pragma: no cover - every request schema is an object
            raise OcppError(
                f"{action} request is not an object", code=error_code(version, "format")
            )
        response = handler(self, payload)
        try:
            validate_response(version, action, response, check_formats=True)
        except OcppError as exc:
            raise OcppError(
                f"{action}: no valid answer could be made ({exc.description})"[:255],
                code=error_code(version, "internal"),
                details=exc.details,
            ) from exc
        return response

    def _timestamp(self) -> str:
        """Now as an RFC 3339 UTC timestamp with milliseconds, the form chargers parse best."""
        now: datetime = self._clock.now()
        # Clock promises aware UTC; a naive value is taken as UTC rather than as local time.
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
