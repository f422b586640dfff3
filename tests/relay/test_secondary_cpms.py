"""A secondary CPMS per charger (issue 14): the charger's calls reach both backends byte-exact
and in order, only the primary's answers reach the charger, the secondary's calls go through
the site's rule, and every answer goes back to whoever asked. Real peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from secondary_support import ScriptedCpms, next_frame, tagged, two_backend_site
from support import PATIENCE, charger, harmone_server, recv_json, wait_for

from harmone.web.serve import RunningServer

HEARTBEAT = '[2,"hb1","Heartbeat",{}]'
BOOT = (
    '[2, "b1", "BootNotification", {"chargePointVendor": "Acme",  '
    '"chargePointModel": "X1"}]'
)  # odd spacing on purpose: it must arrive exactly as sent
STATUS = (
    '[2,"s1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Available"}]'
)


def _live(srv: RunningServer, uid: str, cpid: str) -> Any:
    return srv.runtime.hub.live_state(uid, cpid)


async def _both_up(srv: RunningServer, uid: str, cpid: str) -> None:
    def up() -> bool:
        live = _live(srv, uid, cpid)
        return bool(live and live.upstream_connected and live.secondary_connected)

    await wait_for(up)


async def test_both_backends_get_the_calls_exactly_and_only_the_primary_answers(
    tmp_path: Path,
) -> None:
    async with (
        ScriptedCpms(answer=tagged("primary")) as primary,
        ScriptedCpms(answer=tagged("secondary")) as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await _both_up(srv, uid, "CP1")
            sent = [BOOT, HEARTBEAT, STATUS, '[2,"hb2","Heartbeat",{}]']
            answers = []
            for text in sent:
                await ws.send(text)
                answers.append(await recv_json(ws))
            assert [a[2] for a in answers] == [{"by": "primary"}] * 4
            assert [a[1] for a in answers] == ["b1", "hb1", "s1", "hb2"]
            await wait_for(lambda: len(secondary.frames["CP1"]) == 4)
            assert primary.frames["CP1"] == sent
            assert secondary.frames["CP1"] == sent
            # nothing more reaches the charger: the secondary's four answers were dropped
            await ws.send('[2,"hb3","Heartbeat",{}]')
            assert (await recv_json(ws))[1:] == ["hb3", {"by": "primary"}]


async def test_the_charger_page_and_api_show_the_secondary_link(tmp_path: Path) -> None:
    async with (
        ScriptedCpms() as primary,
        ScriptedCpms() as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1"):
            await _both_up(srv, uid, "CP1")
            chargers = await srv.runtime.chargers.of_site(uid)
            site = await srv.runtime.sites.get(uid)
            from harmone.web.schemas import charger_out

            out = charger_out(chargers[0], _live(srv, uid, "CP1"), site)
            assert out.effective_secondary_cpms_url == secondary.url
            assert out.secondary_connected is True and out.secondary_error is None
            await secondary.stop()
            await wait_for(lambda: not _live(srv, uid, "CP1").secondary_connected)
            out = charger_out(chargers[0], _live(srv, uid, "CP1"), site)
            assert out.secondary_connected is False
            assert out.secondary_error and "secondary CPMS" in out.secondary_error
            assert out.upstream_connected is True


async def _answer_calls(ws: Any, answers: dict[str, Any], count: int) -> list[list[Any]]:
    """Play the charger: answer `count` calls, each with answers[action] and its own id."""
    seen = []
    for _ in range(count):
        frame = await next_frame(ws, PATIENCE)
        assert frame[0] == 2, frame
        seen.append(frame)
        await ws.send(json.dumps([3, frame[1], {**answers.get(frame[2], {}), "got": frame[3]}]))
    return seen


async def test_read_only_lets_reads_through_and_refuses_changes(tmp_path: Path) -> None:
    async with (
        ScriptedCpms() as primary,
        ScriptedCpms() as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await _both_up(srv, uid, "CP1")
            await secondary.send("CP1", '[2,"r1","Reset",{"type":"Hard"}]')
            await wait_for(lambda: "r1" in secondary.results)
            assert secondary.results["r1"][:3] == [4, "r1", "SecurityError"]
            await secondary.send("CP1", '[2,"g1","GetConfiguration",{"key":["HeartbeatInterval"]}]')
            seen = await _answer_calls(ws, {"GetConfiguration": {"configurationKey": []}}, 1)
            # the refused Reset never reached the charger: the first call it sees is the read
            assert seen == [[2, "g1", "GetConfiguration", {"key": ["HeartbeatInterval"]}]]
            await wait_for(lambda: "g1" in secondary.results)
            assert secondary.results["g1"][2]["configurationKey"] == []
            assert "g1" not in primary.results  # the answer went to the one that asked


async def test_allow_and_deny_rules_apply_to_an_open_link(tmp_path: Path) -> None:
    async with (
        ScriptedCpms() as primary,
        ScriptedCpms() as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(
            srv, primary.url, secondary.url, {"mode": "allow", "actions": ["Reset"]}
        )
        assert (await srv.runtime.sites.get(uid)).secondary_rule == "allow:Reset"
        async with await charger(f"{url}/CP1") as ws:
            await _both_up(srv, uid, "CP1")
            await secondary.send("CP1", '[2,"g1","GetConfiguration",{}]')
            await secondary.send("CP1", '[2,"r1","Reset",{"type":"Soft"}]')
            seen = await _answer_calls(ws, {"Reset": {"status": "Accepted"}}, 1)
            assert [f[2] for f in seen] == ["Reset"]
            await wait_for(lambda: {"g1", "r1"} <= set(secondary.results))
            assert secondary.results["g1"][2] == "SecurityError"
            assert secondary.results["r1"][2]["status"] == "Accepted"

            # the rule changes while the charger stays connected
            await srv.runtime.sites.update(uid, {"secondary_rule": "deny:Reset"})
            assert srv.runtime.hub.link(uid, "CP1") is not None
            await secondary.send("CP1", '[2,"r2","Reset",{"type":"Soft"}]')
            await secondary.send("CP1", '[2,"u1","UnlockConnector",{"connectorId":1}]')
            seen = await _answer_calls(ws, {"UnlockConnector": {"status": "Unlocked"}}, 1)
            assert [f[1] for f in seen] == ["u1"]
            await wait_for(lambda: {"r2", "u1"} <= set(secondary.results))
            assert secondary.results["r2"][2] == "SecurityError"
            assert secondary.results["u1"][2]["status"] == "Unlocked"


async def test_answers_go_back_to_whoever_asked_under_concurrency(tmp_path: Path) -> None:
    async with (
        ScriptedCpms() as primary,
        ScriptedCpms() as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url, "allow:GetConfiguration")
        async with await charger(f"{url}/CP1") as ws:
            await _both_up(srv, uid, "CP1")
            # the same message id from both backends, and HARMON-E's own call, all at once
            own = asyncio.create_task(
                srv.runtime.hub.call(uid, "CP1", "GetConfiguration", {"key": ["own"]})
            )
            await primary.send("CP1", '[2,"42","GetConfiguration",{"key":["primary"]}]')
            await secondary.send("CP1", '[2,"42","GetConfiguration",{"key":["secondary"]}]')
            seen = []
            for _ in range(3):
                frame = await next_frame(ws, PATIENCE)
                seen.append(frame[3]["key"][0])
                # one call in flight: nothing else arrives before this one is answered
                await ws.send(json.dumps([3, frame[1], {"configurationKey": [], "to": frame[3]}]))
            assert sorted(seen) == ["own", "primary", "secondary"]
            assert (await asyncio.wait_for(own, PATIENCE))["to"] == {"key": ["own"]}
            await wait_for(lambda: "42" in primary.results and "42" in secondary.results)
            assert primary.results["42"][2]["to"] == {"key": ["primary"]}
            assert secondary.results["42"][2]["to"] == {"key": ["secondary"]}
            # the secondary never saw HARMON-E's own call nor its answer
            assert not any("own" in text for text in secondary.frames["CP1"])
            assert not any("own" in text for text in primary.frames["CP1"])


async def test_1_6_transaction_ids_are_mapped_per_backend(tmp_path: Path) -> None:
    def answers(tx: int) -> Any:
        def answer(frame: list[Any]) -> Any:
            if frame[2] == "StartTransaction":
                return {"transactionId": tx, "idTagInfo": {"status": "Accepted"}}
            return {}

        return answer

    async with (
        ScriptedCpms(answer=answers(777)) as primary,
        ScriptedCpms(answer=answers(555)) as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(
            srv, primary.url, secondary.url, "allow:RemoteStopTransaction"
        )
        async with await charger(f"{url}/CP1") as ws:
            await _both_up(srv, uid, "CP1")
            start = (
                '[2,"st1","StartTransaction",{"connectorId":1,"idTag":"TAG","meterStart":0,'
                '"timestamp":"2026-12-01T10:00:00Z"}]'
            )
            await ws.send(start)
            assert (await recv_json(ws))[2]["transactionId"] == 777
            await wait_for(lambda: len(secondary.calls("CP1", "StartTransaction")) == 1)
            assert secondary.calls("CP1", "StartTransaction") == [start]
            meter = (
                '[2,"mv1","MeterValues",{"connectorId":1,"transactionId":%d,"meterValue":'
                '[{"timestamp":"2026-12-01T10:01:00Z","sampledValue":[{"value":"10"}]}]}]'
            )
            # (the secondary's answer to the start travels on its own: wait until it is in)
            link: Any = srv.runtime.hub.link(uid, "CP1")
            await wait_for(lambda: link._secondary._to_secondary == {777: 555})
            await ws.send(meter % 777)
            await recv_json(ws)
            await wait_for(lambda: secondary.frames["CP1"][-1].startswith('[2,"mv1"'))
            assert secondary.frames["CP1"][-1] == meter % 555
            assert primary.frames["CP1"][-1] == meter % 777

            await secondary.send("CP1", '[2,"rs1","RemoteStopTransaction",{"transactionId":555}]')
            assert await ws.recv() == '[2,"rs1","RemoteStopTransaction",{"transactionId":777}]'
            await ws.send('[3,"rs1",{"status":"Accepted"}]')
            await wait_for(lambda: "rs1" in secondary.results)

            stop = (
                '[2,"sp1","StopTransaction",{"transactionId":%d,"meterStop":10,'
                '"timestamp":"2026-12-01T10:02:00Z"}]'
            )
            await ws.send(stop % 777)
            await recv_json(ws)
            await wait_for(lambda: secondary.frames["CP1"][-1].startswith('[2,"sp1"'))
            assert primary.frames["CP1"][-1] == stop % 777
            assert secondary.frames["CP1"][-1] == stop % 555


async def test_primary_away_the_charger_is_answered_locally_and_the_secondary_still_gets_it(
    tmp_path: Path,
) -> None:
    def secondary_answer(frame: list[Any]) -> Any:
        if frame[2] == "StartTransaction":
            return {"transactionId": 555, "idTagInfo": {"status": "Accepted"}}
        return {}

    async with (
        ScriptedCpms(answer=tagged("primary")) as primary,
        ScriptedCpms(answer=secondary_answer) as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await _both_up(srv, uid, "CP1")
            await primary.stop()  # the primary goes away: hold mode answers the charger
            await wait_for(lambda: not _live(srv, uid, "CP1").upstream_connected)
            await ws.send(HEARTBEAT)
            answer = await recv_json(ws)
            assert answer[1] == "hb1" and "currentTime" in answer[2]  # HARMON-E's own answer
            start = (
                '[2,"st1","StartTransaction",{"connectorId":1,"idTag":"T","meterStart":0,'
                '"timestamp":"2026-12-01T10:00:00Z"}]'
            )
            await ws.send(start)
            local = (await recv_json(ws))[2]["transactionId"]
            await wait_for(lambda: secondary.frames["CP1"][-2:] == [HEARTBEAT, start])
            link: Any = srv.runtime.hub.link(uid, "CP1")
            await wait_for(lambda: link._secondary._to_secondary == {local: 555})
            meter = (
                '[2,"mv1","MeterValues",{"connectorId":1,"transactionId":%d,"meterValue":'
                '[{"timestamp":"2026-12-01T10:01:00Z","sampledValue":[{"value":"5"}]}]}]'
            )
            await ws.send(meter % local)
            await recv_json(ws)
            await wait_for(lambda: secondary.frames["CP1"][-1] == meter % 555)


async def test_a_site_without_cpms_still_mirrors_to_the_secondary(tmp_path: Path) -> None:
    async with ScriptedCpms() as secondary, harmone_server(tmp_path) as srv:
        uid, url = await two_backend_site(srv, None, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await wait_for(lambda: _live(srv, uid, "CP1").secondary_connected)
            await ws.send(BOOT)
            answer = await recv_json(ws)
            assert answer[2]["status"] == "Accepted"  # HARMON-E answers, not the secondary
            await wait_for(lambda: secondary.frames["CP1"] == [BOOT])
