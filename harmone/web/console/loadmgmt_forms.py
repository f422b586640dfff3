"""The load-management forms of the console, read into the configuration's JSON.

Each reader returns what it could read and a message per field that is wrong, in words for
the person who typed it. These checks only place messages next to their fields; the
configuration as a whole is validated by the service (`parse_config`), exactly as for the
REST API, and nothing is saved unless it passes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData

from harmone.web.console.forms import FormErrors
from harmone.web.console.forms import field as text

if TYPE_CHECKING:
    from harmone.loadmgmt.config import ChargerSettings

__all__ = [
    "LINE_PAIRS",
    "METER_MAPS",
    "ROTATIONS",
    "ChargerForm",
    "NodeForm",
    "charger_form_values",
    "node_form_values",
    "read_charger_form",
    "read_node_form",
]

log = logging.getLogger(__name__)

METER_MAPS = {
    "eastron_sdm630": "Eastron SDM630",
    "carlo_gavazzi_em24": "Carlo Gavazzi EM24",
}
#: An L-L charger's two lines, in the order the model's phasors expect.
LINE_PAIRS = ("L1-L2", "L2-L3", "L3-L1")
#: A three-phase charger's phases 1-2-3 wired to these grid lines (the usual rotations first).
ROTATIONS = ("L1-L2-L3", "L2-L3-L1", "L3-L1-L2", "L1-L3-L2", "L3-L2-L1", "L2-L1-L3")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NODE_FIELDS = ("id", "max_current", "safety_current", "max_imbalance")
_METER_FIELDS = ("meter", "meter_host", "meter_port", "meter_unit", "meter_map")


def _number(raw: str) -> float | None:
    # People in most of Europe type a decimal comma.
    try:
        value = float(raw.replace(",", ".").replace(" ", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_horizon(form: FormData) -> tuple[float | None, str | None]:
    """The sharing form's continuity horizon (minutes; empty: off), or what is wrong with it."""
    raw = text(form, "continuity_horizon_minutes")
    if not raw:
        return None, None
    value = _number(raw)
    if value is None or not 1 <= value <= 1440:
        return (
            None,
            "Enter the head start's horizon in minutes, 1 to 1440 (e.g. 120), "
            "or leave it empty for off.",
        )
    return value, None


