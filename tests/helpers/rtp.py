"""An RTP sink: a UDP socket that stores the PCMU payload of every packet it receives,
per SSRC, so a test can check what each caller was sent, and each packet's arrival time
(monotonic s), RTP timestamp and payload size, so it can check how it was sent."""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from typing import NamedTuple

import numpy as np

from tests.helpers.audio import decode_pcmu


class Packet(NamedTuple):
    arrived: float  # time.monotonic() at receipt
    timestamp: int  # the RTP header's timestamp (8 kHz units for PCMU)
    payload: int  # payload bytes (PCMU: one per sample)


class RtpSink:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = port
        self.streams: dict[int, bytearray] = defaultdict(bytearray)
        self.timing: dict[int, list[Packet]] = defaultdict(list)
        self.packets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            pt = data[1] & 0x7F
            ssrc = int.from_bytes(data[8:12], "big")
            cc = data[0] & 0x0F
            if pt == 0:
                payload = data[12 + 4 * cc:]
                self.streams[ssrc] += payload
                self.timing[ssrc].append(Packet(time.monotonic(), int.from_bytes(data[4:8], "big"), len(payload)))
                self.packets += 1

    def audio(self, ssrc: int | None = None) -> np.ndarray:
        if ssrc is None:
            if not self.streams:
                return np.zeros(0, dtype=np.int16)
            ssrc = max(self.streams, key=lambda s: len(self.streams[s]))
        return decode_pcmu(bytes(self.streams[ssrc]))

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=1)
