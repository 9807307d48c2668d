"""Two pjsip/pjsua C functions that the pjsua2 wheel exports but does not wrap.

The wheel's extension module (`pjsua2._pjsua2`) is linked statically against pjproject
2.15.1 and exports its C symbols; `ctypes.CDLL` on the same file returns the handle of the
library that is already loaded, so these calls act on the worker's own pjsua instance. (In a
process that hosts several engines this module is loaded once per copy of the library, and
`pjsua2` names that copy: worker.copies.)

- `pjsua_call_get_count()`: the number of call slots pjsua really holds (at most
  PJSUA_MAX_CALLS = 4 in the wheel). A slot stays taken until the call's invite session is
  gone, which can be well after our last callback (docs/engine-findings.md, 11 and 21), so the
  worker's own dict of legs is not the truth.
- `pjsip_tsx_set_timers(t1, t2, t4, td)`: the SIP transaction timers of RFC 3261 17.1.1.2 and
  17.1.2.2. `td` is pjsip's "Timer D" value that it also uses as the transaction timeout
  (Timers B, F and H), 32 s by default: a BYE that the far end never answers keeps the leg,
  and its call slot, for 32 s (docs/engine-findings.md, 21).
"""

from __future__ import annotations

import ctypes
from functools import cache

import pjsua2 as pj


@cache
def _lib() -> ctypes.CDLL:
    pj.Endpoint  # noqa: B018 (the package loads its SWIG module on first use)
    lib = ctypes.CDLL(pj._pjsua2.__file__)
    lib.pjsua_call_get_count.restype = ctypes.c_uint
    lib.pjsua_call_get_count.argtypes = []
    lib.pjsip_tsx_set_timers.restype = None
    lib.pjsip_tsx_set_timers.argtypes = [ctypes.c_uint] * 4
    return lib


def call_count() -> int:
    """Call slots in use in this process's pjsua (0..4); only valid between libInit and
    libDestroy, from the thread that polls pjsua."""
    return int(_lib().pjsua_call_get_count())


def set_transaction_timers(t1_ms: int, t2_ms: int, t4_ms: int, timeout_ms: int) -> None:
    """Set pjsip's transaction timers (milliseconds) for every transaction created after the
    call. Must run after libInit: the transaction layer reads pjsip_cfg() when it starts and
    would overwrite an earlier setting."""
    if not 0 < t1_ms <= t2_ms or t4_ms <= 0 or timeout_ms < t1_ms:
        raise ValueError(f"bad SIP timers t1={t1_ms} t2={t2_ms} t4={t4_ms} timeout={timeout_ms}")
    _lib().pjsip_tsx_set_timers(t1_ms, t2_ms, t4_ms, timeout_ms)
