"""Run SIPp scenarios from tests/sipp against the edge (loopback only, bounded runs)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent / "sipp"


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str


def _counts(text: str) -> tuple[int, int]:
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    bad = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return (int(ok[-1]) if ok else 0, int(bad[-1]) if bad else 0)


def sipp_args(scenario: str | Path, edge: str, local_port: int, service: str = "100", calls: int = 1,
              rate: float = 10, limit: int | None = None, caller: str = "4512345678",
              rtp_sink: int = 0, hold_ms: int = 1000, timeout: int = 60, extra: list[str] | None = None,
              workdir: Path | None = None) -> list[str]:
    scen = Path(scenario) if Path(scenario).is_absolute() else SCENARIOS / scenario
    # where the server sends RTP unless the test listens somewhere: +1000, or -1000 when that
    # would pass 65535 (the port blocks at the top of the range)
    sink = rtp_sink or (local_port + 1000 if local_port + 1000 <= 65535 else local_port - 1000)
    args = ["sipp", edge, "-sf", str(scen), "-s", service, "-i", "127.0.0.1", "-p", str(local_port),
            "-m", str(calls), "-r", str(rate), "-l", str(limit or calls), "-d", str(hold_ms),
            "-key", "caller", caller, "-key", "rtp_sink", str(sink),
            "-timeout", f"{timeout}s", "-timeout_error", "-nostdin", "-max_recv_loops", "100",
            "-trace_stat", "-fd", "1"]
    return args + (extra or [])


def run_sipp(scenario: str | Path, edge: str, local_port: int, workdir: Path, **kw) -> SippResult:  # type: ignore[no-untyped-def]
    args = sipp_args(scenario, edge, local_port, **kw)
    timeout = kw.get("timeout", 60) + 15
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    ok, bad = _counts(proc.stdout + proc.stderr)
    return SippResult(proc.returncode, ok, bad, proc.stdout[-3000:] + proc.stderr[-3000:])


def refused_scenario(code: int, workdir: Path) -> Path:
    text = (SCENARIOS / "uac_refused.xml").read_text().replace("[expect]", str(code))
    out = workdir / f"uac_refused_{code}.xml"
    out.write_text(text)
    return out


BYE_ANSWER = """<send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>"""
# a phone that never answers our BYE: it swallows the BYE and its retransmissions
BYE_DEAF = """<label id="deaf"/>
  <recv request="BYE" timeout="40000" ontimeout="end" next="deaf"/>"""


REINVITE_OK = """<send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:agent@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=agent 53655765 2353687638 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 8 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=sendrecv

    ]]>
  </send>"""
REINVITE_REFUSED = """<send>
    <![CDATA[

      SIP/2.0 488 Not Acceptable Here
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>"""


def agent_scenario(folder: Path, copy_record_route: bool, answer_bye: bool = True,
                   take_reinvite: bool = True) -> Path:
    """tests/sipp/uas_agent.xml with its Record-Route, BYE and re-INVITE behaviour filled in."""
    text = (SCENARIOS / "uas_agent.xml").read_text()
    # an empty line would end the headers: drop the whole line when Record-Route is omitted
    text = re.sub(r"^[ \t]*\[record_route\][ \t]*\n", "      [last_Record-Route:]\n" if copy_record_route else "",
                  text, flags=re.M)
    text = text.replace("[bye_answer]", BYE_ANSWER if answer_bye else BYE_DEAF)
    text = text.replace("[reinvite_answer]", REINVITE_OK if take_reinvite else REINVITE_REFUSED)
    out = folder / f"uas_agent_rr{int(copy_record_route)}_bye{int(answer_bye)}_ri{int(take_reinvite)}.xml"
    out.write_text(text)
    return out
