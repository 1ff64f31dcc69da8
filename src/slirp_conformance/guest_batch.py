"""Several guest commands in one round trip, each with its own output and exit code.

Every guest command is one exchange with the guest: about 0.15-0.25 s on the Fedora-like guest
under TCG (its shell's start-up, the console's markers), 45-100 ms on busybox's console. Readings
that belong together (the DHCP evidence, the counters around a ping) go as one command: its parts
run in turn, and each part's output (its stderr folded in, 2>&1) ends at a line naming the part
and carrying its ``$?``. Where the console limits a line (busybox ash: ``Console.command_limit``),
the parts go in as few commands as fit, in order; so a part never relies on a variable an
earlier part set. A part may start a simple command in the background (its exec drops what the
shell holds), not a subshell: the shell keeps a copy of each part's redirected stderr, a forked
subshell inherits it, and over SSH (or a pipe) the batch then ends only when that job does.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from slirp_conformance.console import GuestShell, Result, shell_group


def command(parts: Mapping[str, str], token: str) -> str:
    """One shell line running ``parts`` (name -> command) in order. A part's end is a line
    ``<token> <name> <rc>``, printed after a newline of its own: a part whose output does not end
    in one still ends before its marker."""
    for name, part in parts.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"part name {name!r}: letters, digits, '_' and '-' only")
        if "\n" in part:  # the console's rule: one line per command
            raise ValueError(f"part {name!r}: one line per console command; join with ';' or '&&'")
    return "; ".join(
        f"{shell_group(part)} 2>&1; printf '\\n%s %s %d\\n' {token} {name} $?" for name, part in parts.items()
    )


def parse(output: str, parts: Mapping[str, str], token: str, stderr: str = "") -> dict[str, Result]:
    """``command``'s output -> name -> Result. A part whose marker never came (the batch ended
    first: a part that ended the shell, a syntax error) gets rc -1, and the batch's own stderr
    (``stderr``) says why."""
    results: dict[str, Result] = {}
    rest = output
    for name, part in parts.items():
        # Anywhere in a line: another writer on the console (a boot job's message) may have put
        # text before it after the part's newline.
        m = re.search(rf"{re.escape(token)} {re.escape(name)} (-?\d+)\n?", rest)
        if m is None:
            why = f"did not end: the batch ended before part {name!r}'s marker"
            results[name] = Result(part, "", -1, f"{why}; the batch's stderr: {stderr[-300:]!r}")
            continue
        text = rest[: m.start()]
        results[name] = Result(part, text[:-1] if text.endswith("\n") else text, int(m.group(1)))
        rest = rest[m.end() :]
    return results


@dataclass(frozen=True)
class Batch:
    """What one batch printed: each part's Result, and what the shell itself printed on stderr
    around them (a login shell's warnings; the parts' own stderr is in their output)."""

    parts: dict[str, Result]
    stderr: str

    def __getitem__(self, name: str) -> Result:
        return self.parts[name]


def run(shell: GuestShell, parts: Mapping[str, str], timeout: float | None = None) -> Batch:
    """Runs ``parts`` (name -> command) in order, in as few guest commands as the shell's line
    limit allows (one where it has none). ``timeout``: each command's deadline (None: the shell's
    default for one command)."""
    token = f"slirp-part-{secrets.token_hex(4)}"
    results: dict[str, Result] = {}
    stderr: list[str] = []
    for group in _groups(parts, token, _command_limit(shell)):
        line = command(group, token)
        try:
            whole = shell.run(line) if timeout is None else shell.run(line, timeout=timeout)
        except Exception as e:
            raise _naming_parts(e, group) from e
        results.update(parse(whole.output, group, token, whole.stderr))
        stderr.append(whole.stderr)
    return Batch(results, "\n".join(s for s in stderr if s))


def _naming_parts(error: Exception, group: Mapping[str, str]) -> Exception:
    """``error`` (a client's timeout names the command it waited on, the SSH client's cut to its
    start) with the batch's parts, each by its start and its end, so the report names the one
    that hung; ``error`` itself where its type takes more than a message."""
    if len(error.args) != 1 or not isinstance(error.args[0], str):
        return error
    parts = "; ".join(
        f"{name}: `{part if len(part) <= 130 else f'{part[:60]} ... {part[-60:]}'}`" for name, part in group.items()
    )
    try:
        return type(error)(f"{error.args[0]}; that command is one batch (guest_batch) of the parts {parts}")
    except Exception:  # noqa: BLE001 (a constructor of its own: keep the error as it came)
        return error


def _command_limit(shell: GuestShell) -> int | None:
    limit = getattr(shell, "command_limit", None)  # the console's; SSH and the self-tests' shells have none
    return limit() if callable(limit) else None


def _groups(parts: Mapping[str, str], token: str, limit: int | None) -> list[dict[str, str]]:
    """``parts`` cut, in order, into runs whose ``command`` fits ``limit``; a part too long on its
    own goes alone (the console then refuses it, naming it)."""
    groups: list[dict[str, str]] = []
    for name, part in parts.items():
        if groups and (limit is None or len(command({**groups[-1], name: part}, token)) <= limit):
            groups[-1][name] = part
        else:
            groups.append({name: part})
    return groups
