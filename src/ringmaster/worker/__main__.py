"""Entry point of a media worker process (spawned by the controller's WorkerPool).

`run` is also what a worker forked by the zygote (ringmaster.worker.zygote) runs, so both
spawn paths start the engine the same way."""

from __future__ import annotations

import argparse
import signal
import socket

from ringmaster.worker.engine import MediaEngine, WorkerSettings


def run(settings: WorkerSettings, sock: socket.socket) -> None:
    """Run one media engine on the protocol socket until Shutdown, SIGTERM or SIGINT."""
    engine = MediaEngine(settings, sock)

    def on_term(signum: int, frame: object) -> None:
        engine.running = False  # the loop hangs up and destroys pjsua2 cleanly

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    engine.start()
    engine.run()


def main() -> None:
    ap = argparse.ArgumentParser(prog="ringmaster-worker")
    ap.add_argument("--fd", type=int, required=True, help="inherited socket for the protocol")
    ap.add_argument("--name", required=True)
    ap.add_argument("--sip", required=True, help="host:port to bind SIP (UDP)")
    ap.add_argument("--rtp", required=True, help="first RTP port:count")
    ap.add_argument("--proxy", default="", help="outbound proxy URI for dialled legs")
    ap.add_argument("--public-host", default="")
    ap.add_argument("--log-level", type=int, default=1)
    ap.add_argument("--allow-source", action="append", default=[], metavar="IP[:PORT]",
                    help="a source that may open dialogs (the edge); repeatable; none: refuse all")
    ap.add_argument("--audio-frame-ptime", type=int, choices=(20, 40), default=40,
                    help="ms of audio the conference bridge mixes per tick")
    args = ap.parse_args()
    host, port = args.sip.rsplit(":", 1)
    rtp_port, rtp_count = args.rtp.split(":")
    settings = WorkerSettings(name=args.name, sip_host=host, sip_port=int(port),
                              rtp_port=int(rtp_port), rtp_port_range=int(rtp_count),
                              proxy=args.proxy, public_host=args.public_host,
                              log_level=args.log_level,
                              allowed_sources=tuple(args.allow_source),
                              audio_frame_ptime=args.audio_frame_ptime)
    run(settings, socket.socket(fileno=args.fd))


if __name__ == "__main__":
    main()
