"""Recording stand-ins for docker, kind and kubectl: shell scripts put first on PATH that log
their argv to $FAKE_LOG and answer like the real tools (for what no real tool can be made to do on cue: hang, be
down, be too old, fail half-way through a create)."""

from __future__ import annotations

import shutil
from pathlib import Path

_RECORD = """printf "%s" "$(basename "$0")" >> "$FAKE_LOG"
for a in "$@"; do printf " %s" "$(shell_quote "$a")" >> "$FAKE_LOG"; done
echo >> "$FAKE_LOG"
"""
PRELUDE = (
    """#!/bin/sh
shell_quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\\\\\''/g")"; }
"""
    + _RECORD
)

FAKES = {
    "docker": """
case "$1" in
  info) [ -n "$FAKE_DOCKER_HANG" ] && sleep 60
        if [ -n "$FAKE_DOCKER_DOWN" ]; then
          echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." \\
            "Is the docker daemon running?" >&2; exit 1
        fi
        echo '"27.3.1"' ;;
  version) [ -n "$FAKE_DOCKER_DOWN" ] && exit 1; echo "27.3.1" ;;
  image) echo "sha256:0123" ;;
  run) if [ -n "$FAKE_DOCKER_NOT_PRIVILEGED" ]; then
         echo "docker: Error response from daemon: failed to create shim task: OCI runtime create failed:" \
              "runc create failed: unable to start container process: unable to apply caps:" \
              "operation not permitted: unknown." >&2; exit 126
       fi ;;
  inspect) echo "${FAKE_NODE_IMAGE:-kindest/node:v1.27.1@sha256:0123}" ;;
  ps) ;;  # no node container of a deleted cluster left (kind.remove_stray_nodes)
  exec) printf '%s\\n' 'version = 3' '[plugins."io.containerd.cri.v1.runtime"]' \\
          '  enable_unprivileged_icmp = false' '  enable_unprivileged_ports = false' ;;
  *) echo "fake docker: unexpected $*" >&2; exit 2 ;;
esac
""",
    "kind": """
state="$FAKE_STATE/kind-clusters"; touch "$state"
case "$1 $2" in
  "version "*) echo "kind ${FAKE_KIND_VERSION:-v0.19.0} go1.20.4 linux/amd64" ;;
  "get clusters") if [ -s "$state" ]; then cat "$state"; else echo "No kind clusters found." >&2; fi ;;
  "create cluster")
        if [ -n "$FAKE_KIND_CREATE_FAILS" ]; then
          echo "ERROR: failed to create cluster: timed out waiting" >&2; exit 1
        fi
        name=""; kc=""
        while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift;; --kubeconfig) kc="$2"; shift;; esac; shift; done
        echo "$name" >> "$state"
        printf '%s\\n' 'apiVersion: v1' 'kind: Config' 'users:' '- name: u' \\
          '  user:' '    token: SECRET-TOKEN' > "$kc" ;;
  "export kubeconfig") kc=""
        while [ $# -gt 0 ]; do case "$1" in --kubeconfig) kc="$2"; shift;; esac; shift; done
        printf 'apiVersion: v1\\nkind: Config\\n' > "$kc"
        echo "Set kubectl context" >&2 ;;
  "delete cluster") name=""
        while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift;; esac; shift; done
        grep -vx "$name" "$state" > "$state.new"; mv "$state.new" "$state" ;;
  "load docker-image") : ;;
  *) echo "fake kind: unexpected $*" >&2; exit 2 ;;
esac
""",
    "kubectl": """
echo '{"clientVersion": {"gitVersion": "'"${FAKE_KUBECTL_VERSION:-v1.27.1}"'", "major": "1"}}'
""",
}
SYSTEM_UTILS = ("sh", "basename", "printf", "sed", "cat", "grep", "mv", "touch", "sleep", "echo", "cp")


def install(bindir: Path) -> None:
    """Write the fakes into ``bindir`` with links to the few system tools they use."""
    bindir.mkdir(parents=True, exist_ok=True)
    for util in SYSTEM_UTILS:
        real = shutil.which(util, path="/usr/bin:/bin")
        if real and not (bindir / util).exists():
            (bindir / util).symlink_to(real)
    for name, body in FAKES.items():
        script = bindir / name
        script.write_text(PRELUDE + body)
        script.chmod(0o755)
