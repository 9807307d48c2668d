"""Voicemail people can reach, with a real daemon: a pjsua2 caller leaves a message; it is
published on the daemon's own mosquitto, listed, downloaded (a real WAV of the length spoken),
marked heard and deleted through the API (by role: an agent reads only its own boxes) and the
CLI; the owner's softphone (SIPp, digest-authenticated) sees its message-waiting lamp follow
(RFC 3842 NOTIFYs); retention deletes old messages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ringmaster import protocol as p
from tests.helpers.audio import read_wav, tone_sequence, write_tone
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.helpers.rawsip import RawSip, branch, status_of
from tests.helpers.sipp import sipp_args
from tests.test_api import http, metric

TOKENS = {"admin": "adm-" + "a" * 20, "operator": "op-" + "o" * 20,
          "alice": "alice-desk-" + "x" * 12, "bob": "bob-desk-" + "y" * 12}
CLI = [sys.executable, "-m", "ringmaster.cli"]
TONES = {"caller_voice": 1700.0, "hold": 440.0}


def vm_config(d, mqtt: bool = False, retention_days: float | None = None) -> None:  # type: ignore[no-untyped-def]
    """alice and bob with boxes of their own; `sales` (members alice) has a box its members read.
    Number 100 leaves a message for alice, 101 for bob, 102 for the sales queue."""
    write_tone(d.dir / "prompts" / "hold.wav", 440.0, 2.0)
    d.config["agents"] = {a: {"softphone": {"username": a, "password": f"{a}-secret"}, "mqtt_password": f"{a}-mqtt-pw"}
                          for a in ("alice", "bob")}
    d.config["queues"] = {"sales": {"members": ["alice"], "moh": "hold"}}
    d.config["voicemail"] = {"boxes": {"alice": {"agent": "alice"}, "bob": {"agent": "bob"}, "sales": {"queue": "sales"}}}
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}", "tokens": [
        {"name": "admin", "token": TOKENS["admin"], "role": "admin"},
        {"name": "wall", "token": TOKENS["operator"], "role": "operator"},
        {"name": "alice-desk", "token": TOKENS["alice"], "role": "agent", "agent": "alice"},
        {"name": "bob-desk", "token": TOKENS["bob"], "role": "agent", "agent": "bob"}]}
    if mqtt:
        d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}"}
    if retention_days is not None:
        d.config["storage"]["voicemail_retention_days"] = retention_days
    d.config["entry_points"] = []
    for n, box in (("100", "alice"), ("101", "bob"), ("102", "sales")):
        d.config["flows"][f"vm-{box}"] = [{"voicemail": {"box": box, "max_seconds": 20}}, "hangup"]
        d.config["entry_points"].append({"number": n, "flow": f"vm-{box}"})


def api(d, method: str, path: str, who: str, body: Any = None) -> tuple[int, Any]:  # type: ignore[no-untyped-def]
    code, headers, data = http(d, method, path, body=body, token=TOKENS[who])
    if headers.get("Content-Type", "").startswith("application/json"):
        return code, json.loads(data)
    return code, data


async def leave_message(d, phone: Phone, number: str, voice: Path, hangup: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Call, speak (a tone file), end with # (or by hanging up)."""
    leg = await phone.call(f"sip:{number}@{d.edge}")
    await asyncio.sleep(0.3)
    phone.send(p.Play(leg=leg, files=(str(voice),)))
    await phone.wait(p.PlaybackDone, lambda m: m.leg == leg, timeout=10)
    if hangup:
        phone.send(p.Hangup(leg=leg))
    else:
        phone.send(p.SendDtmf(leg=leg, digits="#"))
    await phone.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=10)


