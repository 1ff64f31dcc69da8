"""The cached Go wrapper-module builder, on tiny modules served by a file:// module proxy (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from slirp_conformance import gobuild
from slirp_conformance.errors import SetupError

HELLO = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from our source") }\n'


def _publish(proxy: Path, module: str, version: str, files: dict[str, str]) -> None:
    """Lay out ``module@version`` the way a GOPROXY serves it (mod, info, zip)."""
    d = proxy / module / "@v"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{version}.mod").write_text(files["go.mod"])
    (d / f"{version}.info").write_text(json.dumps({"Version": version, "Time": "2024-01-01T00:00:00Z"}))
    with zipfile.ZipFile(d / f"{version}.zip", "w") as z:
        for name, text in files.items():
            z.writestr(f"{module}@{version}/{name}", text)
    with open(d / "list", "a") as f:
        f.write(version + "\n")


def _lib(version: str) -> dict[str, str]:
    return {
        "go.mod": "module example.test/lib\n\ngo 1.21\n",
        "lib.go": f'package lib\n\nconst Version = "lib {version}"\n',
    }


@pytest.fixture
def go_env(tmp_path, monkeypatch):
    """An isolated module cache and a file:// proxy holding an 'upstream' module whose go.mod
    pins a dependency with replace, replaces a staging module with its own directory and sets godebug."""
    try:
        gobuild.go_binary()
    except SetupError as e:
        pytest.fail(f"the self-tests need Go: {e}")
    proxy = tmp_path / "proxy"
    _publish(proxy, "example.test/lib", "v1.0.0", _lib("v1.0.0"))
    _publish(proxy, "example.test/lib", "v1.1.0", _lib("v1.1.0"))
    _publish(
        proxy,
        "example.test/staged",
        "v1.2.0",
        {
            "go.mod": "module example.test/staged\n\ngo 1.21\n",
            "staged.go": 'package staged\n\nconst Version = "staged v1.2.0"\n',
        },
    )
    _publish(
        proxy,
        "example.test/upstream",
        "v1.2.0",
        {
            "go.mod": (
                "module example.test/upstream\n\ngo 1.21\n\ngodebug default=go1.21\n\n"
                "require (\n\texample.test/lib v1.0.0\n\texample.test/staged v0.0.0\n)\n\n"
                "replace example.test/lib => example.test/lib v1.1.0\n\n"
                "replace example.test/staged => ./staging/staged\n"
            ),
            "cmd/hello/main.go": (
                'package main\n\nimport (\n\t"fmt"\n\n\t"example.test/lib"\n'
                '\t"example.test/staged"\n)\n\nfunc main() { fmt.Println(lib.Version, staged.Version) }\n'
            ),
        },
    )
    monkeypatch.setenv("GOPROXY", proxy.as_uri())
    monkeypatch.setenv("GOSUMDB", "off")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv("GOFLAGS", "-modcacherw")  # so pytest can delete the module cache
    return tmp_path


def _own_source(tmp_path: Path, text: str = HELLO) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "main.go").write_text(text)
    return src


def test_own_source_is_built_once_then_served_from_the_cache(go_env, capfd):
    cache = go_env / "cache"
    spec = gobuild.WrapperModule("hello", "v1", (".",), source=_own_source(go_env))
    cold = gobuild.build(spec, cache)
    assert cold.cold and cold.bin_dir == cache / "go" / "hello" / "v1" / cold.key / "bin"
    out = subprocess.run([cold.binary("hello")], capture_output=True, text=True, check=True).stdout
    assert out == "hello from our source\n"
    assert "gobuild: building hello v1" in capfd.readouterr().err
    warm = gobuild.build(spec, cache)
    assert (warm.cold, warm.bin_dir) == (False, cold.bin_dir)
    assert capfd.readouterr().err == ""
    assert [p.name for p in (cache / "go" / "hello" / "v1").iterdir() if p.name != ".lock"] == [cold.key]


def test_changed_source_builds_under_a_new_key(go_env):
    cache = go_env / "cache"
    first = gobuild.build(gobuild.WrapperModule("hello", "v1", (".",), source=_own_source(go_env)), cache)
    changed = _own_source(go_env, HELLO.replace("our source", "changed source"))
    second = gobuild.build(gobuild.WrapperModule("hello", "v1", (".",), source=changed), cache)
    assert second.cold and second.key != first.key
    out = subprocess.run([second.binary("hello")], capture_output=True, text=True, check=True).stdout
    assert out == "hello from changed source\n"


UPSTREAM = "example.test/upstream@v1.2.0"


def upstream_hello(**fields) -> gobuild.WrapperModule:
    """The wrapper module of the fake upstream's hello command (the go_env proxy serves it)."""
    return gobuild.WrapperModule(
        "hello-upstream", "v1.2.0", ("example.test/upstream/cmd/hello",), requires=(UPSTREAM,), **fields
    )


def test_replace_block_and_godebug_are_taken_from_the_named_go_mod(go_env):
    spec = upstream_hello(replace_from=UPSTREAM, local_replace_version="v1.2.0")
    built = gobuild.build(spec, go_env / "cache")
    out = subprocess.run([built.binary("hello")], capture_output=True, text=True, check=True).stdout
    # lib v1.1.0 only through the copied replace; staged only through local_replace_version.
    assert out == "lib v1.1.0 staged v1.2.0\n"
    gomod = (built.bin_dir.parent / "go.mod").read_text()
    assert "godebug default=go1.21" in gomod
    assert "example.test/staged => example.test/staged v1.2.0" in gomod


