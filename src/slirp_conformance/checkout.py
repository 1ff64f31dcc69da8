"""Where the suite's checkout is. The package runs from it (an editable install, hack/setup.sh)
and reads its ``hack/`` (version pins, Go sources), ``suites/``, ``.tools/`` and ``pyproject.toml``."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # src/slirp_conformance/checkout.py -> the checkout
# Our stand-ins for Go modules the module proxy refuses (hack/go-shims/README.md), for every Go build.
GO_SHIMS = REPO / "hack" / "go-shims"


def suite_pytest_argv(*args: str) -> list[str]:
    """``pytest -k slirp`` rooted in the checkout as hack/conformance.sh roots it (hack/lib.sh
    suite_pytest): a bare path after an option (``--kubeconfig PATH``) is then the option's value,
    not the run's root."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(REPO / "pyproject.toml"),
        "--rootdir",
        str(REPO),
        "-k",
        "slirp",
        *args,
    ]
