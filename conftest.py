"""slirp-conformance: the fixture plugins. Options live in fixtures/plugin_options.py; no helpers here."""

pytest_plugins = [
    "fixtures.plugin_options",
    "fixtures.plugin_target",
    "fixtures.plugin_reporting",
]
