"""A pjsua2 softphone that registers and subscribes to its message-waiting lamp (pjsip's own
RFC 3842 subscriber: `AccountConfig.mwiConfig`), for tests of the edge's MWI. It prints one
JSON line per event on stdout: {"event": "registered", "code": 200}, {"event": "mwi", "state":
..., "body": "Messages-Waiting: ..."}; it stops on SIGTERM or when stdin closes.

    python -m tests.helpers.mwiphone --edge 127.0.0.1:5060 --user alice --password pw --port 5090
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys

import pjsua2 as pj


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Account(pj.Account):
    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        emit(event="registered", code=prm.code)

    def onMwiInfo(self, prm: pj.OnMwiInfoParam) -> None:
        emit(event="mwi", state=prm.state, body=prm.rdata.wholeMsg.split("\r\n\r\n", 1)[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edge", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    cfg.medConfig.threadCnt = 0
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = args.port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args.user}@{args.edge}"
    acfg.regConfig.registrarUri = f"sip:{args.edge}"
    acfg.regConfig.timeoutSec = 300
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    acfg.mwiConfig.enabled = True
    acfg.mwiConfig.expirationSec = 600
    acc = Account()
    acc.create(acfg)
    try:
        while not stop:
            ep.libHandleEvents(20)
            if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():
                break  # the test closed our stdin: stop
    finally:
        acc.shutdown()
        for _ in range(25):  # let the un-REGISTER and un-SUBSCRIBE out
            ep.libHandleEvents(20)
        ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
