"""The unprivileged user Kamailio and mosquitto run as when the daemon is started as root.

The daemon itself may need root (a demo on a fresh machine is started as root), but the two
network-facing parts it runs should not: Kamailio switches with `-u`/`-g` after binding its
sockets, mosquitto with its `user` option. The files they open after the switch (generated
configs, the HA1 table, the runtime dirs, the registrar's SQLite file and its directory) are
handed to that user here, and a path the user cannot even reach (a checkout under /root,
mode 0700) is reported up front with its name instead of as a Kamailio or mosquitto error.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunAs:
    """user/group names and ids to drop to."""

    user: str
    group: str
    uid: int
    gid: int

    def give(self, *paths: Path) -> None:
        """chown each path (a directory with everything in it) to the user and its group."""
        for path in paths:
            if not path.exists():
                continue
            os.chown(path, self.uid, self.gid, follow_symlinks=False)
            if path.is_dir() and not path.is_symlink():
                for root, dirs, files in os.walk(path):
                    for name in dirs + files:
                        os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)

    def check_reachable(self, path: Path, what: str) -> None:
        """Raise RuntimeError naming the first directory above `path` the user cannot pass."""
        for parent in reversed(path.resolve().parents):
            st = parent.stat()
            if st.st_uid == self.uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid == self.gid:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                raise RuntimeError(
                    f"run_as: user {self.user!r} cannot reach {what} {path} ({parent} is mode "
                    f"{stat.S_IMODE(st.st_mode):04o}): put it outside {parent}, or leave run_as out")


def resolve(user: str | None) -> RunAs | None:
    """The user to drop to, or None when there is none to drop to (not root, or run_as unset).

    Raises RuntimeError for a user that does not exist (scripts/setup creates `ringmaster`)."""
    if not user or os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise RuntimeError(f"run_as: no user {user!r} on this machine (scripts/setup creates 'ringmaster')") from None
    return RunAs(user, grp.getgrgid(pw.pw_gid).gr_name, pw.pw_uid, pw.pw_gid)
