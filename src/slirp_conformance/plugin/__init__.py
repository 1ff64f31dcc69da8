"""The suite's pytest plugin, registered once, by the package's ``pytest11`` entry point
(pyproject.toml), so it is in force whatever directory pytest is rooted in:

- ``options``: the command-line options, every input checked before anything boots or builds,
  and the one-line refusal of a run pytest rooted outside the repo;
- ``session``: signals, timeouts, the target's preflight and how the target is made;
- ``reporting``: evidence in JUnit, artifacts of failed checks, the conformance report.

The fixtures the suites use are in the repo's ``fixtures/`` (registered by the root conftest.py).
"""

pytest_plugins = [
    "slirp_conformance.plugin.options",
    "slirp_conformance.plugin.session",
    "slirp_conformance.plugin.reporting",
]
