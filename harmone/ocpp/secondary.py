"""What a secondary CPMS may ask of a charger: its rule, written once and checked here.

A site's `secondary_rule` is one of

* ``read-only`` (the default): only calls that change nothing on the charger (`READ_ONLY`);
* ``allow:A,B,…``: only these actions (``allow:`` with no action: none at all, a pure mirror);
* ``deny:A,B,…``: every action but these.

The API also accepts the object ``{"mode": "read-only"|"allow"|"deny", "actions": [...]}``;
both are normalised to the text form, which is what is stored and shown. A refused call is
answered with a CallError ``SecurityError`` (a code 1.6, 2.0.1 and 2.1 all define) and never
reaches the charger. Pure: no I/O, so the rules are tested with plain values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from harmone.ocpp.schemas import known_actions
from harmone.ocpp.versions import OcppVersion

__all__ = [
    "DEFAULT_RULE",
    "READ_ONLY",
    "RuleMode",
    "SecondaryRule",
    "normalise_rule",
    "parse_rule",
]

RuleMode = Literal["read-only", "allow", "deny"]
DEFAULT_RULE = "read-only"
_ACTION = re.compile(r"^[A-Za-z0-9]{1,64}$")
_MAX_ACTIONS = 100

_READ_2X = frozenset(
    {
        "GetVariables",
        "GetBaseReport",
        "GetReport",
        "GetMonitoringReport",
        "GetLocalListVersion",
        "GetCompositeSchedule",
        "GetChargingProfiles",
        "GetDisplayMessages",
        "GetInstalledCertificateIds",
        "GetTransactionStatus",
        "TriggerMessage",
    }
)

#: Calls that read and change nothing on the charger, by version. Left out on purpose:
#: GetDiagnostics and GetLog (the charger uploads files to a URL the caller chooses),
#: DataTransfer (vendor-defined: may change anything), CustomerInformation (may clear data).
#: TriggerMessage only makes the charger send a message again (to both backends).
READ_ONLY: dict[OcppVersion, frozenset[str]] = {
    OcppVersion.V16: frozenset(
        {
            "GetConfiguration",
            "GetLocalListVersion",
            "GetCompositeSchedule",
            "GetInstalledCertificateIds",
            "TriggerMessage",
            "ExtendedTriggerMessage",
        }
    ),
    OcppVersion.V201: _READ_2X,
    OcppVersion.V21: _READ_2X | {"GetTariffs", "GetDERControl", "GetPeriodicEventStream"},
}


def _all_actions() -> frozenset[str]:
    return frozenset().union(*(known_actions(v) for v in OcppVersion))


@dataclass(frozen=True, slots=True)
class SecondaryRule:
    """A parsed rule; `allows` says whether a secondary's CALL may reach the charger."""

    mode: RuleMode = "read-only"
    actions: frozenset[str] = frozenset()

    def allows(self, version: OcppVersion, action: str) -> bool:
        if self.mode == "read-only":
            return action in READ_ONLY[version]
        if self.mode == "allow":
            return action in self.actions
        return action not in self.actions


def _actions(value: object) -> list[str]:
    if isinstance(value, str):
        items: list[object] = [a.strip() for a in value.split(",") if a.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("secondary_rule actions must be a list of OCPP action names")
    if len(items) > _MAX_ACTIONS:
        raise ValueError(f"secondary_rule lists more than {_MAX_ACTIONS} actions")
    known = _all_actions()
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not _ACTION.match(item):
            raise ValueError(f"secondary_rule: {item!r} is not an OCPP action name")
        if item not in known:
            raise ValueError(f"secondary_rule: {item!r} is not an action of OCPP 1.6, 2.0.1 or 2.1")
        if item not in out:
            out.append(item)
    return out


def normalise_rule(value: object) -> str:
    """The text form of a rule given as text or as {"mode", "actions"}; ValueError with a
    readable message otherwise."""
    if value is None:
        return DEFAULT_RULE
    if isinstance(value, Mapping):
        extra = set(value) - {"mode", "actions"}
        if extra:
            raise ValueError(
                f"secondary_rule has unknown keys: {', '.join(sorted(map(str, extra)))}"
            )
        mode = value.get("mode")
        actions = value.get("actions", [])
    elif isinstance(value, str):
        mode, _, rest = value.strip().partition(":")
        mode = mode.strip()
        actions = rest
        if mode == "read-only" and rest.strip():
            raise ValueError("secondary_rule read-only takes no action list")
    else:
        raise ValueError(
            'secondary_rule is "read-only", "allow:A,B" or "deny:A,B" '
            '(or {"mode": ..., "actions": [...]})'
        )
    if mode == "read-only":
        if actions:
            raise ValueError("secondary_rule read-only takes no action list")
        return DEFAULT_RULE
    if mode not in ("allow", "deny"):
        raise ValueError(f'secondary_rule mode is "read-only", "allow" or "deny", not {mode!r}')
    return f"{mode}:{','.join(_actions(actions))}"


def parse_rule(text: str | None) -> SecondaryRule:
    """A stored rule (text form) as a `SecondaryRule`; an unreadable one is read-only."""
    if not text:
        return SecondaryRule()
    mode, _, rest = text.partition(":")
    if mode not in ("allow", "deny"):
        return SecondaryRule()
    actions = frozenset(a for a in rest.split(",") if a)
    return SecondaryRule("allow" if mode == "allow" else "deny", actions)
