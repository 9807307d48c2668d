"""The Kamailio SIP edge: config rendered from the YAML, run as a supervised child process.

The outside world sees only the edge. It spreads inbound INVITEs over the worker pool by
call load (dispatcher algorithm 10, maxload per worker, OPTIONS probing), answers 503 when
every worker is full, accepts calls only from trusted trunks, and silences scanners and
flooding sources.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from ringmaster import runas
from ringmaster.child import SupervisedChild, clear_leftover, die_with_parent
from ringmaster.config import Config, Trunk
from ringmaster.edge import policy
from ringmaster.workerproc import WorkerSpec

log = structlog.get_logger("ringmaster.edge")
SCHEMA_DIR = "/usr/share/kamailio/db_sqlite"  # Debian's kamailio-sqlite-modules


def events_port(cfg: Config) -> int:
    return cfg.sip.events_port or cfg.sip.port + 2


def location_db(cfg: Config) -> Path:
    """The SQLite file of the registrar's locations: beside the store, not in the runtime dir
    (which may be a tmpfs), so registrations outlive a reboot of the edge."""
    store_dir = Path(cfg.storage.path).resolve().parent
    if cfg.run_as:  # the edge's user writes this file and its journal: a directory of its own
        return store_dir / "edge" / "edge-registrations.sqlite"
    return store_dir / "edge-registrations.sqlite"


def ensure_location_db(path: Path, schema_dir: str = SCHEMA_DIR) -> None:
    """Create Kamailio's version and location tables (usrloc schema 9) unless present."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "location" not in have:
            for name in ("standard-create.sql", "usrloc-create.sql"):
                if name == "standard-create.sql" and "version" in have:
                    continue
                con.executescript((Path(schema_dir) / name).read_text())
            con.commit()
    finally:
        con.close()


def subscriber_table(cfg: Config) -> str:
    """db_text subscriber table of the agents' softphones, HA1 = MD5(user:realm:password)."""
    import hashlib

    realm = cfg.sip.host
    rows = ["id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string)"]
    for i, agent in enumerate(sorted(cfg.agents.items()), start=1):
        phone = agent[1].softphone
        if phone is None:
            continue
        ha1 = hashlib.md5(f"{phone.username}:{realm}:{phone.password}".encode()).hexdigest()
        ha1b = hashlib.md5(f"{phone.username}@{realm}:{realm}:{phone.password}".encode()).hexdigest()
        rows.append(f"{i}:{phone.username}:{realm}:x:{ha1}:{ha1b}")
    return "\n".join(rows) + "\n"


def _trunk_auth(trunks: Sequence[Trunk]) -> str:
    """The body of failure_route[TRUNKAUTH]: answer a trunk's own 401/407 once per call leg
    with its credentials (uac_auth builds the Authorization / Proxy-Authorization, RFC 3261
    22.2-22.3; the dialog module's track_cseq_updates then shifts the CSeq of the dialog's
    later requests, which the retried INVITE raised by one). Only a challenge whose reply came
    from that trunk's address is answered with its credentials: an agent's phone that
    challenges must not get a digest made with a trunk's password.

    Armed on a leg to one mobile agent, an outbound call's customer leg and an external
    transfer target's leg: Debian 12's
    Kamailio 5.6.3 refuses uac_auth in a branch-failure route (allowed from 5.7, kamailio
    commit 76df539), and a failure_route runs once every branch of a ring-all fork has ended,
    too late for the challenged one."""
    trunks = [t for t in trunks if t.username]
    if not trunks:
        return "\t# (no trunk credentials configured: a challenge ends the leg)\n\treturn;"
    lines = ['\tif (t_is_canceled() || !t_check_status("401|407")) return;', '\t$var(trunk) = "";']
    for trunk in trunks:
        host, port = trunk.address.rsplit(":", 1)
        lines += [
            f'\tif (!($T_rpl($si) != "{host}" || $T_rpl($sp) != {port})) {{',
            f'\t\t$var(trunk) = "sip:{trunk.address}";',
            f'\t\t$avp(auser) = "{trunk.username}";',
            f'\t\t$avp(apass) = "{trunk.password}";',
            f'\t\t$avp(arealm) = "{trunk.realm}";',
            '\t}',
        ]
    lines += [
        '\tif ($var(trunk) == "") return;',
        '\tif ($sht(trunkauth=>$ci:$rU) != $null) {',
        '\t\txlog("L_WARN", "edge.trunk_auth_refused call=$ci status=$T_reply_code\\n");',
        '\t\treturn;',
        '\t}',
        '\t$sht(trunkauth=>$ci:$rU) = 1;  # once per branch: a trunk that challenges again refused us',
        '\tif (!uac_auth()) {',
        '\t\txlog("L_WARN", "edge.trunk_auth_failed call=$ci\\n");',
        '\t\treturn;',
        '\t}',
        '\t$du = $var(trunk);',
        '\t$var(cnt) = $shtinc(edgestats=>trunk_auth);',
        '\tt_relay();',
    ]
    return "\n".join(lines)


