"""A real sshd on loopback for the SSH tests (remote runs, bench --device).

sshd runs as the current user on a free port with throw-away host and client keys;
the "board" is this machine, its Python the one running the tests. When sshd
cannot start the tests fail: tools/apt-packages.txt lists openssh-server and
openssh-client.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecnn-test", "-f", str(path)],
                   check=True, capture_output=True)


def _ssh_config(path: Path, key: Path, known: Path) -> Path:
    path.write_text(f"Host 127.0.0.1\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
                    f"  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n")
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A running sshd on 127.0.0.1 that lets the current user in with a fresh key."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary) or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.fail("sshd/ssh not installed: apt-get install openssh-server openssh-client "
                    "(tools/apt-packages.txt)", pytrace=False)
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "other_key"):
        _keygen(d / name)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "LogLevel ERROR\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd did not start: {proc.stderr.read().strip()[-300:]}", pytrace=False)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on port {port} within 10 s", pytrace=False)
            time.sleep(0.1)
    user = getpass.getuser()
    config = _ssh_config(d / "ssh_config", d / "client_key", d / "known_hosts")
    try:
        yield SimpleNamespace(port=port, dir=d, device=f"{user}@127.0.0.1:{port}", options=("-F", str(config)),
                              user=user)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