@dataclass(slots=True)
class _Reader:
    form: FormData
    errors: FormErrors = field(default_factory=dict)

    def amps(
        self, name: str, what: str, example: str, *, default: float | None = None
    ) -> float | None:
        raw = text(self.form, name)
        if not raw:
            if default is None:
                self.errors[name] = f"Enter {what} in amps, e.g. {example}."
            return default
        value = _number(raw)
        if value is None:
            self.errors[name] = f"Enter {what} as a number of amps, e.g. {example}."
        elif value < 0:
            self.errors[name] = f"{what[:1].upper() + what[1:]} cannot be negative."
            return None
        return value

    def optional(self, name: str, what: str, example: str) -> float | None:
        if not text(self.form, name):
            return None
        value = _number(text(self.form, name))
        if value is None or value < 0:
            self.errors[name] = (
                f"Enter {what} as a positive number, e.g. {example}, or leave it empty."
            )
            return None
        return value

    def integer(self, name: str, what: str, low: int, high: int, default: int) -> int:
        raw = text(self.form, name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            self.errors[name] = f"Enter {what}: a whole number from {low} to {high}."
            return default
        return value


@dataclass(slots=True)
class NodeForm:
    """A cluster's own fields as read; `meter` is the Modbus meter to probe, if any."""

    fields: dict[str, Any]
    errors: FormErrors
    meter: dict[str, Any] | None = None
    parent: str | None = None
    save_unreachable: bool = False


def read_node_form(
    form: FormData, *, new: bool, existing_meter: Mapping[str, Any] | None = None
) -> NodeForm:
    """A cluster's form: name (new ones), limit, safety current, imbalance, meter, place."""
    reader = _Reader(form)
    fields: dict[str, Any] = {}
    if new:
        node_id = text(form, "id")
        if not _NODE_ID.fullmatch(node_id):
            reader.errors["id"] = (
                "Give it a name of letters, digits, dots, dashes or underscores, at most 64 "
                "characters (the REST API uses it too), e.g. garage-1."
            )
        fields["id"] = node_id
    limit = reader.amps("max_current", "its limit per phase", "63")
    safety = reader.amps("safety_current", "the safety current", "0", default=0.0)
    fields["max_current"] = limit
    fields["safety_current"] = safety
    fields["max_imbalance"] = reader.optional("max_imbalance", "the largest phase difference", "16")
    if limit is not None and safety is not None and safety > limit:
        reader.errors["safety_current"] = (
            f"The safety current cannot be above the limit ({limit:g} A): it is what the cluster "
            "falls to when its meter fails."
        )
    kind = text(form, "meter") or "none"
    meter: dict[str, Any] | None = None
    if kind == "modbus":
        host = text(form, "meter_host")
        if not host:
            reader.errors["meter_host"] = "Enter the meter's IP address or host name."
        map_name = text(form, "meter_map") or "eastron_sdm630"
        kept = dict(existing_meter or {})
        if map_name != "custom":
            kept.pop("custom", None)
        elif "custom" not in kept:
            reader.errors["meter_map"] = "Choose the meter's model."
        meter = {
            **kept,
            "host": host,
            "port": reader.integer("meter_port", "the Modbus TCP port", 1, 65535, 502),
            "unit_id": reader.integer("meter_unit", "the unit id", 0, 255, 1),
            "register_map": map_name,
        }
        fields["meter"], fields["metered"] = meter, True
    elif kind == "pushed":
        fields["meter"], fields["metered"] = None, True
    else:
        fields["meter"], fields["metered"] = None, False
    return NodeForm(
        fields,
        reader.errors,
        meter,
        parent=text(form, "parent") or None,
        save_unreachable=text(form, "save_unreachable") == "1",
    )


def node_form_values(form: FormData | None, node: Mapping[str, Any] | None) -> dict[str, str]:
    """What the cluster form shows: what was typed, else the node's configuration."""
    if form is not None:
        keys = (*_NODE_FIELDS, *_METER_FIELDS, "parent", "save_unreachable")
        return {k: text(form, k) for k in keys}
    node = node or {}
    meter = node.get("meter") or {}

    def shown(value: Any) -> str:
        return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    return {
        "id": str(node.get("id", "")),
        "max_current": shown(node.get("max_current")),
        "safety_current": shown(node.get("safety_current", 0.0)),
        "max_imbalance": shown(node.get("max_imbalance")),
        "meter": "modbus" if meter else "pushed" if node.get("metered") else "none",
        "meter_host": str(meter.get("host", "")),
        "meter_port": str(meter.get("port", 502)),
        "meter_unit": str(meter.get("unit_id", 1)),
        "meter_map": str(meter.get("register_map", "eastron_sdm630")),
        "parent": "",
        "save_unreachable": "",
    }


@dataclass(slots=True)
class ChargerForm:
    settings: dict[str, Any]
    errors: FormErrors


def read_charger_form(
    form: FormData, node_ids: set[str], connectors: tuple[int, ...]
) -> ChargerForm:
    """A charging station's load-management settings, as `ChargerSettings` JSON."""
    reader = _Reader(form)
    errors = reader.errors
    node = text(form, "node")
    if node not in node_ids:
        errors["node"] = "Choose where in the tree the charging station is connected."
    wiring = text(form, "wiring")
    rotation: list[str] = []
    if wiring == "L-N":
        line = text(form, "line")
        if line not in ("L1", "L2", "L3"):
            errors["line"] = "Choose the line it is connected to."
        rotation = [line]
    elif wiring == "L-L":
        pair = text(form, "line_pair")
        if pair not in LINE_PAIRS:
            errors["line_pair"] = "Choose the two lines it is connected between."
        rotation = pair.split("-")
    elif wiring == "3-phase":
        order = text(form, "rotation")
        if order not in ROTATIONS:
            errors["rotation"] = "Choose the phase rotation."
        rotation = order.split("-")
    else:
        errors["wiring"] = "Choose how the charging station is connected."
    voltage = _number(text(form, "voltage"))
    if voltage is None or not 100 <= voltage <= 500:
        errors["voltage"] = "Enter the voltage across its supply, from 100 to 500 V (e.g. 230)."
    min_current = reader.amps("min_current", "its minimum current", "6")
    max_current = reader.amps("max_current", "its maximum current", "32")
    tx_default = reader.amps("tx_default_limit", "the TxDefaultProfile limit", "0", default=0.0)
    if max_current is not None and max_current <= 0 and "max_current" not in errors:
        errors["max_current"] = "The maximum current must be more than 0 A."
    if None not in (min_current, max_current) and min_current > max_current:  # type: ignore[operator]
        errors["min_current"] = f"The minimum cannot be above the maximum ({max_current:g} A)."
    if None not in (tx_default, max_current) and tx_default > max_current:  # type: ignore[operator]
        errors["tx_default_limit"] = f"This limit cannot be above the maximum ({max_current:g} A)."
    try:
        priority = int(text(form, "priority") or "0")
    except ValueError:
        errors["priority"] = "Enter a whole number; higher is served first (default 0)."
        priority = 0
    unit = text(form, "rate_unit") or "A"
    if unit not in ("A", "W"):
        errors["rate_unit"] = "Choose A or W."
    settings: dict[str, Any] = {
        "node": node,
        "wiring": wiring,
        "phase_rotation": rotation,
        "voltage": voltage,
        "min_current": min_current,
        "max_current": max_current,
        "priority": priority,
        "tx_default_limit": tx_default,
        "rate_unit": unit,
        "connectors": list(connectors),
        "default_dwell_minutes": reader.optional(
            "default_dwell_minutes", "the typical stay", "240"
        ),
        "default_energy_kwh": reader.optional("default_energy_kwh", "the typical energy", "20"),
    }
    return ChargerForm(settings, errors)


_CHARGER_FIELDS = (
    "node",
    "wiring",
    "line",
    "line_pair",
    "rotation",
    "voltage",
    "min_current",
    "max_current",
    "priority",
    "tx_default_limit",
    "rate_unit",
    "default_dwell_minutes",
    "default_energy_kwh",
)


def charger_form_values(
    form: FormData | None, settings: ChargerSettings | None, node: str | None
) -> dict[str, str]:
    """What the charging station's form shows: what was typed, else its settings (those it
    uses: its own or the site's defaults); empty without either."""
    if form is not None or settings is None:
        return {k: text(form, k) if form is not None else "" for k in _CHARGER_FIELDS}
    s = settings
    lines = [p.name for p in s.phase_rotation] if s.phase_rotation else []
    wiring = s.wiring_in_force.value

    def shown(value: float | None) -> str:
        return "" if value is None else f"{value:g}"

    return {
        "node": node or "",
        "wiring": wiring,
        "line": lines[0] if wiring == "L-N" and lines else "L1",
        "line_pair": "-".join(lines) if wiring == "L-L" and lines else "L1-L2",
        "rotation": "-".join(lines) if wiring == "3-phase" and lines else "L1-L2-L3",
        "voltage": shown(s.voltage),
        "min_current": shown(s.min_current),
        "max_current": shown(s.max_current),
        "priority": str(s.priority),
        "tx_default_limit": shown(s.tx_default_limit),
        "rate_unit": s.rate_unit,
        "default_dwell_minutes": shown(s.default_dwell_minutes),
        "default_energy_kwh": shown(s.default_energy_kwh),
    }
