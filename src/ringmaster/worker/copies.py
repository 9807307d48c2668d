"""Several pjsua instances in one process: a copy of the pjsua2 wheel per instance.

Why: pjsua is a singleton (one `pjsua_var` per library) and the PyPI wheel caps it at
PJSUA_MAX_CALLS = 4 legs, so one worker process carried 4 legs and a pool for ~200 calls up
was ~100 processes of ~6.8 MB PSS each, most of it the interpreter's own pages
(docs/engine-findings.md 105, 108). The wheel links pjproject statically into its extension
module; the dynamic loader maps a second file as a second library (it tells objects apart by
device and inode), with its own globals: a second, independent pjsua. A process hosting N
engines ("workers.per_process") loads the wheel's package N-1 more times from copies, one per
engine after the first.

Two things make a copy a separate module and not a view of the first:
- SWIG keeps its type table in a module named `swig_runtime_data5`; a copy that found the
  first copy's table would wrap its pointers in the first copy's Python classes (whose
  methods call the first library). It is removed from sys.modules while a copy loads, so the
  copy builds a table of its own (SWIG_Python_GetModule caches each library's in a static).
- The worker's modules that subclass pjsua2 classes (native, legs, engine) are loaded again
  for each copy, with `pjsua2` naming that copy while they import, so an engine built from
  copy i only ever calls library i.

Threads (pjlib asserts on a call from a thread it does not know, os_core_unix.c
pj_thread_this): a hosted engine's thread registers itself with every library of the process
(`register_thread`), because Python may free any copy's objects on whichever thread runs a
collection. Hosts therefore run with the automatic collector off (see worker.host).
"""

from __future__ import annotations

import ctypes
import filecmp
import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pjsua2

SWIG_RUNTIME = "swig_runtime_data5"  # SWIG 4.2's SWIGPY_CAPSULE_NAME module (runtime version 5)
# the worker's modules that import pjsua2, in an order each one's imports are already loaded
BOUND_MODULES = ("ringmaster.worker.native", "ringmaster.worker.legs", "ringmaster.worker.engine")
PJ_THREAD_DESC_LONGS = 64  # pj_thread_desc (pj/os.h: PJ_THREAD_DESC_SIZE longs)
FREE_AFTER_COPY = 256 * 2**20  # bytes a copy must leave free on the store's filesystem

_engines: list[ModuleType] = []  # engine module bound to library i
_libraries: list[ctypes.CDLL] = []  # library i, for thread registration
_descs: list[ctypes.Array[ctypes.c_long]] = []  # pjlib keeps a pointer to these: never freed


def package_name(index: int) -> str:
    return "pjsua2" if index == 0 else f"rm_pjsua2_{index}"


def prepare(directory: Path, count: int) -> None:
    """Make `count` - 1 copies of the installed pjsua2 package under `directory` (kept when
    already identical: a restart does not copy 10 MB again). The directory is beside the store:
    a copy is made only while that leaves FREE_AFTER_COPY bytes free, and one cut short is
    removed, so the store never loses its room to them. Raises OSError."""
    source = Path(pjsua2.__file__).resolve().parent
    size = sum(p.stat().st_size for p in source.iterdir() if p.is_file())
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(1, count):
        target = directory / package_name(index)
        if _same_tree(source, target):
            continue
        shutil.rmtree(target, ignore_errors=True)
        free = shutil.disk_usage(directory).free
        if free - size < FREE_AFTER_COPY:
            raise OSError(f"{free // 2**20} MB free in {directory}: a {size // 2**20} MB copy would leave"
                          f" less than {FREE_AFTER_COPY // 2**20} MB")
        try:
            # with its __pycache__: compiling the copy's 570 kB pjsua2.py took ~0.1 s a start
            # (copy2 keeps the source's mtime, which the .pyc is checked against)
            shutil.copytree(source, target)
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
            raise


def _same_tree(a: Path, b: Path) -> bool:
    if not b.is_dir():
        return False
    names = [p.name for p in a.iterdir() if p.is_file()]
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=True)
    return not mismatch and not errors


def load(directory: Path, count: int) -> None:
    """Import libraries 0..count-1 and an engine module bound to each (see the module's
    docstring). Done once, in the zygote, before it forks: the imports are shared."""
    if _engines:
        return
    import ringmaster.worker.engine as engine0

    _engines.append(engine0)
    _libraries.append(ctypes.CDLL(pjsua2._pjsua2.__file__))
    if count > 1:
        sys.path.insert(0, str(directory))
    for index in range(1, count):
        pj = _import_library(package_name(index))
        _engines.append(_import_bound(pj))
        _libraries.append(ctypes.CDLL(pj._pjsua2.__file__))
    for lib in _libraries:
        lib.pj_thread_is_registered.restype = ctypes.c_int
        lib.pj_thread_register.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]


def engine_module(index: int) -> ModuleType:
    """The engine module (MediaEngine, WorkerSettings) bound to library `index`."""
    return _engines[index]


def register_thread(name: str) -> None:
    """Make the calling thread known to every loaded library's pjlib (pj_init is reference
    counted, so initialising a library here does not disturb its own libCreate later).
    Raises RuntimeError if pjlib refuses."""
    for lib in _libraries:
        if lib.pj_init() != 0:
            raise RuntimeError("pj_init failed")
        if lib.pj_thread_is_registered():
            continue
        desc = (ctypes.c_long * PJ_THREAD_DESC_LONGS)()
        _descs.append(desc)
        thread = ctypes.c_void_p()
        if lib.pj_thread_register(name.encode()[:15], ctypes.byref(desc), ctypes.byref(thread)) != 0:
            raise RuntimeError("pj_thread_register failed")


def _import_library(name: str) -> ModuleType:
    first = sys.modules.pop(SWIG_RUNTIME, None)
    try:
        pj = importlib.import_module(name)
        pj.Endpoint  # noqa: B018 (the package loads its SWIG module on first use)
        return pj
    finally:
        if first is not None:
            sys.modules[SWIG_RUNTIME] = first


def _import_bound(pj: ModuleType) -> ModuleType:
    package = sys.modules["ringmaster.worker"]
    saved = {name: sys.modules.pop(name) for name in ("pjsua2", *BOUND_MODULES) if name in sys.modules}
    attrs = {name.rsplit(".", 1)[1]: getattr(package, name.rsplit(".", 1)[1]) for name in BOUND_MODULES
             if hasattr(package, name.rsplit(".", 1)[1])}
    for attr in attrs:
        delattr(package, attr)  # `from ringmaster.worker import native` looks here first
    try:
        sys.modules["pjsua2"] = pj
        return importlib.import_module("ringmaster.worker.engine")
    finally:
        for name in ("pjsua2", *BOUND_MODULES):
            sys.modules.pop(name, None)
        sys.modules.update(saved)
        for attr, value in attrs.items():
            setattr(package, attr, value)
