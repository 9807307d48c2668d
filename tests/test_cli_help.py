"""The command line explains itself: `--version` prints the package's version, and every option
and argument of every subcommand has help text (`-c` shows its default)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

from ringmaster import cli

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_packages():
    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "--version"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == f"ringmaster {want}"


def test_every_option_of_every_subcommand_has_help():
    ap = cli.build_parser()
    missing = []
    subs = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    assert len(subs.choices) >= 14
    for name, sp in subs.choices.items():
        for action in sp._actions:
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
        assert "(default: /etc/ringmaster/ringmaster.yaml;" in " ".join(sp.format_help().split())
    assert missing == []
