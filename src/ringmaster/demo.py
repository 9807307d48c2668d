"""The demo's own config, made once from config/ringmaster.yaml: fresh secrets, state outside the
checkout, a self-signed certificate for the desk.

The committed demo config has no usable secrets: every password and token ends in
`-change-me`. `scripts/run-demo` calls this on its first run: each such value becomes a random
one (the same placeholder, the same value), the state moves to /var/lib/ringmaster-demo and
/run/ringmaster-demo (reachable by the unprivileged `run_as` user even when the checkout is
under /root, mode 0700), and the secrets are printed once and kept in a shell file beside the
config, readable by its owner only, for the README's commands (`. config/demo-secrets.env`).
Comments and layout are kept: the values are replaced in the text. The desk's (http.desk)
certificate and key are made with openssl in the state dir (self-signed, for 127.0.0.1 and
localhost): a browser warns once, then the desk works as over any HTTPS.

    python -m ringmaster.demo [--config config/ringmaster.yaml] [--out config/demo.yaml]
                              [--secrets config/demo-secrets.env] [--state DIR] [--run DIR]

prints the secrets and exits 0 when it made the files, prints nothing and exits 0 when they
exist already (delete both to get new secrets).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PLACEHOLDER = re.compile(r"\b([a-z0-9]+(?:-[a-z0-9]+)*)-change-me\b")
STATE_DIR = "/var/lib/ringmaster-demo"
RUN_DIR = "/run/ringmaster-demo"


def env_name(placeholder: str) -> str:
    """`alice-mqtt-pw-change-me` -> `ALICE_MQTT_PW`: the shell variable the README uses."""
    return placeholder.removesuffix("-change-me").upper().replace("-", "_")


def render(text: str, state_dir: str = STATE_DIR, run_dir: str = RUN_DIR) -> tuple[str, dict[str, str]]:
    """The demo config's text with random secrets and the given state and runtime dirs, and
    {shell variable: secret}. Raises ValueError when the source has no placeholders or paths
    to rewrite (it is not the demo config this expects)."""
    found: dict[str, str] = {}

    def secret(m: re.Match[str]) -> str:
        name = env_name(m.group(0))
        if name not in found:
            found[name] = secrets.token_hex(12)  # 96 bits; hex survives YAML, shells and URLs unquoted
        return found[name]

    out = PLACEHOLDER.sub(secret, text)
    if not found:
        raise ValueError("no -change-me secrets in the source config")
    for key, value in (("path", f"{state_dir}/ringmaster.db"), ("recordings", f"{state_dir}/recordings"),
                       ("runtime", run_dir), ("certificate", f"{state_dir}/desk-cert.pem"),
                       ("key", f"{state_dir}/desk-key.pem")):
        out, n = re.subn(rf"^(\s+{key}:\s+)\.\./var/\S+", _keep_indent(value), out, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"no relative `{key}: ../var/...` line in the source config")
    header = ("# made by ringmaster.demo (scripts/run-demo, scripts/install-service) from\n"
              "# config/ringmaster.yaml with random secrets, also kept in a .env file beside it\n")
    return header + out, found


def make_certificate(cert: Path, key: Path, days: int = 825) -> bool:
    """A self-signed certificate for the desk (browsers give microphones and WebRTC only to
    secure pages) for 127.0.0.1 and localhost, with `openssl req` (P-256 key); the key is
    readable by its owner only. Does nothing and returns False when both files exist. Raises
    OSError when openssl fails."""
    if cert.exists() and key.exists():
        return False
    cert.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        out = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", "/CN=ringmaster demo desk",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True, text=True)
    finally:
        os.umask(old)
    if out.returncode != 0:
        raise OSError(f"openssl could not make the desk's certificate: {out.stderr.strip()[-300:]}")
    os.chmod(cert, 0o644)
    return True


def _keep_indent(value: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(1) + value


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ringmaster.demo",
                                 description="make the demo's config with random secrets (once)")
    ap.add_argument("--config", default="config/ringmaster.yaml", help="the committed demo config (default: %(default)s)")
    ap.add_argument("--out", default="config/demo.yaml", help="the config to write (default: %(default)s)")
    ap.add_argument("--secrets", default="config/demo-secrets.env",
                    help="shell file with the secrets, for `. FILE` (default: %(default)s)")
    ap.add_argument("--state", default=STATE_DIR, help="database and recordings (default: %(default)s)")
    ap.add_argument("--run", default=RUN_DIR, help="runtime dir: generated configs, sockets (default: %(default)s)")
    args = ap.parse_args(argv)
    out, env = Path(args.out), Path(args.secrets)
    if out.exists() and env.exists():
        return 0
    try:
        text, found = render(Path(args.config).read_text(), args.state, args.run)
    except (OSError, ValueError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    try:
        make_certificate(Path(args.state) / "desk-cert.pem", Path(args.state) / "desk-key.pem")
    except OSError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    write_private(env, "".join(f"{k}={v}\n" for k, v in sorted(found.items())))
    write_private(out, text)
    print(f"demo: made {out} with new secrets (shown once; kept in {env}, readable by its owner only):")
    for k, v in sorted(found.items()):
        print(f"  {k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
