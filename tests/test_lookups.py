"""HTTP lookups without SIP: the lookup client against a real aiohttp server on loopback
(query encoding, JSON bodies, bearer and HMAC, retries, the timeout budget, TLS, bad answers),
the `http` step in the interpreter, `check` errors with file:line, and `simulate`'s canned
answers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from ringmaster.config import Config, HttpEndpoint
from ringmaster.flows.actions import HttpAnswered, HttpRequest, PlayPrompts
from ringmaster.flows.dialplan import DialPlan, check_flows, node_context
from ringmaster.flows.interpreter import FlowRun
from ringmaster.lookups import LookupClient, signature
from ringmaster.yamlsource import ConfigInvalid, loads
from tests.helpers.audio import write_tone

SECRET = "s3cret-s3cret-s3cret"
TOKEN = "token-0123456789"


class Crm:
    """A CRM on loopback: records what it was asked, answers by path."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = 0
        app = web.Application()
        app.router.add_route("*", "/{what}", self.handle)
        self.app = app

    async def handle(self, req: web.Request) -> web.StreamResponse:
        body = await req.read()
        self.requests.append({"method": req.method, "path": req.path, "query": dict(req.query),
                              "raw_query": req.rel_url.raw_query_string, "body": body, "headers": dict(req.headers)})
        what = req.match_info["what"]
        if what == "slow":
            await asyncio.sleep(10)
        if what == "flaky" and self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        if what == "broken":
            return web.Response(status=500, text="oops")
        if what == "missing":
            return web.Response(status=404)
        if what == "html":
            return web.Response(text="<html>", content_type="text/html")
        if what == "big":
            return web.json_response({"x": "y" * 5000})
        if what == "away":
            raise web.HTTPFound("http://192.0.2.1/elsewhere")
        q = dict(req.query) if req.method == "GET" else json.loads(body)
        tier = "vip" if q.get("caller", "").startswith("4570") else "normal"
        return web.json_response({"customer": {"tier": tier, "name": "Dana", "lang": "da", "agents": ["alice"]}})


@pytest.fixture
async def crm():  # type: ignore[no-untyped-def]
    c = Crm()
    server = TestServer(c.app, host="127.0.0.1", port=0)
    await server.start_server()
    c.url = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    yield c
    await server.close()


def ep(url: str, **kw: Any) -> HttpEndpoint:
    return HttpEndpoint.model_validate({"url": url, **kw})


async def test_get_sends_url_encoded_values_in_the_query_with_bearer_and_a_verifiable_hmac(crm):
    client = LookupClient()
    try:
        answer = await client.request(ep(f"{crm.url}/customer?v=1", bearer_token=TOKEN, hmac_secret=SECRET),
                                      {"caller": "4570 11&admin=1", "account": "../x?y#z"}, call_id="c-1")
    finally:
        await client.close()
    assert answer.result == "ok" and answer.status == 200
    assert answer.data is not None and answer.data["customer"]["name"] == "Dana"
    [req] = crm.requests
    # caller input stays inside its own parameter: nothing added to the path or the query
    assert req["path"] == "/customer"
    assert req["query"] == {"v": "1", "caller": "4570 11&admin=1", "account": "../x?y#z"}
    h = req["headers"]
    assert h["Authorization"] == f"Bearer {TOKEN}" and h["X-Ringmaster-Call-Id"] == "c-1"
    ts = h["X-Ringmaster-Timestamp"]
    assert abs(int(ts) - time.time()) < 5
    expected = hmac.new(SECRET.encode(), f"{ts}.{req['raw_query']}".encode(), hashlib.sha256).hexdigest()
    assert h["X-Ringmaster-Signature"] == f"sha256={expected}"


async def test_post_sends_a_json_object_signed_over_its_body(crm):
    client = LookupClient()
    try:
        answer = await client.request(ep(f"{crm.url}/customer", method="POST", hmac_secret=SECRET),
                                      {"caller": "4570112233", "note": "æøå \"quoted\""})
    finally:
        await client.close()
    assert answer.result == "ok" and answer.data["customer"]["tier"] == "vip"  # type: ignore[index]
    [req] = crm.requests
    assert json.loads(req["body"]) == {"caller": "4570112233", "note": "æøå \"quoted\""}
    assert req["headers"]["Content-Type"] == "application/json"
    ts = req["headers"]["X-Ringmaster-Timestamp"]
    assert req["headers"]["X-Ringmaster-Signature"] == signature(SECRET, ts, req["body"])
    assert signature("another-secret-000", ts, req["body"]) != req["headers"]["X-Ringmaster-Signature"]


