"""A simulated company PBX: a real Kamailio registrar with digest auth (db_text subscriber
table with HA1), which routes calls for its DIDs to whoever registered the `ringmaster` AOR.
Every REGISTER it sees is logged as `PBX-REGISTER <code-to-come>` so tests can count them."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

CFG = r"""#!KAMAILIO
debug=2
log_stderror=yes
auto_aliases=no
listen=udp:127.0.0.1:@@PORT@@
alias="127.0.0.1:@@PORT@@"
dns=no
rev_dns=no
children=2
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", @@MAX_EXPIRES@@)
modparam("registrar", "min_expires", 5)
modparam("auth_db", "db_url", "text://@@DIR@@/dbtext")
modparam("auth_db", "calculate_ha1", 0)
modparam("auth_db", "password_column", "ha1")
modparam("auth_db", "load_credentials", "")

request_route {
	if (is_method("REGISTER")) {
		xlog("L_NOTICE", "PBX-REGISTER from=$fu contact=$ct auth=$(hdr(Authorization){s.len})\n");
		if (!auth_check("$fd", "subscriber", "1")) {
			auth_challenge("$fd", "1");
			exit;
		}
		consume_credentials();
		if (!save("location")) sl_reply_error();
		xlog("L_NOTICE", "PBX-REGISTERED $fu\n");
		exit;
	}
	if (has_totag()) {
		if (loose_route()) { t_relay(); exit; }
		if (is_method("ACK") && t_check_trans()) { t_relay(); }
		exit;
	}
	if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
	if (is_method("INVITE")) {
		record_route();
		if ($rU == "100") $rU = "ringmaster";   # the service number is hosted by ringmaster
		if (!lookup("location")) { sl_send_reply("404", "Not Registered"); exit; }
		xlog("L_NOTICE", "PBX-ROUTE $ci -> $ru\n");
		t_relay();
		exit;
	}
	sl_send_reply("405", "Not Allowed");
}
"""


class Pbx:
    def __init__(self, folder: Path, port: int, username: str, password: str, max_expires: int = 3600):
        self.folder = folder
        self.port = port
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / "dbtext"
        db.mkdir(exist_ok=True)
        ha1 = hashlib.md5(f"{username}:127.0.0.1:{password}".encode()).hexdigest()
        (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
        (db / "subscriber").write_text(
            "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string)\n"
            f"1:{username}:127.0.0.1:x:{ha1}:x\n")
        text = CFG.replace("@@PORT@@", str(port)).replace("@@DIR@@", str(folder)).replace(
            "@@MAX_EXPIRES@@", str(max_expires))
        (folder / "pbx.cfg").write_text(text)
        self.log_path = folder / "pbx.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Pbx:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["kamailio", "-f", str(self.folder / "pbx.cfg"), "-DD", "-E", "-m", "64",
                                      "-P", str(self.folder / "pbx.pid"), "-Y", str(self.folder)],
                                     stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if "init_tcp" in self.log() or "SIP ROUTING" in self.log() or "processes" in self.log():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"pbx kamailio failed:\n{self.log()[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.3)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def registers(self) -> int:
        return len(re.findall(r"PBX-REGISTER from", self.log()))

    def registered(self) -> int:
        return len(re.findall(r"PBX-REGISTERED", self.log()))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc:
            self._log.close()
