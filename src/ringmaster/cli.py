"""`ringmaster` command line: run, check, status, reload, queue, schedule, agent, recording, supervise, simulate,
graph, schema, calls, events, tasks, stats, voicemail."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from ringmaster import logs
from ringmaster.config import load_config
from ringmaster.yamlsource import ConfigInvalid

DEFAULT_CONFIG = "/etc/ringmaster/ringmaster.yaml"


def _load(path: str):  # type: ignore[no-untyped-def]
    try:
        return load_config(path)
    except ConfigInvalid as exc:
        for e in exc.errors:
            print(str(e), file=sys.stderr)
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    from ringmaster.acd.config import routing_warnings
    from ringmaster.config import trunk_warnings
    for w in routing_warnings(cfg.queues, cfg.agents) + trunk_warnings(cfg):
        print(f"{args.config}: warning: {w}", file=sys.stderr)
    from ringmaster.tts import voice_problems

    voices = voice_problems(cfg)
    for problem in voices:
        print(f"{args.config}: error: {problem}", file=sys.stderr)
    placeholders = cfg.placeholder_secrets()
    if placeholders:
        print(f"{args.config}: warning: {len(placeholders)} secret(s) still end in -change-me, replace them "
              f"(scripts/run-demo does for the demo): {', '.join(placeholders)}", file=sys.stderr)
    import tempfile

    from ringmaster.prompts import WORKER_FORMAT, check_files

    with tempfile.TemporaryDirectory(prefix="ringmaster-check-") as tmp:
        bad = check_files(cfg, tmp)
    for where, file, why, converted in bad:
        what = (f"converted to {WORKER_FORMAT} when ringmaster loads it" if converted
                else "cannot be converted: left out of what callers hear")
        print(f"{args.config}: {where}: {'warning' if converted else 'error'}: {file}: {why}; {what}",
              file=sys.stderr)
    unplayable = sum(1 for b in bad if not b[3])
    if voices:
        print(f"{args.config}: {len(voices)} speech voice problem(s)", file=sys.stderr)
        return 1
    if unplayable:
        print(f"{args.config}: {unplayable} prompt or hold-music file(s) cannot be played", file=sys.stderr)
        return 1
    print(f"{args.config}: OK ({len(cfg.flows)} flows, {len(cfg.entry_points)} entry points, "
          f"{cfg.workers.count} workers{f'; {len(bad)} audio file(s) to convert' if bad else ''})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    logs.configure(cfg.logging.level, cfg.logging.format)
    return asyncio.run(_run(cfg, args.config))


async def _run(cfg, config_file: str) -> int:  # type: ignore[no-untyped-def]
    from ringmaster.control import ControlServer, socket_path
    from ringmaster.controller import Controller

    log = structlog.get_logger("ringmaster")
    controller = Controller(cfg, str(Path(config_file).resolve()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await controller.start()
    except Exception as exc:
        log.error("ringmaster.start_failed", error=str(exc))
        await controller.stop()
        return 1

    async def status(req):  # type: ignore[no-untyped-def]
        return await controller.status()

    async def reload(req):  # type: ignore[no-untyped-def]
        drain = req.get("drain")
        if drain is not None and (not isinstance(drain, dict)
                                  or not all(isinstance(k, str) and isinstance(v, str) for k, v in drain.items())):
            return {"reloaded": False, "errors": ["drain: removed queue -> queue of the new config"]}
        return controller.reload(drain or None)

    async def member(req):  # type: ignore[no-untyped-def]
        return controller.member_command(str(req.get("queue", "")), str(req.get("agent", "")),
                                         str(req.get("action", "")), req.get("tier"), by="cli")

    async def schedule(req):  # type: ignore[no-untyped-def]
        state = req.get("state")
        return controller.set_schedule(str(req.get("name", "")), None if state == "auto" else state)

    async def supervise(req):  # type: ignore[no-untyped-def]
        if req.get("stop"):
            return controller.supervise_stop(str(req.get("call_id", "")))
        return controller.supervise(str(req.get("call_id", "")), str(req.get("supervisor", "")),
                                    str(req.get("mode", "")), "cli")

    async def recording(req):  # type: ignore[no-untyped-def]
        return controller.set_recording(str(req.get("call_id", "")), bool(req.get("pause")))

    async def agent(req):  # type: ignore[no-untyped-def]
        return controller.agent_command(str(req.get("agent", "")), str(req.get("action", "")), str(req.get("reason", "")))

    loop.add_signal_handler(signal.SIGHUP, lambda: controller.reload())
    api = None
    if cfg.http is not None:
        from ringmaster.api import Api

        api = Api(controller, cfg.http)
        try:
            await api.start()
        except OSError as exc:
            log.error("api.cannot_listen", listen=cfg.http.listen, error=str(exc))
            await controller.stop()
            return 1
    control = ControlServer(socket_path(cfg.paths.runtime),
                            {"status": status, "reload": reload, "schedule": schedule, "recording": recording,
                             "supervise": supervise,
                             "agent": agent, "member": member, "voicemail": controller.voicemail_command,
                             "customers": controller.customers_command})
    await control.start()
    log.info("ringmaster.running", control=str(control.path))
    await stop.wait()
    await control.stop()
    if api is not None:
        await api.stop()
    await controller.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply = _control(args, "status")
    if reply is None:
        return 3
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0 if reply.get("ok") else 1
    if not reply.get("ok"):
        print(reply.get("error"), file=sys.stderr)
        return 1
    print(f"ringmaster pid {reply['pid']}, up {reply['uptime']} s; edge {reply['edge']['listen']} "
          f"(pid {reply['edge']['pid']}, restarts {reply['edge']['restarts']})")
    print(f"calls: {reply['calls']['live']} live, {reply['calls']['total']} since start")
    print("workers:")
    for w in reply["workers"]:
        print(f"  {w['name']:<5} pid {w['pid']!s:<8} {w['sip']:<32} calls {w['calls']}  "
              f"slots {w.get('slots_used', 0)}/{w.get('slots') or '?'}  "
              f"{'alive' if w['alive'] else 'DEAD'}  edge:{w['edge']}")
    print(f"worker restarts: {reply['worker_restarts']}")
    if reply.get("queues"):
        print("queues:")
        for name, q in reply["queues"].items():
            print(f"  {name:<12} waiting {q['waiting']}  answered {q['answered']}  abandoned {q['abandoned']}")
            if q.get("members"):
                print("    members: " + ", ".join(f"{m['agent']}" + (f"/{m['tier']}" if m["tier"] != 1 else "")
                                               + ("*" if m["dynamic"] else "") for m in q["members"])
                      + ("  (* dynamic)" if any(m["dynamic"] for m in q["members"]) else ""))
            for task, reason in q.get("unroutable", {}).items():  # waiting for nobody: say why
                print(f"    unroutable {task}: {reason}")
    if reply.get("agents"):
        print("agents:")
        for name, state in reply["agents"].items():
            print(f"  {name:<12} {state}")
    if reply.get("schedules"):
        print("schedules: " + ", ".join(f"{n} {s}" for n, s in reply["schedules"].items()))
    mq = reply.get("mqtt")
    if mq:
        state = "connected" if mq["connected"] else f"DISCONNECTED ({mq['last_error'] or 'connecting'})"
        print(f"mqtt: {mq['broker']}{' (embedded)' if mq['embedded'] else ''} {state}; {mq['queued']} to send, "
              f"{mq['tasks_open']} open tasks, {mq['bad_payloads']} refused messages")
    mwi = reply.get("mwi")
    if mwi and (mwi["subscriptions"] or mwi["notifies_sent"] or mwi["notifies_failed"]):
        print(f"message-waiting: {mwi['subscriptions']} phones subscribed; {mwi['notifies_sent']} NOTIFYs sent, "
              f"{mwi['notifies_failed']} failed")
    for name, w in (reply.get("webhooks") or {}).items():
        print(f"webhook {name}: {w['pending']} pending, {w['in_flight']} in flight, {w['dead']} dead letters, "
              f"{w['delivered']} delivered since start" + (f"; last error: {w['last_error']}" if w["last_error"] else ""))
    st = reply.get("store")
    if st:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["since"])) if st.get("since") else ""
        state = "ok" if st["state"] == "ok" else f"FAILING since {since} ({st['last_error']})"
        print(f"store: {state}; {st['pending']} records pending"
              + (f" ({st['spilled']} in the spill file)" if st.get("spilled") else "")
              + f", {st['write_failures']} write failures since start")
    if reply["registrations"]:
        print("registrations:")
        for r in reply["registrations"]:
            extra = f" retry in {r['retry_in']} s" if r["retry_in"] else ""
            print(f"  {r['name']:<12} {r['state']:<12} {r['registrar']}  {r['code']} {r['reason']}{extra}")
    return 0


def _runtime_dir(config: str) -> str:
    """Where the daemon's control socket is, even when the file on disk is now broken (that is
    exactly when an admin runs `reload`, and the daemon must be the one to say what is wrong)."""
    import re

    import yaml

    from ringmaster.config import PathsConfig

    base = Path(config).resolve().parent
    runtime = PathsConfig().runtime
    try:
        data = yaml.safe_load(Path(config).read_text())
        paths = data.get("paths") if isinstance(data, dict) else None
        value = paths.get("runtime") if isinstance(paths, dict) else None
        if isinstance(value, str):
            runtime = value
    except (OSError, yaml.YAMLError):
        try:
            m = re.search(r"^\s+runtime:\s*(\S+)", Path(config).read_text(), re.M)
            if m:
                runtime = m.group(1)
        except OSError:
            pass
    return str(base / runtime)


def _control(args: argparse.Namespace, command: str, **params):  # type: ignore[no-untyped-def]
    from ringmaster.control import request, socket_path

    path = socket_path(_runtime_dir(args.config))
    try:
        return asyncio.run(request(path, command, **params))
    except (TimeoutError, OSError) as exc:
        print(f"ringmaster is not running (control socket {path}: {exc})", file=sys.stderr)
        return None


def cmd_reload(args: argparse.Namespace) -> int:
    drain = {}
    for item in args.drain or []:
        old, sep, target = item.partition("=")
        if not sep or not old or not target:
            print(f"--drain {item}: give REMOVED_QUEUE=QUEUE", file=sys.stderr)
            return 2
        drain[old] = target
    reply = _control(args, "reload", **({"drain": drain} if drain else {}))
    if reply is None:
        return 3
    if reply.get("reloaded"):
        print(f"reloaded: flows {', '.join(reply['flows'])}")
        if reply.get("changed"):
            print(f"applied: {', '.join(reply['changed'])} (calls in progress keep their queue's settings)")
        for old, target in (reply.get("drained") or {}).items():
            print(f"drained: the callers of queue {old} went to {target}")
        if reply.get("needs_restart"):
            print(f"note: changes to {', '.join(reply['needs_restart'])} take effect after a restart")
        return 0
    for e in reply.get("errors", [reply.get("error", "?")]):
        print(e, file=sys.stderr)
    print("reload rejected: nothing changed, the previous plan stays live", file=sys.stderr)
    return 1


def cmd_queue(args: argparse.Namespace) -> int:
    """members / add / remove / tier: a queue's members at run time (Asterisk's AddQueueMember,
    RemoveQueueMember, QueueMemberPenalty), kept across restarts."""
    if args.action == "members":
        reply = _control(args, "status")
        if reply is None:
            return 3
        q = (reply.get("queues") or {}).get(args.queue)
        if q is None:
            print(f"unknown queue {args.queue!r}", file=sys.stderr)
            return 1
        for m in q.get("members", []):
            print(f"{m['agent']:<16} tier {m['tier']}{'  dynamic' if m['dynamic'] else ''}")
        return 0
    if args.agent is None:
        print(f"queue {args.action}: give the agent", file=sys.stderr)
        return 2
    if args.action == "tier" and args.tier is None:
        print("queue tier: give --tier N (1-9)", file=sys.stderr)
        return 2
    return _command(args, "member", lambda r: f"queue {r['queue']}: " + ", ".join(
        f"{m['agent']} (tier {m['tier']}{', dynamic' if m['dynamic'] else ''})" for m in r["members"]),
        queue=args.queue, agent=args.agent, action=args.action, tier=args.tier)


def _command(args: argparse.Namespace, command: str, show: Callable[[dict[str, Any]], str], **params: Any) -> int:
    """Send a control command; print its result (exit 0), its error (1), or that nobody runs (3)."""
    reply = _control(args, command, **params)
    if reply is None:
        return 3
    if not reply.get("ok") or reply.get("error"):
        print(reply.get("error"), file=sys.stderr)
        return 1
    print(show(reply))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from ringmaster.acd.model import AgentAction

    action = (AgentAction.LOGIN if args.login else AgentAction.LOGOUT if args.logout
              else AgentAction.PAUSE if args.pause is not None else AgentAction.UNPAUSE)
    return _command(args, "agent", lambda r: f"agent {r['agent']}: {r['state']}",
                    agent=args.agent, action=action, reason=args.pause or "")


def cmd_recording(args: argparse.Namespace) -> int:
    return _command(args, "recording", lambda r: f"call {r['call_id']}: {r['recording']}",
                    call_id=args.call_id, pause=bool(args.pause))


def cmd_supervise(args: argparse.Namespace) -> int:
    if args.stop:
        return _command(args, "supervise", lambda r: f"call {r['call_id']}: {r['supervisor']} left",
                        call_id=args.call_id, stop=True)
    if not args.mode or not args.supervisor:
        print("--mode and --supervisor (or --stop)", file=sys.stderr)
        return 2
    return _command(args, "supervise",
                    lambda r: f"call {r['call_id']}: {r['supervisor']} {r['mode']} ({r['state']})",
                    call_id=args.call_id, supervisor=args.supervisor, mode=args.mode)


def cmd_schedule(args: argparse.Namespace) -> int:
    state = "open" if args.open else "closed" if args.closed else "auto"
    return _command(args, "schedule", lambda r: f"schedule {r['schedule']}: {r['state']}", name=args.name, state=state)


def cmd_voicemail(args: argparse.Namespace) -> int:
    """list / play (download the WAV) / heard / new / delete, through the running daemon."""
    action = args.action
    if action == "list":
        params: dict[str, Any] = {"box": args.box, "state": args.state}
        reply = _control(args, "voicemail", action="list", **{k: v for k, v in params.items() if v is not None})
        if reply is None:
            return 3
        if not reply.get("ok") or reply.get("error"):
            print(reply.get("error"), file=sys.stderr)
            return 1
        msgs = reply["messages"]
        if args.format == "json":
            print(json.dumps(msgs, indent=2))
            return 0
        print(f"{'id':>6}  {'box':<16} {'state':<6} {'left at':<19} {'seconds':>7}  caller")
        for m in msgs:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["started_at"]))
            secs = f"{m['seconds']:.1f}" if m["seconds"] is not None else "-"
            print(f"{m['id']:>6}  {m['box']:<16} {m['state']:<6} {at:<19} {secs:>7}  {m['caller']}")
        return 0
    if args.message is None:
        print(f"voicemail {action}: give the message id (`ringmaster voicemail list` shows them)", file=sys.stderr)
        return 2
    if action == "play":
        reply = _control(args, "voicemail", action="get", message=args.message)
        if reply is None:
            return 3
        if not reply.get("ok") or reply.get("error"):
            print(reply.get("error"), file=sys.stderr)
            return 1
        out = args.output or f"voicemail-{args.message}.wav"
        try:
            if out == "-":
                sys.stdout.buffer.write(Path(reply["path"]).read_bytes())
                return 0
            shutil.copyfile(reply["path"], out)
        except OSError as exc:
            print(f"cannot copy {reply['path']} to {out}: {exc.strerror}", file=sys.stderr)
            return 1
        m = reply["message"]
        print(f"wrote {out} (message {m['id']}, box {m['box']}, caller {m['caller']}, {m['seconds']} s)")
        return 0
    return _command(args, "voicemail", lambda r: f"message {r['message']['id']} ({r['message']['box']}): "
                                                 f"{'deleted' if r.get('deleted') else r['message']['state']}",
                    action=action, message=args.message)


def _plan(path: str):  # type: ignore[no-untyped-def]
    from ringmaster.flows import DialPlan

    cfg = _load(path)
    return None if cfg is None else DialPlan(cfg)


def cmd_simulate(args: argparse.Namespace) -> int:
    from datetime import datetime

    from ringmaster.flows.simulate import simulate

    plan = _plan(args.config)
    if plan is None:
        return 1
    try:
        at = datetime.fromisoformat(args.at) if args.at else None
    except ValueError:
        print(f"--at: expected an ISO time such as 2026-11-23T20:00+01:00, got {args.at!r}", file=sys.stderr)
        return 2
    if at is not None and at.tzinfo is None:
        at = at.astimezone()  # a local wall-clock time: the machine's zone
    inputs = args.digits.split(",") if args.digits else []
    overrides = dict(o.split("=", 1) for o in args.override or [])
    from ringmaster.flows.actions import HttpAnswered
    from ringmaster.flows.simulate import canned_answer

    answers: dict[str, list[HttpAnswered]] = {}
    variables: dict[str, str] = {}
    if args.called:
        route = plan.route(args.called)
        if route.flow is not None and route.flow.name == args.flow:
            variables.update(route.variables)
    try:
        for item in args.answer or []:
            name, sep, text = item.partition("=")
            if not sep or name not in plan.cfg.http_endpoints:
                raise ValueError(f"--answer {item!r}: expected ENDPOINT=ANSWER with an endpoint of http_endpoints "
                                 f"({', '.join(sorted(plan.cfg.http_endpoints)) or 'none defined'})")
            answers.setdefault(name, []).append(canned_answer(text))
        for item in args.set or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ValueError(f"--set {item!r}: expected NAME=VALUE")
            variables[name] = value
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        sim = simulate(plan, args.flow, inputs, caller=args.caller, called=args.called, at=at,
                       overrides=overrides, transfer_result=args.transfer, answers=answers, variables=variables)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    print("\n".join(sim.lines))
    print(f"variables: {json.dumps(sim.variables, sort_keys=True)}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    import subprocess

    from ringmaster.flows.graph import dot, mermaid

    plan = _plan(args.config)
    if plan is None:
        return 1
    if args.flow not in plan.flows:
        print(f"unknown flow {args.flow!r}; flows: {', '.join(sorted(plan.flows))}", file=sys.stderr)
        return 2
    text = mermaid(plan, args.flow)
    if not args.output:
        print(text, end="")
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".mmd").write_text(text)
    out.with_suffix(".dot").write_text(dot(plan, args.flow))
    written = [str(out.with_suffix(".mmd")), str(out.with_suffix(".dot"))]
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg", str(out.with_suffix(".dot")), "-o", str(out.with_suffix(".svg"))], check=True)
        written.append(str(out.with_suffix(".svg")))
    else:
        print("graphviz (dot) is not installed: no SVG (apt-get install graphviz)", file=sys.stderr)
    print("wrote " + ", ".join(written))
    return 0


def _reports(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(config, read-only connection to its store), or (None, None) after saying why."""
    from ringmaster.reports import reads

    cfg = _load(args.config)
    if cfg is None:
        return None, None
    try:
        return cfg, reads.connect(cfg.storage.path)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return None, None