def cli(d, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(CLI + ["voicemail", *args, "-c", str(d.config_path)], capture_output=True, text=True, timeout=20)


def wav_seconds(data: bytes, tmp: Path) -> tuple[float, list[str]]:
    f = tmp / "fetched.wav"
    f.write_bytes(data)
    samples, rate = read_wav(f)
    return len(samples) / rate, [n for n, _ in tone_sequence(samples, TONES)]


async def wait_for(pred, timeout: float = 10.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_message_is_published_listed_downloaded_marked_and_deleted_by_its_owner_only(daemon_factory, tmp_path):
    d = daemon_factory(workers=1, start=False)
    vm_config(d, mqtt=True)
    d.start()
    write_tone(tmp_path / "voice.wav", TONES["caller_voice"], 2.0)
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    desk.subscribe("voicemail/alice/events")
    snoop = Client(d.ports.base + 8, "bob", "bob-mqtt-pw", client_id="desk-bob")
    snoop.subscribe("voicemail/alice/events")  # the broker's ACL keeps alice's box from bob
    caller = await Phone("4511223344", d.ports.caller(0), d.ports.base + 80).start()
    try:
        await leave_message(d, caller, "100", tmp_path / "voice.wav")
        await leave_message(d, caller, "101", tmp_path / "voice.wav", hangup=True)
    finally:
        await caller.stop()

    # MQTT: the box, caller, length and where to fetch it, to alice's desk only
    new = desk.wait_for("voicemail/alice/events", lambda m: m["event"] == "new", timeout=10)
    assert new["box"] == "alice" and new["caller"] == "4511223344" and new["new"] == 1 and new["heard"] == 0
    assert 1.7 <= new["seconds"] <= 4.0, new
    assert new["url"] == f"http://127.0.0.1:{d.ports.base + 6}/api/voicemail/{new['message']}/audio"
    mid = new["message"]
    await asyncio.sleep(0.5)
    assert snoop.received("voicemail/alice/events") == []

    # the API, as alice: her box only; the audio is the caller's 2 s of voice
    code, body = api(d, "GET", "/api/voicemail", "alice")
    assert code == 200 and body["boxes"] == ["alice", "sales"], body
    assert [(m["id"], m["box"], m["state"], m["caller"]) for m in body["messages"]] == [(mid, "alice", "new", "4511223344")]
    code, audio = api(d, "GET", new["url"].split(str(d.ports.base + 6), 1)[1], "alice")
    assert code == 200 and audio[:4] == b"RIFF"
    seconds, heard = wav_seconds(audio, tmp_path)
    assert 1.7 <= seconds <= 4.0 and heard == ["caller_voice"], (seconds, heard)

    def lamps() -> dict[tuple[str, str], float]:  # /metrics' voicemail counts (kept as they change)
        text = http(d, "GET", "/metrics", token=TOKENS["admin"])[2].decode()
        return {(s.labels["box"], s.labels["state"]): s.value for fam in text_string_to_metric_families(text)
                if fam.name == "ringmaster_voicemail_messages" for s in fam.samples}

    assert lamps() == {("alice", "new"): 1, ("alice", "heard"): 0, ("bob", "new"): 1, ("bob", "heard"): 0,
                       ("sales", "new"): 0, ("sales", "heard"): 0}
    # every documented query parameter is taken; anything else is refused
    doc = json.loads(http(d, "GET", "/openapi.json")[2])
    good = {"box": "alice", "state": "new", "limit": "5"}
    for prm in doc["paths"]["/api/voicemail"]["get"]["parameters"]:
        code, body = api(d, "GET", f"/api/voicemail?{prm['name']}={good[prm['name']]}", "alice")
        assert code == 200 and body["count"] == 1, (prm, body)
    assert api(d, "GET", "/api/voicemail?undocumented=1", "alice")[0] == 400
    assert api(d, "GET", "/api/voicemail?limit=0", "alice")[0] == 400
    assert api(d, "GET", "/api/voicemail?box=nosuch", "alice")[0] == 404

    # bob's desk cannot see, fetch, mark or delete alice's message; an operator reads no voicemail
    bob_msgs = api(d, "GET", "/api/voicemail", "bob")[1]["messages"]
    assert [m["box"] for m in bob_msgs] == ["bob"]
    assert api(d, "GET", "/api/voicemail?box=alice", "bob")[0] == 403
    assert api(d, "GET", f"/api/voicemail/{mid}", "bob")[0] == 404
    assert api(d, "GET", f"/api/voicemail/{mid}/audio", "bob")[0] == 404
    assert api(d, "POST", f"/api/voicemail/{mid}", "bob", {"state": "heard"})[0] == 404
    assert api(d, "DELETE", f"/api/voicemail/{mid}", "bob")[0] == 404
    assert api(d, "GET", "/api/voicemail", "operator")[0] == 403
    assert api(d, "GET", "/api/calls", "alice")[0] == 403  # an agent token reaches voicemail only
    assert api(d, "POST", f"/api/voicemail/{mid}", "alice", {"state": "gone"})[0] == 400
    assert api(d, "GET", "/api/voicemail/abc", "alice")[0] == 400
    # the admin sees every box
    assert sorted(m["box"] for m in api(d, "GET", "/api/voicemail", "admin")[1]["messages"]) == ["alice", "bob"]

    # alice marks it heard: stored with who did it, published with the counts
    code, body = api(d, "POST", f"/api/voicemail/{mid}", "alice", {"state": "heard"})
    assert code == 200 and body["message"]["state"] == "heard" and body["message"]["heard_by"] == "alice-desk"
    ev = desk.wait_for("voicemail/alice/events", lambda m: m["event"] == "heard")
    assert (ev["new"], ev["heard"]) == (0, 1)
    assert (lamps()[("alice", "new")], lamps()[("alice", "heard")]) == (0, 1)
    assert api(d, "GET", "/api/voicemail?state=new", "alice")[1]["messages"] == []

    # the CLI (through the daemon): list, play into a file, new again, delete
    out = cli(d, "list")
    assert out.returncode == 0 and "alice" in out.stdout and "bob" in out.stdout and "4511223344" in out.stdout, out
    target = tmp_path / "cli.wav"
    out = cli(d, "play", str(mid), "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert target.read_bytes() == audio
    out = cli(d, "new", str(mid))
    assert out.returncode == 0 and "new" in out.stdout, out
    assert desk.wait_for("voicemail/alice/events", lambda m: m["event"] == "new" and m["new"] == 1 and m["heard"] == 0)
    out = cli(d, "delete", str(mid))
    assert out.returncode == 0 and "deleted" in out.stdout, out
    ev = desk.wait_for("voicemail/alice/events", lambda m: m["event"] == "deleted")
    assert (ev["new"], ev["heard"]) == (0, 0)
    assert api(d, "GET", f"/api/voicemail/{mid}/audio", "alice")[0] == 404
    assert cli(d, "play", str(mid), "-o", str(tmp_path / "x.wav")).returncode == 1
    assert cli(d, "delete", "999").returncode == 1
    assert cli(d, "list", "--box", "nosuchbox").returncode == 1

    # bob deletes his own through the API; the rows stay, marked, the files are gone
    (bob_msg,) = bob_msgs
    code, body = api(d, "DELETE", f"/api/voicemail/{bob_msg['id']}", "bob")
    assert code == 200 and body["deleted"] is True
    con = sqlite3.connect(d.db_path)
    rows = con.execute("SELECT box, deleted_by, path FROM voicemails ORDER BY id").fetchall()
    con.close()
    assert [(r[0], r[1]) for r in rows] == [("alice", "cli"), ("bob", "bob-desk")]
    assert not any(Path(r[2]).exists() for r in rows)
    assert api(d, "GET", "/api/voicemail", "admin")[1]["messages"] == []
    assert set(lamps().values()) == {0}
    desk.close()
    snoop.close()


async def test_owner_phone_message_waiting_lamp_follows_new_heard_deleted(daemon_factory, tmp_path):
    d = daemon_factory(workers=1, start=False)
    vm_config(d)
    d.start()
    write_tone(tmp_path / "voice.wav", TONES["caller_voice"], 1.0)
    args = sipp_args("uac_mwi.xml", d.edge, d.ports.caller(5), service="alice", timeout=90,
                     extra=["-au", "alice", "-ap", "alice-secret", "-trace_msg", "-message_file", str(tmp_path / "mwi.log")])
    sipp = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def notified(new: int, heard: int) -> Any:
            return [e for e in d.events("mwi.notified") if e.get("user") == "alice"
                    and (e["new"], e["heard"]) == (new, heard)]

        await wait_for(lambda: notified(0, 0))  # subscribed: the lamp's state at once
        metrics = http(d, "GET", "/metrics", token=TOKENS["admin"])[2].decode()
        assert metric(metrics, "ringmaster_mwi_subscriptions") == 1
        caller = await Phone("4511223344", d.ports.caller(0), d.ports.base + 80).start()
        try:
            await leave_message(d, caller, "100", tmp_path / "voice.wav")
        finally:
            await caller.stop()
        await wait_for(lambda: notified(1, 0))
        (msg,) = api(d, "GET", "/api/voicemail", "alice")[1]["messages"]
        assert api(d, "POST", f"/api/voicemail/{msg['id']}", "alice", {"state": "heard"})[0] == 200
        await wait_for(lambda: notified(0, 1))
        assert api(d, "DELETE", f"/api/voicemail/{msg['id']}", "alice")[0] == 200
        out, _ = await asyncio.get_running_loop().run_in_executor(None, lambda: sipp.communicate(timeout=60))
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    log = (tmp_path / "mwi.log").read_text(errors="replace")
    assert sipp.returncode == 0, out[-3000:] + log[-4000:]
    notifies = [blk for blk in log.split("NOTIFY sip:")[1:]]
    assert len(notifies) == 5, log[-4000:]
    assert "Subscription-State: terminated" in notifies[-1]
    assert "Message-Account: sip:alice@" in notifies[1]
    # every NOTIFY is in the subscription's dialog: our From tag is the To tag of the edge's 200
    ok = log.split("SIP/2.0 200 OK", 1)[1]
    our_tag = re.search(r"^To: .*;tag=(\S+)$", ok, re.M)[1]  # type: ignore[index]
    for n in notifies:
        from_line = re.search(r"^From: (.*)$", n, re.M)[1]  # type: ignore[index]
        assert from_line.count(";tag=") == 1 and from_line.endswith(f";tag={our_tag}"), from_line
    assert d.events("mwi.unsubscribed")


def test_check_rejects_unknown_box_owner_and_agent_token(tmp_path):
    import yaml

    from tests.helpers.daemon import allocate_ports, base_config

    cfg = base_config(tmp_path, allocate_ports())
    cfg["agents"] = {"alice": {"softphone": {"username": "alice", "password": "alice-secret"}}}
    cfg["voicemail"] = {"boxes": {"alice": {"agent": "alicia"}, "sales": {"queue": "nosuch"}}}
    cfg["http"] = {"tokens": [{"name": "desk", "token": "x" * 20, "role": "agent", "agent": "carol"}]}
    cfg["flows"]["vm"] = [{"voicemail": {"box": "general"}}, "hangup"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = subprocess.run(CLI + ["check", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines() + out.stdout.strip().splitlines()
    text = "\n".join(lines)
    assert "voicemail: unknown box 'general'" in text, text
    assert "box 'alice': unknown agent 'alicia' (did you mean 'alice'?)" in text, text
    assert "box 'sales': unknown queue 'nosuch'" in text, text
    assert "token 'desk': unknown agent 'carol'" in text, text
    for needle in ("unknown box 'general'", "unknown agent 'alicia'", "unknown queue 'nosuch'", "unknown agent 'carol'"):
        line = next(x for x in lines if needle in x)
        assert line.startswith(f"{path}:") and line.split(":")[1].isdigit(), line


async def test_retention_deletes_old_messages_and_keeps_their_rows(daemon_factory, tmp_path):
    d = daemon_factory(workers=1, start=False)
    vm_config(d)
    d.start()
    write_tone(tmp_path / "voice.wav", TONES["caller_voice"], 1.0)
    caller = await Phone("4511223344", d.ports.caller(0), d.ports.base + 80).start()
    try:
        await leave_message(d, caller, "102", tmp_path / "voice.wav")
    finally:
        await caller.stop()
    (msg,) = api(d, "GET", "/api/voicemail", "alice")[1]["messages"]
    assert msg["box"] == "sales"  # a queue's box: its member alice reads it, bob does not
    assert api(d, "GET", "/api/voicemail", "bob")[1]["messages"] == []
    d.stop()
    await asyncio.sleep(1.0)
    # the next start sweeps at once: the message is older than the retention (0.86 s)
    vm_config(d, retention_days=0.00001)
    d.start()
    await wait_for(lambda: d.events("voicemail.expired"))
    con = sqlite3.connect(d.db_path)
    row = con.execute("SELECT deleted_by, path FROM voicemails").fetchone()
    con.close()
    assert row[0] == "retention" and not Path(row[1]).exists()
    assert api(d, "GET", "/api/voicemail", "admin")[1]["messages"] == []

def _subscribe(sock: RawSip, edge_port: int, aor: str, user: str, call_id: str, cseq: int, event: str = "message-summary",
               expires: int = 600, auth: str = "", to_tag: str = "") -> str:
    """A SUBSCRIBE from `user`'s phone for `aor`'s lamp (in the dialog when to_tag is given: then
    to the edge's Contact); returns the edge's final answer."""
    ruri = f"sip:127.0.0.1:{edge_port}" if to_tag else f"sip:{aor}@127.0.0.1:{edge_port}"
    msg = (f"SUBSCRIBE {ruri} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{sock.port};branch={branch()};rport\r\n"
           f"From: <sip:{user}@127.0.0.1:{edge_port}>;tag=ph{call_id[:6]}\r\n"
           f"To: <sip:{aor}@127.0.0.1:{edge_port}>{f';tag={to_tag}' if to_tag else ''}\r\n"
           f"Call-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\n"
           f"Contact: <sip:{user}@127.0.0.1:{sock.port}>\r\nMax-Forwards: 70\r\nEvent: {event}\r\n"
           f"Expires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n")
    sock.send(msg.encode(), edge_port)
    return sock.final_reply(3.0)


def _digest(challenge: str, user: str, password: str, uri: str) -> str:
    realm = re.search(r'realm="([^"]+)"', challenge)[1]  # type: ignore[index]
    nonce = re.search(r'nonce="([^"]+)"', challenge)[1]  # type: ignore[index]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"SUBSCRIBE:{uri}".encode()).hexdigest()
    resp = hashlib.md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}".encode()).hexdigest()
    return (f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", qop=auth, nc=00000001, cnonce="c0ffee", algorithm=MD5\r\n')


def test_edge_refuses_other_packages_unauthenticated_and_foreign_lamp_subscriptions(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    vm_config(d)
    d.start()
    sock = RawSip(d.ports.caller(7))
    port = d.ports.edge
    try:
        assert status_of(_subscribe(sock, port, "alice", "alice", "c1", 1, event="presence")) == 489
        challenge = _subscribe(sock, port, "alice", "alice", "c2", 1)
        assert status_of(challenge) == 401 and "WWW-Authenticate: Digest" in challenge, challenge
        # alice's own credentials for bob's lamp
        uri = f"sip:bob@127.0.0.1:{port}"
        assert status_of(_subscribe(sock, port, "bob", "alice", "c2", 2,
                                    auth=_digest(challenge, "alice", "alice-secret", uri))) == 403
        # a wrong password is challenged again; a too short subscription is refused with Min-Expires
        uri = f"sip:alice@127.0.0.1:{port}"
        assert status_of(_subscribe(sock, port, "alice", "alice", "c2", 3,
                                    auth=_digest(challenge, "alice", "guess", uri))) == 401
        challenge = _subscribe(sock, port, "alice", "alice", "c3", 1)
        short = _subscribe(sock, port, "alice", "alice", "c3", 2, expires=10,
                           auth=_digest(challenge, "alice", "alice-secret", uri))
        assert status_of(short) == 423 and "Min-Expires: 60" in short, short
    finally:
        sock.close()
    time.sleep(0.5)
    assert d.events("mwi.subscribed") == []
    # counted towards a ban like a REGISTER's
    assert [e["detail"].split()[0] for e in d.events("edge.auth_failed")] == ["user=alice"]


async def test_expiry_skips_a_message_still_being_left_and_tells_the_readers_of_each_deleted_one(tmp_path):
    from ringmaster.config import Config
    from ringmaster.store import Store
    from ringmaster.voicemail import Voicemail

    rec = tmp_path / "recordings"
    cfg = Config.model_validate({
        "agents": {a: {"softphone": {"username": a, "password": f"{a}-secret"}} for a in ("alice", "bob")},
        "queues": {"sales": {"members": ["alice", "bob"]}},
        "voicemail": {"boxes": {"sales": {"queue": "sales"}}}, "paths": {"recordings": str(rec)}})
    store = Store(tmp_path / "s.db")
    await store.open()
    try:
        for call_id in ("old-1", "live-2"):
            path = rec / "voicemail" / "sales" / f"{call_id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_tone(path, 440.0, 0.5)
            store.voicemail_started(call_id, "sales", "4511223344", str(path), 1000.0)
            store.voicemail_finished(call_id, str(path), 0.5)
        await store.flush()
        published: list[tuple[str, dict[str, Any]]] = []
        told: list[frozenset[str]] = []
        vm = Voicemail(lambda: cfg, store, publish=lambda t, p: published.append((t, p)), counts_changed=told.append)
        await vm.start()
        try:
            assert vm.box_counts() == {"sales": (2, 0)}  # read once at start
            assert await vm.expire(1.0, lambda: {"live-2"}, now=1000.0 + 86400 + 1) == 1
            assert [(t, p["event"], p["new"]) for t, p in published] == [("voicemail/sales/events", "deleted", 1)]
            assert told == [frozenset({"alice", "bob"})]
            assert not (rec / "voicemail" / "sales" / "old-1.wav").exists()
            assert [m.call_id for m in await vm.messages()] == ["live-2"]
            assert vm.box_counts() == {"sales": (1, 0)} and vm.counts(["sales"]) == (1, 0)
        finally:
            await vm.stop()
    finally:
        await store.close()


async def test_a_pjsua2_softphone_lamp_lights_on_a_message_and_goes_out_when_heard(daemon_factory, tmp_path):
    """pjsip's own MWI subscriber (as in softphones built on it): registers, subscribes with
    digest, and parses the NOTIFYs; the lamp follows a message left and heard."""
    d = daemon_factory(workers=1, start=False)
    vm_config(d)
    d.start()
    write_tone(tmp_path / "voice.wav", TONES["caller_voice"], 1.0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.mwiphone", "--edge", d.edge, "--user", "alice",
        "--password", "alice-secret", "--port", str(d.ports.caller(8)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    seen: list[dict[str, Any]] = []

    async def until(pred) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        while True:
            for e in seen:
                if pred(e):
                    return e
            line = await asyncio.wait_for(proc.stdout.readline(), 15)  # type: ignore[union-attr]
            assert line, f"the phone exited; seen {seen}"
            if line.startswith(b"{"):  # pjlib prints a banner before its log level applies
                seen.append(json.loads(line))

    try:
        assert (await until(lambda e: e["event"] == "registered"))["code"] == 200
        await until(lambda e: e["event"] == "mwi" and "Voice-Message: 0/0" in e["body"])
        caller = await Phone("4511223344", d.ports.caller(0), d.ports.base + 80).start()
        try:
            await leave_message(d, caller, "100", tmp_path / "voice.wav")
        finally:
            await caller.stop()
        lit = await until(lambda e: e["event"] == "mwi" and "Voice-Message: 1/0" in e["body"])
        assert "Messages-Waiting: yes" in lit["body"]
        (msg,) = api(d, "GET", "/api/voicemail?box=alice", "alice")[1]["messages"]
        assert api(d, "POST", f"/api/voicemail/{msg['id']}", "alice", {"state": "heard"})[0] == 200
        out = await until(lambda e: e["event"] == "mwi" and "Voice-Message: 0/1" in e["body"])
        assert "Messages-Waiting: no" in out["body"]
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    await wait_for(lambda: d.events("mwi.unsubscribed"))  # the phone's un-SUBSCRIBE on shutdown


def _notifies(sock: RawSip, seconds: float) -> list[str]:
    return [m for m in sock.replies(seconds) if m.startswith("NOTIFY ")]


def test_a_subscription_outlives_a_daemon_restart_at_its_next_refresh(daemon_factory):
    """The edge keeps no subscription state and the daemon keeps it in memory: after a restart
    the phone's refresh is answered and its lamp is served again, in the same dialog, with a
    CSeq above every one the phone saw (RFC 3261 12.2.2)."""
    d = daemon_factory(workers=1, start=False)
    vm_config(d)
    d.start()
    sock = RawSip(d.ports.caller(7))
    port = d.ports.edge
    uri = f"sip:alice@127.0.0.1:{port}"
    try:
        challenge = _subscribe(sock, port, "alice", "alice", "r1", 1)
        ok = _subscribe(sock, port, "alice", "alice", "r1", 2, auth=_digest(challenge, "alice", "alice-secret", uri))
        assert status_of(ok) == 200, ok
        our_tag = re.search(r"^To: .*;tag=(\S+)\r$", ok, re.M)[1]  # type: ignore[index]
        first = _notifies(sock, 1.0)
        assert first and "CSeq: 1 NOTIFY" in first[0]
        d.stop()
        d.start()
        refresh_uri = f"sip:127.0.0.1:{port}"
        challenge = _subscribe(sock, port, "alice", "alice", "r1", 3, to_tag=our_tag)
        assert status_of(challenge) == 401, challenge
        ok = _subscribe(sock, port, "alice", "alice", "r1", 4, to_tag=our_tag,
                        auth=_digest(challenge, "alice", "alice-secret", refresh_uri))
        assert status_of(ok) == 200 and f";tag={our_tag}" in ok, ok
        again = _notifies(sock, 1.0)
        assert again, "no NOTIFY after the refresh"
        cseq = int(re.search(r"^CSeq: (\d+) NOTIFY\r$", again[0], re.M)[1])  # type: ignore[index]
        from_line = re.search(r"^From: (.*)\r$", again[0], re.M)[1]  # type: ignore[index]
        assert cseq > 1000 and from_line.endswith(f";tag={our_tag}") and from_line.count(";tag=") == 1, again[0]
        assert "Voice-Message: 0/0" in again[0]
    finally:
        sock.close()


async def test_a_store_from_before_voicemail_access_upgrades_after_call_totals_and_a_fresh_one_has_both(tmp_path):
    """Migration 8 (voicemail heard/deleted columns) runs after 7 (call_totals) on a store that
    has neither and one that has 7 only; a fresh store gets both. Messages left before the
    upgrade are counted at start, listed and can be marked."""
    from ringmaster.config import Config
    from ringmaster.store import MIGRATIONS, Store
    from ringmaster.voicemail import Voicemail

    assert len(MIGRATIONS) >= 8  # 9: hold time (issue 11)
    rec = tmp_path / "recordings"
    cfg = Config.model_validate({
        "agents": {"alice": {"softphone": {"username": "alice", "password": "alice-secret"}}},
        "voicemail": {"boxes": {"alice": {"agent": "alice"}}}, "paths": {"recordings": str(rec)}})

    def columns(db: Path) -> tuple[int, set[str], set[str]]:
        con = sqlite3.connect(db)
        try:
            return (con.execute("PRAGMA user_version").fetchone()[0],
                    {r[1] for r in con.execute("PRAGMA table_info(voicemails)")},
                    {r[0] for r in con.execute("SELECT name FROM sqlite_master")})
        finally:
            con.close()

    for version in (6, 7):
        db = tmp_path / f"v{version}.db"
        old = sqlite3.connect(db)
        for sql in MIGRATIONS[:version]:
            old.executescript(sql)
        old.executemany("INSERT INTO voicemails (call_id, box, caller, path, started_at, seconds, heard)"
                        " VALUES (?, 'alice', '4511223344', ?, ?, 3.0, ?)",
                        [("c1", str(rec / "c1.wav"), 10.0, 0), ("c2", str(rec / "c2.wav"), 20.0, 1),
                         ("c3", str(rec / "c3.wav"), 30.0, 0)])
        old.execute(f"PRAGMA user_version={version}")
        old.commit()
        old.close()
        store = Store(db)
        await store.open()
        vm = Voicemail(lambda: cfg, store)
        await vm.start()
        try:
            assert vm.box_counts() == {"alice": (2, 1)}, version
            newest = (await vm.messages(["alice"]))[0]
            assert newest.call_id == "c3" and newest.state == "new" and newest.heard_by is None
            marked = await vm.set_state(newest.id, "heard", "alice-desk")
            assert (marked.state, marked.heard_by) == ("heard", "alice-desk")
            assert vm.box_counts() == {"alice": (1, 2)}
        finally:
            await vm.stop()
            await store.close()
        got, cols, names = columns(db)
        assert got == len(MIGRATIONS) and {"heard_at", "heard_by", "deleted_at", "deleted_by"} <= cols
        assert {"call_totals", "voicemails_live", "call_totals_ended"} <= names

    fresh = Store(tmp_path / "fresh.db")
    await fresh.open()
    await fresh.close()
    got, cols, names = columns(tmp_path / "fresh.db")
    assert got == len(MIGRATIONS) and {"heard_at", "heard_by", "deleted_at", "deleted_by"} <= cols
    assert {"call_totals", "voicemails_live"} <= names