def _challenged_trunks(cfg: Config) -> list[Trunk]:
    """The trunks whose challenges the edge answers: the mobile route and every trunk of
    sip.trunks (each once), so an outbound rule a reload adds finds its trunk's credentials
    ready (sip itself changes at a restart)."""
    out: list[Trunk] = []
    for t in [cfg.sip.mobile_route, *cfg.sip.trunks.values()]:
        if t is not None and t not in out:
            out.append(t)
    return out


def render(cfg: Config, workers: Sequence[WorkerSpec], config_file: str = "") -> tuple[str, str]:
    """The kamailio.cfg text and the dispatcher.list text for this config."""
    sip = cfg.sip
    rundir = str(Path(cfg.paths.runtime).resolve() / "edge")
    listen = "\n".join(f"listen={t}:{sip.host}:{sip.port}" for t in sip.transports)
    trusted = []
    for peer in sip.trusted:
        cond = f'$si == "{peer.host}"'
        if peer.port is not None:
            cond += f" && $sp == {peer.port}"
        trusted.append(f"\tif ({cond}) return 1;   # {peer.name}")
    sec = sip.security
    trunk = sip.mobile_route
    scanners = "|".join(re.escape(ua) for ua in sip.security.scanner_user_agents) or "^$"
    values = {
        "CONFIG_FILE": config_file or "(memory)",
        "DEBUG": "3" if cfg.logging.level == "debug" else "1",
        "LISTEN": listen,
        "EDGE_HOST": sip.host,
        "EDGE_PORT": str(sip.port),
        "CHILDREN": "4",
        "RUNDIR": rundir,
        "MODULES": sip.kamailio_modules,
        "FLOOD_WINDOW": str(sip.security.flood_window),
        "FLOOD_REQUESTS": str(sip.security.flood_requests),
        "BAN_SECONDS": str(sip.security.ban_seconds),
        "TRUSTED": "\n".join(trusted) or "\t# (no trusted peers configured: no inbound calls)",
        # Kamailio strings: escape backslashes and quotes of the regex
        "SCANNERS": scanners.replace("\\", "\\\\").replace('"', '\\"'),
        "EVENTS": f"{sip.host}:{events_port(cfg)}",
        "LOCATION_DB": str(location_db(cfg)),
        "MOBILE_ROUTE": (f'\t\tif ($sht(agents=>m:$rU) != $null) {{ $du = "sip:{trunk.address}"; '
                         f't_on_failure("TRUNKAUTH"); route(RELAY); }}'
                         if trunk else "\t\t# (no mobile_trunk configured: mobile agents cannot be reached)"),
        "MOBILE_BRANCH": (f'\t\t}} else if ($sht(agents=>m:$var(u)) != $null) {{\n'
                          f'\t\t\tappend_branch("sip:$var(u)@{trunk.address}");\n'
                          f'\t\t\t$var(found) = $var(found) + 1;'
                          if trunk else "\t\t# (no mobile_trunk: mobile agents are not rung)"),
        "TRUNK_AUTH": _trunk_auth(_challenged_trunks(cfg)),
        "MAX_MESSAGE": str(sec.max_message_bytes),
        "MAX_VIAS": str(sec.max_via_headers),
        # a well-formed request has a line per header and per SDP line: 200 is far above any
        "MAX_LINES": "200",
        # raw control bytes in a POSIX bracket (Kamailio strings have no \x escapes); TAB, LF
        # and CR are the only ones SIP allows (RFC 3261 25.1); NUL is checked apart
        "CONTROL_CLASS": "[" + "\x01-\x08\x0b\x0c\x0e-\x1f\x7f" + "]",
        "AUTH_SOURCE_LIMIT": str(sec.auth_failures_per_source),
        "AUTH_USER_LIMIT": str(sec.auth_failures_per_user),
        "AUTH_BAN": str(sec.auth_ban_seconds),
        "AUTH_BAN_MAX": str(max(sec.auth_ban_max_seconds, sec.auth_ban_seconds)),
        # a failed INVITE is retried on other workers, at most this many times
        "FAILOVERS": str(max(1, min(3, len(workers) - 1))),
        **webrtc_values(cfg),
    }
    text = resources.files("ringmaster.edge").joinpath("kamailio.cfg.tmpl").read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    leftover = re.findall(r"@@[A-Z_]+@@", text)
    if leftover:
        raise RuntimeError(f"edge template has unfilled markers: {leftover}")
    maxload = cfg.workers.max_inbound_calls
    ds = "".join(f"1 sip:{w.sip_host}:{w.sip_port} 8 0 {_ds_attrs(w, maxload)}\n" for w in workers)
    return text, ds


