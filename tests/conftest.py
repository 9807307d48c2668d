"""Shared fixtures: a private port block and a real daemon per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.daemon import Daemon, allocate_ports, base_config


def pytest_configure(config: pytest.Config) -> None:
    missing = [t for t in ("kamailio", "sipp", "sox") if shutil.which(t) is None
               and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        raise pytest.UsageError(f"missing system tools {missing}: run scripts/setup first")


@pytest.fixture(autouse=True)
def _no_phone_left_behind() -> Iterator[None]:
    """A test that fails before it stops its phones would leave pjsua2 processes that hang the
    event loop's teardown (and CI with it): kill them."""
    yield
    from tests.helpers.phone import Phone

    for phone in list(Phone.live):
        phone.proc.kill()
        Phone.live.discard(phone)


@pytest.fixture
def ports():  # type: ignore[no-untyped-def]
    return allocate_ports()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[Daemon] = []

    def make(workers: int = 2, start: bool = True, **overrides) -> Daemon:  # type: ignore[no-untyped-def]
        ports = allocate_ports()
        folder = tmp_path / f"d{len(started)}"
        folder.mkdir()
        cfg = base_config(folder, ports, workers=workers)
        for key, value in overrides.items():
            cfg[key] = value
        d = Daemon(folder, ports, cfg)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        d.stop()
