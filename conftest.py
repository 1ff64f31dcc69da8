"""slirp-conformance: the fixture modules the suites use (fixtures/, on pytest's pythonpath).

The plugin itself (options, hooks, reporting) is registered by the package's entry point
(slirp_conformance/plugin); no helpers here.
"""

pytest_plugins = ["slirp_vm", "slirp_evidence"]
