"""Where the suite's checkout is. The package runs from it (an editable install, hack/setup.sh)
and reads its ``hack/`` (version pins, Go sources), ``suites/``, ``.tools/`` and ``pyproject.toml``."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # src/slirp_conformance/checkout.py -> the checkout