def webrtc_values(cfg: Config) -> dict[str, str]:
    """The template's browser-phone markers: WITH_WEBRTC defined, the WSS address, rtpengine's
    control port and the WebSocket origins allowed (the desk's page), when sip.webrtc is set."""
    w = cfg.sip.webrtc
    if w is None:
        return {"WEBRTC_DEFINE": "# (no sip.webrtc: no browser phones)", "WSS_HOST": "", "WSS_PORT": "0",
                "NG_PORT": "0", "ORIGIN_CHECK": "0"}
    desk = cfg.http.desk if cfg.http is not None else None
    origins = [f"https://{desk.listen}"] if desk is not None else []
    if desk is not None and desk.host == "127.0.0.1":
        origins.append(f"https://localhost:{desk.port}")
    check = " && ".join(f'$hdr(Origin) != "{o}"' for o in origins) or "1"
    return {"WEBRTC_DEFINE": "#!define WITH_WEBRTC", "WSS_HOST": w.host, "WSS_PORT": str(w.port),
            "NG_PORT": str(w.ng_port), "ORIGIN_CHECK": check}


def tls_cfg(rundir: Path) -> str:
    """Kamailio's tls.cfg for the WSS port: the certificate and key copied into the edge's
    runtime dir, TLS 1.2 or later, no client certificates (browsers send none; agents
    authenticate with digest)."""
    return ("# generated by ringmaster\n[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            f"require_certificate = no\nprivate_key = {rundir / 'wss-key.pem'}\n"
            f"certificate = {rundir / 'wss-cert.pem'}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")


def _ds_attrs(worker: WorkerSpec, maxload: int) -> str:
    return f"duid={worker.name};maxload={maxload}"