async def test_a_slow_service_is_a_timeout_within_the_budget_retries_included(crm):
    client = LookupClient()
    t0 = time.monotonic()
    try:
        answer = await client.request(ep(f"{crm.url}/slow", timeout=0.5, retries=3), {"caller": "1"})
    finally:
        await client.close()
    took = time.monotonic() - t0
    # retries stay inside the 0.5 s budget (four tries would take 2 s); the slack is for a loaded CI box
    assert answer.result == "timeout" and 0.5 <= took < 1.2, (answer, took)


async def test_5xx_is_retried_then_an_error_and_4xx_is_not_retried(crm):
    client = LookupClient()
    try:
        broken = await client.request(ep(f"{crm.url}/broken", retries=2, retry_delay=0.05), {})
        assert (broken.result, broken.status) == ("error", 500)
        assert len(crm.requests) == 3
        missing = await client.request(ep(f"{crm.url}/missing", retries=2), {})
        assert (missing.result, missing.status) == ("error", 404) and len(crm.requests) == 4
        crm.fail_first = 1
        flaky = await client.request(ep(f"{crm.url}/flaky", retries=1, retry_delay=0.05), {"caller": "4570"})
        assert flaky.result == "ok" and len(crm.requests) == 6
    finally:
        await client.close()


async def test_bad_answers_and_dead_services_are_errors_not_exceptions(crm):
    client = LookupClient()
    try:
        html = await client.request(ep(f"{crm.url}/html"), {})
        big = await client.request(ep(f"{crm.url}/big", max_bytes=1024), {})
        away = await client.request(ep(f"{crm.url}/away"), {})
        t0 = time.monotonic()
        dead = await client.request(ep("http://127.0.0.1:9/nothing-listens", retries=2, retry_delay=0.05), {})
        dead_took = time.monotonic() - t0
    finally:
        await client.close()
    assert html.result == "error" and "invalid JSON" in html.detail
    assert big.result == "error" and "larger than 1024" in big.detail
    assert (away.result, away.status) == ("error", 302)  # redirects are not followed
    assert len([r for r in crm.requests if r["path"] == "/away"]) == 1
    assert dead.result == "error" and dead.status == 0 and dead_took < 1.0, dead


async def test_tls_with_the_configured_ca_and_refused_without_it(tmp_path: Path):
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    async def gold(req: web.Request) -> web.Response:
        return web.json_response({"tier": "gold"})

    app.router.add_get("/c", gold)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = LookupClient()
    try:
        trusted = await client.request(ep(f"https://127.0.0.1:{port}/c", tls={"ca_file": str(cert)}), {})
        untrusted = await client.request(ep(f"https://127.0.0.1:{port}/c", retries=0), {})
    finally:
        await client.close()
        await runner.cleanup()
    assert trusted.result == "ok" and trusted.data == {"tier": "gold"}
    assert untrusted.result == "error" and "certificate" in untrusted.detail.lower(), untrusted


@pytest.mark.parametrize("url, why", [
    ("http://crm.example/c/${account}", "the URL is fixed"),
    ("ftp://crm.example/c", "expected an http:// or https:// URL"),
    ("http://user:pw@crm.example/c", "no credentials in the URL"),
])
def test_endpoint_urls_are_fixed_plain_http_urls(url: str, why: str):
    with pytest.raises(ValueError, match=why):
        HttpEndpoint.model_validate({"url": url})


# ---------------------------------------------------------------- the http step


def plan(tmp_path: Path, flows: dict) -> DialPlan:
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    for name in ("vip", "normal", "sorry", "down"):
        write_tone(d / f"{name}.wav", 400, 0.05)
    cfg = Config.model_validate({"flows": flows, "paths": {"prompts": str(d)},
                                 "http_endpoints": {"crm": {"url": "http://127.0.0.1:9/c", "method": "POST"}},
                                 "entry_points": [{"number": "1", "flow": next(iter(flows))}]})
    return DialPlan(cfg)


