"""1.6 transaction ids mapped after an outage are rewritten in place: every other byte is the
sender's, both ways, live and replayed (issue 10 item 4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support import RawCpms, charger, harmone_server, make_site, recv_json, wait_for

CPMS_TX = 777


def start_answering_cpms() -> RawCpms:
    """Answers StartTransaction with transaction id CPMS_TX, everything else with {}."""
    return RawCpms(
        answers={
            "StartTransaction": {"transactionId": CPMS_TX, "idTagInfo": {"status": "Accepted"}}
        },
        default_answer={},
    )


def spaced(action: str, msg_id: str, body: str) -> str:
    return f'[2, "{msg_id}", "{action}", {body}]'


async def test_mapped_transaction_ids_are_swapped_in_place_both_ways(tmp_path: Path) -> None:
    cpms = start_answering_cpms()
    await cpms.start()
    try:
        async with harmone_server(tmp_path) as srv:
            site, url = await make_site(srv, cpms.url)
            live: Callable[[], bool] = lambda: bool(  # noqa: E731
                (lc := srv.runtime.hub.live_state(site.uid, "TX")) and lc.upstream_connected
            )
            async with await charger(f"{url}/TX") as ws:
                await wait_for(live)
                await cpms.stop()  # the CPMS goes away
                await wait_for(lambda: not live())
                start = spaced(
                    "StartTransaction",
                    "st1",
                    '{"connectorId": 1, "idTag": "TAG", "meterStart": 0, '
                    '"timestamp": "2026-11-24T10:00:00Z"}',
                )
                await ws.send(start)
                local = (await recv_json(ws))[2]["transactionId"]
                assert local != CPMS_TX
                meter_body = (
                    '{"connectorId": 1, "transactionId": %d, "meterValue": [{"timestamp": '
                    '"2026-11-24T10:01:00Z", "sampledValue": [{"value": "10"}]}]}'
                )
                offline_meter = spaced("MeterValues", "mv1", meter_body % local)
                await ws.send(offline_meter)
                assert (await recv_json(ws))[1] == "mv1"  # answered locally, journaled

                await cpms.start()  # back: the journal is replayed, then live traffic
                await wait_for(live, 10)
                replayed = cpms.frames["TX"][-2:]
                start_id = json.loads(replayed[0])[1]
                assert replayed[0] == start.replace('"st1"', f'"{start_id}"')
                meter_id = json.loads(replayed[1])[1]
                assert meter_id.startswith("hm-r-")
                assert replayed[1] == spaced("MeterValues", meter_id, meter_body % CPMS_TX)

                live_meter = spaced("MeterValues", "mv2", meter_body % local)
                await ws.send(live_meter)
                assert (await recv_json(ws))[1] == "mv2"
                assert cpms.frames["TX"][-1] == spaced("MeterValues", "mv2", meter_body % CPMS_TX)

                remote_stop = '[2, "rs1", "RemoteStopTransaction", {"transactionId": %d}]'
                await cpms.send("TX", remote_stop % CPMS_TX)
                assert await ws.recv() == remote_stop % local
                await ws.send('[3, "rs1", {"status": "Accepted"}]')

                stop_body = (
                    '{"transactionId": %d, "idTag": "TAG", "meterStop": 10, '
                    '"timestamp": "2026-11-24T10:02:00Z"}'
                )
                await ws.send(spaced("StopTransaction", "sp1", stop_body % local))
                assert (await recv_json(ws))[1] == "sp1"
                assert cpms.frames["TX"][-1] == spaced(
                    "StopTransaction", "sp1", stop_body % CPMS_TX
                )
                link = srv.runtime.hub.link(site.uid, "TX")
                assert link is not None
                assert link.session.tx_to_cpms == {}  # type: ignore[attr-defined]
    finally:
        await cpms.stop()