def _interval(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """--since/--until as epoch seconds; ValueError with the reason for a bad time."""
    from ringmaster.reports import parse_time

    return (parse_time(args.since) if args.since else None, parse_time(args.until) if args.until else None)


def cmd_calls(args: argparse.Namespace) -> int:
    from ringmaster.reports import CallFilter, reads
    from ringmaster.reports.render import CALL_COLUMNS, call_view, render

    cfg, con = _reports(args)
    if con is None:
        return 1
    try:
        since, until = _interval(args)
        f = CallFilter(since=since, until=until, queue=args.queue, agent=args.agent, caller=args.caller,
                       disposition=args.disposition, min_wait=args.min_wait, limit=args.limit,
                       direction=args.direction)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.follow:
        seen = 0
        try:
            for batch in reads.follow(con, f):
                rows = [call_view(r) for r in batch]
                print(render(rows, args.format, CALL_COLUMNS, header=seen == 0 and args.format != "table"),
                      end="", flush=True)
                seen += len(rows)
        except KeyboardInterrupt:
            return 0
    rows = [call_view(r) for r in reads.calls(con, f)]
    print(render(rows, args.format, CALL_COLUMNS), end="")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from ringmaster.reports import EventFilter, reads

    cfg, con = _reports(args)
    if con is None:
        return 1
    try:
        since, until = _interval(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    for line in reads.queue_log_lines(con, EventFilter(since, until, args.queue)):
        print(line)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from ringmaster.reports import EventFilter, TaskFilter, reads
    from ringmaster.reports.render import TASK_COLUMNS, render

    cfg, con = _reports(args)
    if con is None:
        return 1
    try:
        since, until = _interval(args)
        f = TaskFilter(since=since, until=until, queue=args.queue, agent=args.agent, channel=args.channel,
                       state=args.state, limit=args.limit)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.log:
        for line in reads.queue_log_lines(con, EventFilter(since, until, args.queue), table="task_log"):
            print(line)
        return 0
    print(render(reads.tasks(con, f), args.format, TASK_COLUMNS), end="")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ringmaster.reports import parse_time, reads
    from ringmaster.reports import stats as st

    cfg, con = _reports(args)
    if con is None:
        return 1
    try:
        since = parse_time(args.since) if args.since else parse_time("24h")
        until = parse_time(args.until) if args.until else time.time()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    queues, agents = reads.stats(con, since, until, args.channel,
                                 {n: q.service_level for n, q in cfg.queues.items()},
                                 {n: q.wrapup for n, q in cfg.queues.items()}, args.short_abandon)
    outbound = reads.outbound_stats(con, since, until) if args.channel == "voice" else []
    if args.format == "json":
        print(json.dumps(st.as_dicts(queues, agents) | {"outbound": outbound}, indent=2))
        return 0

    def fmt(v: object) -> str:
        return "-" if v is None else str(v)

    print(f"{'queue':<12} {'offered':>7} {'answered':>8} {'abandoned':>9} {'short':>5} {'timeout':>7} "
          f"{'SL%':>6} {'ASA':>6} {'AHT':>6} {'longest':>7} {'holds':>5} {'avg hold':>8}")
    for q in queues:
        print(f"{q.queue:<12} {q.offered:>7} {q.answered:>8} {q.abandoned:>9} {q.abandoned_short:>5} {q.timeout:>7} "
              f"{fmt(q.service_level_pct):>6} {fmt(q.asa):>6} {fmt(q.aht):>6} {q.longest_wait:>7} "
              f"{q.holds:>5} {fmt(q.avg_hold):>8}")
    if any(q.callbacks_requested or q.callbacks_completed or q.callbacks_failed for q in queues):
        print()
        print(f"{'queue':<12} {'callbacks':>9} {'completed':>9} {'failed':>6} {'cancelled':>9} {'time to cb':>10}")
        for q in queues:
            print(f"{q.queue:<12} {q.callbacks_requested:>9} {q.callbacks_completed:>9} {q.callbacks_failed:>6} "
                  f"{q.callbacks_cancelled:>9} {fmt(q.avg_time_to_callback):>10}")
    print()
    print(f"{'agent':<12} {'answered':>8} {'no-answer':>9} {'talk s':>7} {'login s':>8} {'occupancy%':>10} "
          f"{'holds':>5} {'avg hold':>8}  paused s")
    for a in agents:
        paused = ", ".join(f"{k} {v}" for k, v in sorted(a.pause_seconds.items())) or "-"
        print(f"{a.agent:<12} {a.answered:>8} {a.no_answer:>9} {a.talk_seconds:>7} {a.login_seconds:>8} "
              f"{fmt(a.occupancy_pct):>10} {a.holds:>5} {fmt(a.avg_hold):>8}  {paused}")
    if outbound:  # calls the agents placed themselves (docs/outbound.md)
        print()
        print(f"{'outbound':<12} {'placed':>6} {'answered':>8} {'no-answer':>9} {'busy':>4} {'failed':>6} "
              f"{'refused':>7} {'talk s':>7}")
        for o in outbound:
            print(f"{o['agent']:<12} {o['placed']:>6} {o['answered']:>8} {o['no_answer']:>9} {o['busy']:>4} "
                  f"{o['failed']:>6} {o['refused']:>7} {o['talk_seconds']:>7}")
    return 0


def cmd_customers(args: argparse.Namespace) -> int:
    """show KEY: the customer's keys and history, read from the store's file; merge FROM INTO:
    through the running daemon (the store's one writer)."""
    if args.action == "merge":
        if args.into is None:
            print("customers merge FROM INTO: give both keys", file=sys.stderr)
            return 2
        return _command(args, "customers", lambda r: f"merged customer {r['merged']} ({r['from_key']}) into "
                                                      f"{r['into']} ({r['into_key']})"
                                                      + ("" if r.get("stored", True) else "; the store is failing: "
                                                         "the merge is written when it recovers"),
                        action="merge", **{"from": args.key, "into": args.into})
    from ringmaster.customers import KeyRefused, parse_key
    from ringmaster.reports import customers as reads

    cfg, con = _reports(args)
    if con is None:
        return 1
    if cfg.customers is None:
        print(f"{args.config}: no customers section", file=sys.stderr)
        return 1
    try:
        key, _ = parse_key(args.key, cfg.customers.default_country)
    except KeyRefused as exc:
        print(f"key: {exc}", file=sys.stderr)
        return 2
    found = reads.customer(con, key, args.limit)
    if found is None:
        print(f"no customer has the key {key!r}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(found, indent=2))
        return 0
    print(f"customer {found['id']}" + (f"  {found['name']}" if found["name"] else "")
          + (f"  tier {found['tier']}" if found["tier"] else ""))
    print("keys: " + ", ".join(f"{k['key']} ({k['kind']})" for k in found["keys"]))
    print(f"{'at':<19} {'channel':<9} {'queue':<12} {'agent':<10} {'disposition':<11} {'wait':>6} {'talk':>6}  "
          f"{'code':<12} notes")

    def secs(v: object) -> str:
        return "-" if v is None else f"{float(v):.0f}"  # type: ignore[arg-type]

    for h in found["history"]:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["at"]))
        notes = (h["notes"] or "").replace("\n", " ")
        print(f"{at:<19} {h['channel']:<9} {h['queue'] or '-':<12} {h['agent'] or '-':<10} "
              f"{h['disposition'] or '-':<11} {secs(h['wait']):>6} {secs(h['talk']):>6}  {h['code'] or '-':<12} "
              f"{notes[:60]}".rstrip())
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ringmaster.schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def _version() -> str:
    """The installed package's version (pyproject.toml), or "unknown" when run from a bare tree."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ringmaster")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand with its options (each with help text)."""
    from ringmaster.reports.filters import TASK_STATES
    from ringmaster.store import DISPOSITIONS

    ap = argparse.ArgumentParser(prog="ringmaster", description="SIP ACD and IVR server")
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("run", cmd_run, "run the daemon"),
                            ("check", cmd_check, "validate a config file"),
                            ("status", cmd_status, "show a running daemon's state"),
                            ("reload", cmd_reload, "validate the config file and switch a running daemon to its plan"),
                            ("schedule", cmd_schedule, "force a schedule open or closed, or back to its hours"),
                            ("recording", cmd_recording, "pause or resume a live call's recording"),
                            ("agent", cmd_agent, "log an agent in or out, pause (with a reason) or unpause"),
                            ("supervise", cmd_supervise, "listen, whisper or barge on a live queue call (rings the "
                                                         "supervisor's phone), or change the mode"),
                            ("queue", cmd_queue, "a queue's members at run time: list, add, remove, set the tier "
                                                 "(kept across restarts)"),
                            ("simulate", cmd_simulate, "walk a flow without SIP and print each step"),
                            ("graph", cmd_graph, "draw a flow (Mermaid; SVG with Graphviz)"),
                            ("schema", cmd_schema, "print the JSON Schema of the config for editors"),
                            ("calls", cmd_calls, "list and filter the call log (table, csv, json; --follow)"),
                            ("events", cmd_events, "export queue events in Asterisk queue_log format"),
                            ("tasks", cmd_tasks, "list and filter chat/email tasks, or export their events (--log)"),
                            ("stats", cmd_stats, "queue and agent figures over an interval (from the stored events)"),
                            ("voicemail", cmd_voicemail, "list voicemail messages, play (download) one, mark it heard or new, delete it"),
                            ("customers", cmd_customers, "show a customer's keys and history, or merge two customers")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help="the YAML config (default: %(default)s; the demo's: config/demo.yaml)")
        sp.set_defaults(fn=fn)
        if name == "check":
            sp.add_argument("file", nargs="?", help="config file (overrides -c)")
        if name == "status":
            sp.add_argument("--json", action="store_true", help="print the state as JSON (for scripts)")
        if name == "reload":
            sp.add_argument("--drain", action="append", metavar="QUEUE=TARGET",
                            help="a queue the new config removes while callers wait in it: they go to TARGET "
                                 "(repeatable); without it such a reload is refused")
        if name == "queue":
            sp.add_argument("action", choices=["members", "add", "remove", "tier"],
                            help="members: list them (dynamic: changed at run time); add (AddQueueMember), "
                                 "remove (RemoveQueueMember), tier (QueueMemberPenalty)")
            sp.add_argument("queue", help="the queue's name in the config's queues")
            sp.add_argument("agent", nargs="?", help="the agent (add, remove, tier)")
            sp.add_argument("--tier", type=int, help="1-9, 1 rings first (Asterisk's penalty); add: default 1")
        if name == "agent":
            sp.add_argument("agent", help="the agent's name in the config's agents")
            g = sp.add_mutually_exclusive_group(required=True)
            g.add_argument("--login", action="store_true", help="log the agent in to its queues")
            g.add_argument("--logout", action="store_true", help="log the agent out (its offers are cancelled)")
            g.add_argument("--pause", metavar="REASON", help="pause with a reason (lunch, training, ...)")
            g.add_argument("--unpause", action="store_true", help="end a pause (e.g. an auto-pause after no-answers)")
        if name == "recording":
            sp.add_argument("call_id", help="a live call's id (ringmaster status lists them)")
            g = sp.add_mutually_exclusive_group(required=True)
            g.add_argument("--pause", action="store_true", help="e.g. while the caller reads a card number")
            g.add_argument("--resume", action="store_true", help="record again")
        if name == "supervise":
            sp.add_argument("call_id", help="a live queue call's id (ringmaster status lists them)")
            sp.add_argument("--stop", action="store_true", help="end the call's supervision (her leg is hung up)")
            sp.add_argument("--mode", choices=["listen", "whisper", "barge"],
                            help="listen: hear both, nobody hears you; whisper: only the agent hears you; "
                                 "barge: a three-way call")
            sp.add_argument("--supervisor",
                            help="who listens: a name of supervision.supervisors (that agent's phone rings)")
        if name == "simulate":
            sp.add_argument("flow", help="a flow's name in the config's flows")
            sp.add_argument("--digits", default="", help="input at each wait, comma-separated: 1,9,1234#  (empty = silence)")
            sp.add_argument("--caller", default="", help="caller ID")
            sp.add_argument("--called", default="", help="called number")
            sp.add_argument("--at", default="", help="time of the call, ISO 8601 (default now)")
            sp.add_argument("--override", action="append", help="schedule=open|closed (repeatable)")
            sp.add_argument("--transfer", default="completed", help="result of transfers (completed, busy, no_answer)")
            sp.add_argument("--answer", action="append", metavar="ENDPOINT=ANSWER",
                            help="canned answer of an http endpoint: a JSON object, timeout, error or a status "
                                 "such as 500 (repeatable; used in turn)")
            sp.add_argument("--set", action="append", metavar="NAME=VALUE",
                            help="a variable the call starts with, e.g. language=da (repeatable; the entry "
                                 "point's variables apply when --called routes to the flow)")
        if name == "stats":
            sp.add_argument("--since", help="ISO time, or an age: 15m, 2h, 7d (default 24h)")
            sp.add_argument("--until", help="ISO time, or an age (default now)")
            sp.add_argument("--short-abandon", type=float, default=5.0, help="seconds: quicker abandons leave the SL base")
            sp.add_argument("--channel", choices=["voice", "chat", "email"], default="voice",
                            help="calls (default), or chat/email tasks (abandoned = cancelled while waiting)")
            sp.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
        if name == "tasks":
            sp.add_argument("--agent", help="only tasks this agent took")
            sp.add_argument("--channel", choices=["chat", "email"], help="only this channel")
            sp.add_argument("--state", choices=TASK_STATES, help="only tasks in this state")
            sp.add_argument("--limit", type=int, help="at most this many rows")
            sp.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default: table)")
            sp.add_argument("--log", action="store_true", help="the task events in Asterisk queue_log format")
        if name in ("calls", "events", "tasks"):
            sp.add_argument("--since", help="ISO time, or an age: 15m, 2h, 7d")
            sp.add_argument("--until", help="ISO time, or an age: 15m, 2h, 7d")
            sp.add_argument("--queue", help="only this queue")
        if name == "calls":
            sp.add_argument("--agent", help="only calls this agent answered")
            sp.add_argument("--caller", help="caller ID contains this")
            sp.add_argument("--disposition", choices=DISPOSITIONS,
                            help="only calls that ended this way")
            sp.add_argument("--min-wait", type=float, help="waited at least this many seconds in a queue")
            sp.add_argument("--direction", choices=["inbound", "outbound"],
                            help="outbound: only calls agents placed (docs/outbound.md)")
            sp.add_argument("--limit", type=int, help="at most this many rows")
            sp.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default: table)")
            sp.add_argument("--follow", action="store_true", help="keep printing calls as they end")
        if name == "graph":
            sp.add_argument("flow", help="a flow's name in the config's flows")
            sp.add_argument("-o", "--output", help="write OUTPUT.mmd, OUTPUT.dot (and OUTPUT.svg with graphviz)")
        if name == "voicemail":
            sp.add_argument("action", nargs="?", default="list", choices=["list", "play", "heard", "new", "delete"],
                            help="list (default); play: write the message's WAV to a file; heard / new: mark it; "
                                 "delete: remove its audio")
            sp.add_argument("message", nargs="?", type=int, help="the message id (play, heard, new, delete)")
            sp.add_argument("--box", help="list: only this box")
            sp.add_argument("--state", choices=["new", "heard"], help="list: only new or only heard messages")
            sp.add_argument("-o", "--output", help="play: the file to write (default voicemail-ID.wav; - for stdout)")
            sp.add_argument("--format", choices=["table", "json"], default="table", help="list: output format (default: table)")
        if name == "customers":
            sp.add_argument("action", choices=["show", "merge"],
                            help="show: the customer's keys and history; merge: move every key of KEY's "
                                 "customer to INTO's (admin; through the running daemon)")
            sp.add_argument("key", help="+E.164 or tel:NUMBER, an email address, or an id")
            sp.add_argument("into", nargs="?", help="merge: the key of the customer that stays")
            sp.add_argument("--limit", type=int, help="show: at most this many interactions")
            sp.add_argument("--format", choices=["table", "json"], default="table", help="show: output format")
        if name == "schedule":
            sp.add_argument("name", help="a schedule's name in the config's schedules")
            g = sp.add_mutually_exclusive_group(required=True)
            g.add_argument("--open", action="store_true", help="open whatever the hours say (kept across restarts)")
            g.add_argument("--closed", action="store_true", help="closed whatever the hours say (kept across restarts)")
            g.add_argument("--auto", action="store_true", help="follow the opening hours again")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "file", None):
        args.config = args.file
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