def test_without_the_replace_block_the_upstream_pin_is_lost(go_env):
    """Negative control for the test above: the same build without replace_from fails."""
    spec = upstream_hello()
    with pytest.raises(SetupError, match=r"`go build` of hello-upstream v1.2.0 failed .*full log: "):
        gobuild.build(spec, go_env / "cache")


def test_a_directory_replacement_needs_a_version(go_env):
    spec = upstream_hello(replace_from=UPSTREAM)
    with pytest.raises(
        SetupError,
        match=r"replaces example.test/staged with its own directory "
        r"\./staging/staged: give the wrapper module a local_replace_version",
    ):
        gobuild.build(spec, go_env / "cache")


def test_a_failed_build_keeps_its_log_and_leaves_no_temp_dir(go_env):
    cache = go_env / "cache"
    spec = gobuild.WrapperModule("broken", "v1", (".",), source=_own_source(go_env, "package main\nfunc main() {"))
    with pytest.raises(SetupError) as e:
        gobuild.build(spec, cache)
    message = str(e.value)
    assert "\n" not in message and message.startswith("`go build` of broken v1 failed (exit 1)")
    log = Path(message.rsplit("full log: ", 1)[1].rstrip(")"))
    assert log.is_file() and "expected }" in log.read_text()
    assert sorted(p.name for p in log.parent.iterdir()) == [".lock", log.name]


def test_missing_go_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os, "access", lambda *a: False)
    with pytest.raises(SetupError, match=r"^the Go toolchain is missing: install Go"):
        gobuild.build(gobuild.WrapperModule("hello", "v1", (".",), source=tmp_path), tmp_path)


def test_temp_dirs_of_dead_builds_are_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".tmp-abc-{dead.pid}-x"
    live = tmp_path / f".tmp-abc-{os.getpid()}-y"
    stale.mkdir()
    live.mkdir()
    assert gobuild.sweep_stale_temp_dirs(tmp_path) == [stale]
    assert live.is_dir() and not stale.exists()


def test_bad_specs_are_refused_early():
    with pytest.raises(ValueError, match="needs a source directory"):
        gobuild.WrapperModule("x", "v1", (".",))
    with pytest.raises(ValueError, match="must be module@version"):
        gobuild.WrapperModule("x", "v1", ("p",), requires=("example.test/lib",))
    with pytest.raises(ValueError, match="plain path element"):
        gobuild.WrapperModule("../x", "v1", ("p",))
    with pytest.raises(ValueError, match="needs the shims folder"):
        gobuild.WrapperModule("x", "v1", ("p",), replaces=(("example.test/staged", "./shims/staged"),))


def _staged_shim(shims: Path, version: str = "staged shim") -> Path:
    shim = shims / "staged"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "go.mod").write_text("module example.test/staged\n\ngo 1.21\n")
    (shim / "staged.go").write_text(f'package staged\n\nconst Version = "{version}"\n')
    return shims


def test_single_replacements_override_the_named_go_mod_and_may_point_at_a_shim_of_ours(go_env):
    """The staging directory replacement is overridden (no local_replace_version needed) by a
    nested module from the shims folder, copied into the wrapper with its go.mod."""
    shims = _staged_shim(go_env / "go-shims")
    spec = upstream_hello(replace_from=UPSTREAM, replaces=(("example.test/staged", "./shims/staged"),), shims=shims)
    built = gobuild.build(spec, go_env / "cache")
    out = subprocess.run([built.binary("hello")], capture_output=True, text=True, check=True).stdout
    assert out == "lib v1.1.0 staged shim\n"


def test_the_key_follows_the_shims_content_not_their_folder(tmp_path):
    """Two checkouts in two places share a build; a changed shim builds anew."""

    def key(shims: Path) -> str:
        spec = upstream_hello(replaces=(("example.test/staged", "./shims/staged"),), shims=shims)
        return gobuild.cache_key(spec, "go1.0", gobuild.source_snapshot(spec))

    here, there = _staged_shim(tmp_path / "a" / "go-shims"), _staged_shim(tmp_path / "b" / "go-shims")
    assert key(here) == key(there)
    (there / "unused").mkdir()
    (there / "unused" / "unused.go").write_text("package unused\n")
    assert key(here) == key(there)  # a stand-in no replacement names is neither copied nor hashed
    _staged_shim(there, "changed")
    assert key(here) != key(there)


def test_a_build_held_by_another_process_is_waited_for_within_the_bound(tmp_path, monkeypatch):
    """The second builder of a module version waits for the first, bounded, and names what held it."""
    import fcntl

    spec = gobuild.WrapperModule(name="hello", version="v1", packages=("example.com/hello",))
    lock = tmp_path / ".lock"
    holder = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX)
    monkeypatch.setattr(gobuild, "BUILD_TIMEOUT", 1.5)
    try:
        with pytest.raises(SetupError, match=r"another build of hello v1 to release .*\.lock.*delete the directory"):
            with gobuild._locked(lock, spec):
                pass
    finally:
        os.close(holder)
    with gobuild._locked(lock, spec):  # control: released, it is taken at once
        pass