LOOKUP = {"main": [
    {"http": {"endpoint": "crm", "params": {"caller": "${caller}", "acct": "${account}", "n": 7},
              "map": {"tier": "customer.tier", "first_agent": "customer.agents.0", "blob": "customer",
                      "missing": "customer.nope"},
              "on_timeout": "sorry", "on_error": "down"}},
    {"branch": {"on": "tier", "cases": [{"exact": "vip", "then": "vip"}], "default": "normal"}},
    {"id": "vip", "play": "vip"}, "hangup",
    {"id": "normal", "play": "normal"}, "hangup",
    {"id": "sorry", "play": "sorry"}, "hangup",
    {"id": "down", "play": "down"}, "hangup"]}


def _walk(tmp_path: Path, answer: HttpAnswered) -> tuple[FlowRun, list[Any], list[Any]]:
    p = plan(tmp_path, LOOKUP)
    run = FlowRun(p, p.flows["main"], variables={"caller": "4570112233", "account": "99"})
    first = run.start()
    return run, first, run.feed(answer)


def test_http_step_sends_its_params_and_maps_answer_fields_into_variables(tmp_path: Path):
    run, first, then = _walk(tmp_path, HttpAnswered("ok", 200, {"customer": {"tier": "vip", "agents": ["alice"],
                                                                            "name": "x"}}))
    [req] = first  # before the answer: the caller hears ringing meanwhile
    assert isinstance(req, HttpRequest) and req.name == "crm" and req.endpoint.method == "POST"
    assert req.values == (("acct", "99"), ("caller", "4570112233"), ("n", "7"))
    assert Path(then[1].files[0]).stem == "vip"
    assert run.variables["tier"] == "vip" and run.variables["first_agent"] == "alice"
    assert "blob" not in run.variables and "missing" not in run.variables  # an object, and an absent field
    assert run.variables["http_result"] == "ok" and run.variables["http_status"] == 200
    assert any("no usable 'customer' in the answer: blob not set" in t for t in run.trace)


@pytest.mark.parametrize("answer, heard", [
    (HttpAnswered("timeout", detail="no answer within 2 s"), "sorry"),
    (HttpAnswered("error", 500, detail="HTTP 500"), "down"),
    (HttpAnswered("error", 0, detail="refused"), "down"),
    (HttpAnswered("ok", 200, {"customer": {"tier": "gold"}}), "normal"),
])
def test_timeout_and_error_take_their_branches(tmp_path: Path, answer: HttpAnswered, heard: str):
    run, _, then = _walk(tmp_path, answer)
    plays = [a for a in then if isinstance(a, PlayPrompts)]
    assert [Path(f).stem for f in plays[0].files] == [heard]
    assert run.variables["http_result"] == answer.result


def test_without_branches_a_failed_lookup_goes_on_with_the_next_step(tmp_path: Path):
    p = plan(tmp_path, {"f": [{"http": "crm"}, {"play": "normal"}, "hangup"]})
    run = FlowRun(p, p.flows["f"], variables={"caller": "1", "called": "2"})
    [req] = run.start()
    assert req.values == (("called", "2"), ("caller", "1"))  # no params: every call variable
    acts = run.feed(HttpAnswered("timeout"))
    assert [Path(f).stem for f in acts[1].files] == ["normal"]


def test_an_answer_cannot_set_caller_or_inject_header_breaking_values(tmp_path: Path):
    p = plan(tmp_path, {"f": [{"http": {"endpoint": "crm", "map": {"name": "n", "note": "x"}}}, "hangup"]})
    run = FlowRun(p, p.flows["f"], variables={"caller": "1"})
    run.start()
    run.feed(HttpAnswered("ok", 200, {"n": "Dana\r\nX-Evil: 1", "x": "y" * 201}))
    assert "name" not in run.variables and "note" not in run.variables


