"""The box's Modbus TCP server: one holding register per cluster for its dynamic limit, as
the real product exposes it to an energy manager or the grid operator on the LAN.

Register map (unit id: any): holding register *n* is the *n*-th node of the site's
load-management tree in pre-order (0 is the grid connection, then each cluster and
sub-cluster as the tree lists them), in whole amperes.

* Write (function code 6, or 16): 0–10000 sets the node's dynamic limit (0 suspends
  charging below it); 65535 removes it. Any other value is refused with exception 3
  (ILLEGAL DATA VALUE); a register past the last node with exception 2 (ILLEGAL DATA
  ADDRESS). Every write is logged and goes through `LoadManagementService.set_dynamic_limit`.
* Read (function code 3): the limit in force at the node — the lower of its configured
  `max_current`, a `dynamic_limit` in its configuration and the one written here — rounded
  down to whole amperes.

Only this datastore is ours; the protocol is pymodbus's server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from harmone.errors import HarmoneError
from harmone.loadmgmt.model import Node
from harmone.loadmgmt.service import LoadManagementService

__all__ = ["CLEAR", "MAX_AMPS", "DynamicLimitRegisters", "modbus_server"]

log = logging.getLogger(__name__)

#: The largest limit a register accepts, in A; CLEAR removes the dynamic limit.
MAX_AMPS = 10_000
CLEAR = 0xFFFF
_HOLDING = (3, 6, 16)


class DynamicLimitRegisters(ModbusServerContext):
    """The datastore pymodbus's server reads and writes (see the module docstring)."""

    def __init__(self, loadmgmt: LoadManagementService, site_uid: str) -> None:
        # Not the parent's constructor: it builds a simulated device we do not use (and warns
        # that it is deprecated); the server needs only these two attributes and the methods.
        self.old_simulator = True
        self.simdevices = []
        self._loadmgmt = loadmgmt
        self._site_uid = site_uid

    def device_ids(self) -> list[int]:
        return [0]

    def _nodes(self) -> list[Node]:
        try:
            tree = self._loadmgmt.config(self._site_uid).tree
        except HarmoneError:  # no load management configured for the site yet
            return []
        return [n for n in tree.walk() if isinstance(n, Node)]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if func_code not in _HOLDING:
            return ExcCodes.ILLEGAL_FUNCTION
        nodes = self._nodes()
        if address < 0 or count < 1 or address + count > len(nodes):
            return ExcCodes.ILLEGAL_ADDRESS
        dynamic = self._loadmgmt.status(self._site_uid).dynamic_limits
        out: list[int] = []
        for node in nodes[address : address + count]:
            limit = min(
                node.max_current,
                node.dynamic_limit if node.dynamic_limit is not None else math.inf,
                dynamic.get(node.id, math.inf),
            )
            out.append(min(int(limit), CLEAR - 1))
        return out

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        if func_code not in _HOLDING:
            return ExcCodes.ILLEGAL_FUNCTION
        nodes = self._nodes()
        if address < 0 or address + len(values) > len(nodes):
            return ExcCodes.ILLEGAL_ADDRESS
        if any(int(v) != CLEAR and not 0 <= int(v) <= MAX_AMPS for v in values):
            log.warning(
                "site=%s Modbus write refused: register %d value(s) %s (0-%d A, or %d to clear)",
                self._site_uid,
                address,
                list(values),
                MAX_AMPS,
                CLEAR,
            )
            return ExcCodes.ILLEGAL_VALUE
        for node, value in zip(nodes[address:], values, strict=False):
            limit = None if int(value) == CLEAR else float(value)
            self._loadmgmt.set_dynamic_limit(self._site_uid, node.id, limit, by="modbus")
            log.info(
                "site=%s node=%s dynamic limit %s over Modbus",
                self._site_uid,
                node.id,
                "removed" if limit is None else f"{limit:g} A",
            )
        return None


def modbus_server(
    loadmgmt: LoadManagementService, site_uid: str, host: str, port: int
) -> ModbusTcpServer:
    """A server for `site_uid`'s dynamic limits; start it with `serve_forever(background=True)`,
    stop it with `shutdown()`."""
    return ModbusTcpServer(DynamicLimitRegisters(loadmgmt, site_uid), address=(host, port))
