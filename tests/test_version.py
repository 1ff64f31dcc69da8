"""One version rule (issue 16): ``slirp_conformance.version`` parses every version of the project,
KubeVirt releases, tool pins, tools' own output and the self-tests' stand-ins alike."""

from __future__ import annotations

import re

import pytest

from slirp_conformance import version
from slirp_conformance.version import Version, VersionError, find_in_tool_output, parse
from tests.suite_runner import REPO


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("v1.5.3", Version(1, 5, 3)),
        ("1.5.3", Version(1, 5, 3)),
        (" v0.30.0\n", Version(0, 30, 0)),
        ("v10.0.0", (10, 0, 0)),
    ],
)
def test_a_version_is_vmajor_minor_patch_the_v_optional(text, wanted):
    assert parse(text) == wanted


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "latest",
        "v1.5",
        "1",
        "v1.5.0-rc.1",
        "v1.5.3+build",
        "v01.5.3",
        "v1.05.3",
        "v1.2.3.4",
        "vv1.2.3",
        "V1.2.3",
        "kind v0.30.0",
        "v1.2.x",
    ],
)
def test_anything_else_is_a_clear_error_naming_the_rule(garbage):
    with pytest.raises(VersionError, match=re.escape(f"{garbage!r} is not a version: the rule is vMAJOR.MINOR.PATCH")):
        parse(garbage)


def test_versions_print_with_the_v_and_order_numerically():
    assert str(parse("1.9.0")) == "v1.9.0" and parse("v1.9.0").minor_key == "1.9"
    assert parse("v1.10.0") > parse("v1.9.7") > parse("v1.9.0")
    assert sorted(map(parse, ["v1.5.3", "v1.1.0", "v1.10.0"])) == [(1, 1, 0), (1, 5, 3), (1, 10, 0)]


@pytest.mark.parametrize(
    ("output", "wanted"),
    [
        ("kind v0.30.0 go1.26 linux/amd64", Version(0, 30, 0)),
        ("go1.26.1 kind v0.30.0", Version(0, 30, 0)),  # not the Go release glued to "go"
        ('{"clientVersion": {"gitVersion": "v1.34.4", "major": "1"}}', Version(1, 34, 4)),
        ("v1.27.3-gke.100", Version(1, 27, 3)),
        ("v1.34.4+k3s1", Version(1, 34, 4)),
        ("37.0.0", Version(37, 0, 0)),
        ("kind version 0.19.0", Version(0, 19, 0)),
    ],
)
def test_a_tools_output_holds_its_version_among_other_words(output, wanted):
    assert find_in_tool_output(output) == wanted


@pytest.mark.parametrize("output", ["", "kind: command output changed", "go1.26", "v1.2", "1.2.3.4", "build-1.2.3"])
def test_a_tools_output_without_a_version_gives_none(output):
    assert find_in_tool_output(output) is None


# What the replaced parsers looked like (cluster/versions.py, preflight._semver, sidecar_render, and
# the stand-ins retired since: the fake cluster's versions.py, the test bed's components.py).
BY_HAND = re.compile(r"""\(\?P<major>|\(\\d\+\)\\\.\(\\d\+\)|lstrip\(["']v["']\)\.split""")
REPLACED = [
    r'_VERSION = re.compile(r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)$")',
    r'match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)',
    r'_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")',
    r'm = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", version or "")',
    'major, minor, _ = version.lstrip("v").split(".")',
]


@pytest.mark.parametrize("source", REPLACED)
def test_the_guard_below_finds_each_replaced_parser(source):
    assert BY_HAND.search(source), source


def test_no_other_module_parses_versions_by_hand():
    roots = [
        REPO / "src",
        REPO / "fixtures",
        REPO / "suites",
    ]
    offenders = [
        str(path.relative_to(REPO))
        for root in roots
        for path in root.rglob("*.py")
        if path != REPO / "src" / "slirp_conformance" / "version.py" and BY_HAND.search(path.read_text())
    ]
    assert offenders == [], offenders
    assert version.__doc__ and "vMAJOR.MINOR.PATCH" in version.__doc__