def _check(tmp_path: Path, text: str) -> list[str]:
    src = loads(text, "plan.yaml")
    (tmp_path / "p").mkdir(exist_ok=True)
    cfg = Config.model_validate({**src.data, "paths": {"prompts": str(tmp_path / "p")}})
    return [str(e) for e in check_flows(cfg.flows, [], node_context(cfg), src)]


def test_check_names_an_unknown_endpoint_and_a_reserved_variable_with_file_and_line(tmp_path: Path):
    errs = _check(tmp_path, "http_endpoints: {crm: {url: 'http://127.0.0.1:9/c'}}\n"
                            "flows:\n  f:\n    - http: cmr\n    - http: {endpoint: crm, map: {caller: x}}\n    - hangup\n")
    assert errs[0] == "plan.yaml:4:13: http: unknown endpoint 'cmr' (did you mean 'crm'?)"
    assert errs[1] == "plan.yaml:5:34: flows.f.1.http.map: 'caller' cannot be set from an answer"
    assert len(errs) == 2


def test_a_url_with_variables_is_a_config_error_with_its_line(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("http_endpoints:\n  crm:\n    url: 'http://crm/${caller}'\n")
    with pytest.raises(ConfigInvalid) as exc:
        from ringmaster.config import load_config

        load_config(path)
    [err] = exc.value.errors
    assert str(err).startswith(f"{path}:3:10: http_endpoints.crm.url: the URL is fixed")


def test_simulate_takes_canned_answers(tmp_path: Path):
    d = tmp_path / "p"
    d.mkdir()
    for name in ("vip", "normal", "sorry", "down"):
        write_tone(d / f"{name}.wav", 400, 0.05)
    cfg = {"paths": {"prompts": "p"}, "http_endpoints": {"crm": {"url": "http://127.0.0.1:9/c", "method": "POST"}},
           "flows": LOOKUP, "entry_points": [{"number": "1", "flow": "main"}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cli = [sys.executable, "-m", "ringmaster.cli", "simulate", "main", "-c", str(path), "--caller", "4570"]
    vip = subprocess.run(cli + ["--answer", 'crm={"customer": {"tier": "vip"}}'], capture_output=True, text=True)
    assert "http crm: POST http://127.0.0.1:9/c (acct=, caller=4570, n=7) -> ok 200" in vip.stdout, vip.stdout
    assert "play vip" in vip.stdout and '"tier": "vip"' in vip.stdout
    slow = subprocess.run(cli + ["--answer", "crm=timeout"], capture_output=True, text=True)
    assert "-> timeout" in slow.stdout and "play sorry" in slow.stdout, slow.stdout
    down = subprocess.run(cli + ["--answer", "crm=500"], capture_output=True, text=True)
    assert "-> error 500" in down.stdout and "play down" in down.stdout, down.stdout
    none = subprocess.run(cli, capture_output=True, text=True)
    assert "no canned answer" in none.stdout and "play down" in none.stdout, none.stdout
    bad = subprocess.run(cli + ["--answer", "crn=timeout"], capture_output=True, text=True)
    assert bad.returncode == 2 and "endpoint of http_endpoints (crm)" in bad.stderr


def test_branch_on_a_looked_up_variable_as_written_in_yaml(tmp_path: Path):
    # `on:` is a YAML 1.1 boolean; as a key it must stay the word the plan wrote
    d = tmp_path / "p"
    d.mkdir()
    for name in ("vip", "normal"):
        write_tone(d / f"{name}.wav", 400, 0.05)
    path = tmp_path / "c.yaml"
    path.write_text("paths: {prompts: p}\nhttp_endpoints: {crm: {url: 'http://127.0.0.1:9/c'}}\n"
                    "flows:\n  f:\n    - http: {endpoint: crm, map: {tier: tier}}\n"
                    "    - branch: {on: tier, cases: [{exact: vip, then: vip}]}\n"
                    "    - play: normal\n    - hangup\n    - id: vip\n      play: vip\n"
                    "entry_points: [{number: '1', flow: f}]\n")
    from ringmaster.config import load_config

    p = DialPlan(load_config(path))
    run = FlowRun(p, p.flows["f"])
    run.start()
    acts = run.feed(HttpAnswered("ok", 200, {"tier": "vip"}))
    assert [Path(f).stem for f in acts[1].files] == ["vip"]
