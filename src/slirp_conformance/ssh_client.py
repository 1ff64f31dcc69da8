"""The SSH client: paramiko over a socket the target provides, strict about host keys.

The target gives a connected socket (the reference target's dial socket, a pod
port-forward on KubeVirt) rather than a ProxyCommand subprocess. Authentication is by the
per-run key only. The guest's host key is read over the serial console first and pinned:
a different key fails the connection (no AutoAddPolicy, no password fallback).
"""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slirp_conformance import redaction, waits
from slirp_conformance.console import Result


@dataclass(frozen=True)
class KeyPair:
    private: paramiko.PKey
    public_openssh: str  # "ssh-ed25519 AAAA... comment"

    def __repr__(self) -> str:  # never print key material
        return f"KeyPair({self.public_openssh.split()[0]}, fingerprint={self.private.fingerprint})"


def generate_keypair(comment: str = "slirp-conformance") -> KeyPair:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    redaction.register(pem)
    private = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
    return KeyPair(private, f"{private.get_name()} {private.get_base64()} {comment}")


def parse_host_key(line: str) -> paramiko.PKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA... [comment]``) as a paramiko key."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {line!r}")
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))


class SSHRefused(AssertionError):
    """The guest answered but refused us: wrong host key or key not accepted. Never retried."""


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key) -> None:
        raise paramiko.BadHostKeyException(hostname, key, client.get_host_keys().lookup(hostname) or key)


class SSHClient:
    """Runs commands in the guest over SSH. Same ``run`` contract as the console."""

    def __init__(self, client: paramiko.SSHClient, name: str) -> None:
        self._client = client
        self.name = name

    @classmethod
    def connect(
        cls,
        dial: Callable[[], socket.socket],
        *,
        user: str,
        key: KeyPair,
        host_key: paramiko.PKey,
        name: str,
        budget: float,
    ) -> SSHClient:
        """Connect through ``dial()``; retry only transport-level failures until ``budget`` runs out."""
        alias = f"[{name}]"

        def attempt() -> paramiko.SSHClient:
            client = paramiko.SSHClient()
            client.get_host_keys().add(alias, host_key.get_name(), host_key)
            client.set_missing_host_key_policy(_PinnedHostKey())
            sock = dial()
            try:
                client.connect(
                    alias,
                    sock=sock,
                    username=user,
                    pkey=key.private,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=15,
                    banner_timeout=15,
                    auth_timeout=15,
                )
            except (paramiko.BadHostKeyException, paramiko.AuthenticationException) as e:
                client.close()
                sock.close()
                raise SSHRefused(f"SSH to {name} as {user}: {type(e).__name__}: {e}") from e
            except BaseException:
                client.close()
                sock.close()
                raise
            return client

        client = waits.wait_for(
            f"SSH to {name} as {user}",
            attempt,
            budget,
            retry_on=(paramiko.ssh_exception.SSHException, ConnectionError, socket.timeout, EOFError),
        )
        return cls(client, name)

    def run(self, command: str, timeout: float = 60) -> Result:
        _stdin, stdout, stderr = self._client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        # recv_exit_status() waits without a bound: a guest whose sshd closed the output but never
        # sent the status held a whole run for minutes (seen with the Fedora-like guest).
        if not stdout.channel.status_event.wait(timeout):
            raise TimeoutError(f"{self.name}: no exit status within {timeout:.0f} s from `{command[:120]}`")
        rc = stdout.channel.exit_status
        # Apart: Fedora's profile.d makes every command print a `bind` warning on stderr.
        return Result(command, out, rc, err)

    def close(self) -> None:
        self._client.close()