class Edge(SupervisedChild):
    """Runs Kamailio in the foreground as a child, restarts it if it dies."""

    name = "edge"

    def __init__(self, cfg: Config, workers: Sequence[WorkerSpec], config_file: str = ""):
        super().__init__()
        self.cfg = cfg
        self.workers = list(workers)
        self.config_file = config_file
        self.rundir = Path(cfg.paths.runtime).resolve() / "edge"
        self.cfg_path = self.rundir / "kamailio.cfg"
        self.rpc_given_up = 0  # RPCs whose late answer Kamailio will fail to deliver (logged as such)

    def write_files(self) -> Path:
        self.rundir.mkdir(parents=True, exist_ok=True)
        text, ds = render(self.cfg, self.workers, self.config_file)
        cfg_path = self.rundir / "kamailio.cfg"
        cfg_path.write_text(text)
        os.chmod(cfg_path, 0o600)  # it holds the trunks' passwords (sip.trunks)
        (self.rundir / "dispatcher.list").write_text(ds)
        db = self.rundir / "dbtext"
        db.mkdir(exist_ok=True)
        versions = "".join(f"edge_{name}:{policy.TABLE_VERSION}\n" for name in policy.TABLES)
        (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\nlocation:9\n" + versions)
        policy.write_tables(db, policy.EdgePolicy.from_config(self.cfg))
        ensure_location_db(location_db(self.cfg))
        w = self.cfg.sip.webrtc
        if w is not None and w.certificate and w.key:
            # copies the edge's user may read (run_as: the key itself may be root's, mode 0600)
            for src, name in ((w.certificate, "wss-cert.pem"), (w.key, "wss-key.pem")):
                try:
                    data = Path(src).read_bytes()
                except OSError as exc:
                    raise RuntimeError(f"sip.webrtc: cannot read {src}: {exc.strerror}") from None
                fd = os.open(self.rundir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            (self.rundir / "tls.cfg").write_text(tls_cfg(self.rundir))
        sub = db / "subscriber"
        sub.write_text(subscriber_table(self.cfg))
        os.chmod(sub, 0o600)  # HA1 hashes: as secret as the passwords for this realm
        run_as = runas.resolve(self.cfg.run_as)
        if run_as is not None:  # Kamailio's children read these after dropping to the user
            run_as.check_reachable(self.rundir, "the edge's runtime dir")
            run_as.check_reachable(location_db(self.cfg), "the edge's registrations file")
            run_as.give(self.rundir, location_db(self.cfg).parent)
        return cfg_path

    async def check(self) -> None:
        """`kamailio -c`: syntax-check the generated config before it goes live."""
        cfg_path = self.write_files()
        proc = await asyncio.create_subprocess_exec(
            self.cfg.sip.kamailio, "-c", "-f", str(cfg_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            errors = [ln for ln in out.decode(errors="replace").splitlines() if "ERROR" in ln or "CRITICAL" in ln]
            raise RuntimeError("generated edge config rejected by kamailio -c:\n" + "\n".join(errors[-10:]))

    async def start(self) -> None:
        self.cfg_path = self.write_files()
        await self._start_supervised()

    async def _spawn(self) -> None:
        cfg_path = self.cfg_path
        await clear_leftover(self.rundir / "kamailio.pid", str(cfg_path), "edge")
        for stale in ("kamailio_ctl", "kamailio_rpc.sock", "kamailio.pid"):
            (self.rundir / stale).unlink(missing_ok=True)
        args = [self.cfg.sip.kamailio, "-f", str(cfg_path), "-DD", "-E",
                "-m", str(self.cfg.sip.shared_memory_mb), "-M", "16",
                "-P", str(self.rundir / "kamailio.pid"), "-Y", str(self.rundir)]
        run_as = runas.resolve(self.cfg.run_as)
        if run_as is not None:
            args += ["-u", run_as.user, "-g", run_as.group]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent())
        self._stderr_task = asyncio.create_task(self._pump_stderr(self.proc), name="edge-stderr")
        log.info("edge.started", pid=self.proc.pid, listen=self.cfg.sip.listen)

    async def _pump_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        elog = log.bind(component="kamailio")
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if "edge." in line:
                m = re.search(r"(edge\.[a-z_]+)(.*)$", line)
                elog.warning(m.group(1), detail=m.group(2).strip()) if m else elog.info("edge.log", line=line)
            elif self.stopping and "receive_fd" in line:
                # Kamailio's TCP main process reads EOF from each child's socket pair as the
                # children exit on our SIGTERM and logs it as CRITICAL (tcp_main.c); it is the
                # stop going as planned, not a fault: kept for debugging, not paged on
                elog.debug("edge.stop_noise", line=line)
            elif "jsonrpc" in line and "No such file or directory" in line and self.rpc_given_up:
                # the answer to an RPC we stopped waiting for (rpc(): timeout under load): its
                # reply socket is gone. Ours to report (edge.rpc_timeout), not a fault of the edge
                self.rpc_given_up -= 1
                elog.warning("edge.rpc_reply_late", line=line)
            elif " ERROR:" in line or "CRITICAL" in line or "ALERT" in line:
                elog.error("edge.log", line=line)
            elif self.cfg.logging.level == "debug":
                elog.debug("edge.log", line=line)

    async def _wait_ready(self, timeout: float = 10.0) -> None:
        """Ready when the RPC socket answers (Kamailio has bound its listen sockets by then)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"kamailio exited with {self.proc.returncode} at start (see log)")
            try:
                await self.rpc("core.version")
                return
            except (TimeoutError, OSError, RuntimeError):
                await asyncio.sleep(0.05)
        raise RuntimeError(f"kamailio not ready after {timeout}s")

    async def rpc(self, method: str, *params: Any, timeout: float = 2.0) -> Any:
        """One JSON-RPC call over Kamailio's UNIX datagram socket."""
        path = self.rundir / "kamailio_rpc.sock"
        reply_path = self.rundir / f"rpc-{uuid.uuid4().hex[:12]}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.bind(str(reply_path))
            os.chmod(reply_path, 0o666)  # replies are written by the kamailio user
            req = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
            sock.connect(str(path))
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, json.dumps(req).encode())
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 262144), timeout)
            except TimeoutError:
                self.rpc_given_up += 1
                log.warning("edge.rpc_timeout", method=method, timeout=timeout)
                raise
        finally:
            sock.close()
            reply_path.unlink(missing_ok=True)
        reply = json.loads(data)
        if "error" in reply:
            raise RuntimeError(f"rpc {method}: {reply['error']}")
        return reply.get("result")

    async def end_dialogs_of(self, hostport: str) -> int:
        """End every dialog a (dead) worker at hostport took part in: BYE both sides of the
        established ones (dlg.end_dlg), CANCEL the agent legs it was still ringing (tm.cancel:
        nobody else would, and the agent's phone would ring until the edge's timer)."""
        dialogs = await self.rpc("dlg.list") or []
        if isinstance(dialogs, dict):
            dialogs = [dialogs]
        ended = 0
        # the contact's host:port exactly (…:5100 must not match …:51000)
        at = re.compile(r"[@:/]" + re.escape(hostport) + r"(?:$|[;>?])")
        for dlg in dialogs:
            caller, callee = dlg.get("caller") or {}, dlg.get("callee") or {}
            # a dialog still ringing has no callee contact yet (null in dlg.list)
            contacts = (caller.get("contact") or "", callee.get("contact") or "")
            if not any(at.search(c) or c.startswith(f"sip:{hostport}") for c in contacts):
                continue
            try:
                if int(dlg.get("state", 0)) < 3:  # 1 unconfirmed, 2 early: an INVITE in progress
                    if at.search(contacts[0]) or contacts[0].startswith(f"sip:{hostport}"):
                        await self.rpc("tm.cancel", dlg["call-id"], str(caller.get("cseq") or "1"))
                        ended += 1
                else:
                    await self.rpc("dlg.end_dlg", dlg["h_entry"], dlg["h_id"])
                    ended += 1
            except RuntimeError as exc:  # already ending: the other side hung up meanwhile
                log.info("edge.end_dialog_failed", call_id=dlg.get("call-id"), error=str(exc))
        return ended

    def apply_subscribers(self, cfg: Config) -> bool:
        """Hand a reload's softphone agents (usernames, passwords) to the running edge: the
        subscriber table is rewritten if it changed (True), and db_text (db_mode 1) re-reads it
        at the next digest check. Its mtime is moved at least a second past the old one: db_text
        compares whole seconds, and a start and a reload can fall in the same one."""
        path = self.rundir / "dbtext" / "subscriber"
        text = subscriber_table(cfg)
        try:
            old_mtime = path.stat().st_mtime
            if path.read_text() == text:
                return False
        except OSError:
            old_mtime = 0.0
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # HA1 hashes: secret
        with os.fdopen(fd, "w") as f:
            f.write(text)
        at = max(time.time(), int(old_mtime) + 1.0)
        os.utime(tmp, (at, at))
        run_as = runas.resolve(cfg.run_as)
        if run_as is not None:
            run_as.give(tmp)
        tmp.replace(path)  # never half-written
        return True

    async def apply_policy(self, cfg: Config) -> list[str]:
        """Hand a reloaded dial plan's numbers and transfer targets to the running edge: the
        changed db_text tables are rewritten, then `htable.reload` swaps each in one step."""
        pol = policy.EdgePolicy.from_config(cfg)
        changed = policy.write_tables(self.rundir / "dbtext", pol)
        for name in changed:
            await self.rpc("htable.reload", name)
        if pol.unchecked_patterns:
            log.warning("edge.patterns_unchecked", patterns=pol.unchecked_patterns,
                        detail="the edge lets every number through; the controller rejects unrouted ones")
        return changed

    async def counters(self) -> dict[str, int]:
        """The edge's security counters (htable edgestats): auth_failures, auth_bans, malformed,
        unknown_dialog, unknown_number, refused_target, stray_reply, direct_media (re-INVITEs whose
        body the edge set from a worker's X-Ringmaster-Sdp), trunk_auth (INVITEs retried with a
        trunk's credentials), agent_calls (softphone INVITEs authenticated as an agent); 0 for
        those never counted."""
        names = ("auth_failures", "auth_bans", "malformed", "unknown_dialog", "unknown_number", "refused_target",
                 "stray_reply", "direct_media", "trunk_auth", "agent_calls")
        out = dict.fromkeys(names, 0)
        rows = await self.rpc("htable.dump", "edgestats") or []
        for slot in rows if isinstance(rows, list) else [rows]:
            for item in slot.get("slot", []) if isinstance(slot, dict) else []:
                name, value = item.get("name"), item.get("value")
                if name in out and isinstance(value, int):
                    out[name] = value
        return out

    async def banned_sources(self) -> list[str]:
        """IPs banned at this moment for password guessing (htable authban)."""
        rows = await self.rpc("htable.dump", "authban") or []
        return sorted(item.get("name", "") for slot in (rows if isinstance(rows, list) else [rows])
                      if isinstance(slot, dict) for item in slot.get("slot", []))

    async def dispatcher_loads(self) -> dict[str, int]:
        """worker name -> calls the dispatcher counts on it (DLGLOAD of algorithm 10)."""
        return (await self.dispatcher_view())[1]

    def _write_dispatcher_list(self) -> None:
        """The list file follows the running workers, so a restarted edge loads the same set."""
        maxload = self.cfg.workers.max_inbound_calls
        text = "".join(f"1 sip:{w.sip_host}:{w.sip_port} 8 0 {_ds_attrs(w, maxload)}\n" for w in self.workers)
        tmp = self.rundir / "dispatcher.list.tmp"
        tmp.write_text(text)
        tmp.replace(self.rundir / "dispatcher.list")

    async def add_worker(self, worker: WorkerSpec) -> None:
        """A grown worker joins the dispatcher set at run time (no edge restart, no call dropped)."""
        if any(w.name == worker.name for w in self.workers):
            return
        self.workers.append(worker)
        self._write_dispatcher_list()
        await self.rpc("dispatcher.add", 1, f"sip:{worker.sip_host}:{worker.sip_port}", 8, 0,
                       _ds_attrs(worker, self.cfg.workers.max_inbound_calls))

    async def remove_worker(self, worker: WorkerSpec) -> None:
        """A retiring worker gets no new call from now on; its calls go on until they end."""
        self.workers = [w for w in self.workers if w.name != worker.name]
        self._write_dispatcher_list()
        await self.rpc("dispatcher.remove", 1, f"sip:{worker.sip_host}:{worker.sip_port}")

    async def reset_load(self, worker: WorkerSpec) -> None:
        """Zero the dispatcher's call count of one worker: remove it from the set and add it
        back with the same flags and attributes (there is no RPC that sets a load)."""
        uri = f"sip:{worker.sip_host}:{worker.sip_port}"
        await self.rpc("dispatcher.remove", 1, uri)
        await self.rpc("dispatcher.add", 1, uri, 8, 0, _ds_attrs(worker, self.cfg.workers.max_inbound_calls))

    async def dispatcher_state(self) -> dict[str, str]:
        """worker name -> 'active' | 'inactive' | 'probing' as the edge sees it."""
        return (await self.dispatcher_view())[0]

    async def dispatcher_view(self) -> tuple[dict[str, str], dict[str, int]]:
        """One `dispatcher.list`: (worker -> 'active' | 'inactive' | flags, worker -> DLGLOAD)."""
        result = await self.rpc("dispatcher.list")
        states: dict[str, str] = {}
        loads: dict[str, int] = {}
        for rs in (result or {}).get("RECORDS", []):
            for target in rs.get("SET", {}).get("TARGETS", []):
                dest = target.get("DEST", {})
                flags = dest.get("FLAGS", "")
                duid = (dest.get("ATTRS") or {}).get("DUID", dest.get("URI", ""))
                states[duid] = "active" if flags.startswith("A") else "inactive" if flags.startswith("I") else flags
                loads[duid] = int((dest.get("RUNTIME") or {}).get("DLGLOAD", 0))
        return states, loads
