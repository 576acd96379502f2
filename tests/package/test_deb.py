"""The Debian package: `make deb` builds it, lintian passes it, dpkg installs it.

The install runs in a throwaway root: a private mount namespace with overlays on /usr, /etc
and /var (tmpfs upper layers), and a new network namespace. dpkg installs into this system's
own tree and database, so its Depends are checked against real Debian packages and awp runs
on Debian's python3 with python3-configobj, -rich and -iptables, not on the checkout's venv;
everything written disappears with the namespace. Needs root; fails (never skips) without.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
README = REPO / "packaging" / "debian" / "README.md"


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["sh", str(REPO / "packaging" / "debian" / "build.sh"), str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path.is_file() and path.name.endswith("_all.deb")
    return path


@pytest.fixture(scope="module")
def installed(deb, tmp_path_factory) -> Path:
    """Results of tests/package/install.sh: one NAME.out/.err/.rc per step."""
    if os.geteuid() != 0:
        pytest.fail("the package test needs root (mount and network namespaces, dpkg)", pytrace=False)
    work = tmp_path_factory.mktemp("install")
    scratch, out = work / "scratch", work / "out"
    scratch.mkdir()
    out.mkdir()
    shutil.copy(deb, work / deb.name)
    r = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "sh", str(HERE / "install.sh"),
                        str(work / deb.name), str(scratch), str(out)],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def step(out: Path, name: str, ok: bool = True) -> str:
    rc = int((out / f"{name}.rc").read_text())
    text = (out / f"{name}.out").read_text()
    if ok:
        assert rc == 0, f"{name}: exit {rc}\n{text}{(out / f'{name}.err').read_text()}"
    return text


def contents(deb: Path) -> dict[str, str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        rows[fields[5].removeprefix("./").split(" -> ")[0].rstrip("/")] = fields[0]
    return rows


def test_package_holds_the_program_units_pages_and_examples(deb):
    files = contents(deb)
    for path in ("usr/sbin/awp", "usr/bin/knock.sh", "usr/lib/python3/dist-packages/awp/cli.py",
                 "usr/lib/python3/dist-packages/awp/configspec.ini", "lib/systemd/system/awp.service",
                 "lib/systemd/system/awp-knockd.service", "etc/awp/config", "var/awp/etc", "var/awp/var",
                 "usr/share/doc/awp/copyright", "usr/share/doc/awp/changelog.gz"):
        assert path in files, path
    for page in (REPO / "man").glob("*.[0-9]"):
        assert f"usr/share/man/man{page.suffix[1:]}/{page.name}.gz" in files, page.name
    assert files["etc/awp/firewall/advanced-portknock-list"] == "-rw-------"
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc")]
    for f2b in (REPO / "etc" / "fail2ban").rglob("*") if (REPO / "etc" / "fail2ban").is_dir() else ():
        if f2b.is_file():
            assert str(f2b.relative_to(REPO)) in files, f2b


def test_control_depends_on_debian_python_packages(deb):
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    depends = re.search(r"^Depends: (.*)$", control, re.M).group(1)
    for pkg in ("python3", "python3-configobj", "python3-rich", "python3-iptables", "python3-redis"):
        assert re.search(rf"(^|, ){pkg}( |,|$)", depends), pkg
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert {"/etc/awp/config", "/etc/awp/firewall/simple-portknock-list",
            "/etc/awp/firewall/advanced-portknock-list"} <= set(conffiles)


def test_lintian_reports_only_explained_overrides(deb):
    lintian = shutil.which("lintian")
    assert lintian, "lintian is required (DEB_PKGS in the Makefile)"
    with tempfile.TemporaryDirectory() as readable:  # pytest's own tmp is root's 0700
        os.chmod(readable, 0o755)
        copy = Path(readable) / deb.name
        shutil.copy(deb, copy)
        os.chmod(copy, 0o644)
        argv = [lintian, "--pedantic", "--show-overrides", str(copy)]
        if os.geteuid() == 0:  # lintian warns when run as root; it needs no privilege
            argv = ["runuser", "-u", "nobody", "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EWIPX]: ", line)]
    assert not tags, "lintian: " + "\n".join(tags)
    overridden = re.findall(r"^O: awp: (\S+)", r.stdout, re.M)
    assert overridden, r.stdout + r.stderr
    explained = README.read_text()
    for tag in overridden:
        assert f"`{tag} " in explained, f"lintian override {tag} is not explained in {README}"


def test_dpkg_installs_and_awp_runs_on_debian_python(installed):
    step(installed, "install")
    module, executable = step(installed, "module").split()
    assert module == "/usr/lib/python3/dist-packages/awp/__init__.py" and executable == "/usr/bin/python3"
    from awp import __version__
    assert step(installed, "version").strip() == f"awp {__version__}"
    files = step(installed, "files").split()
    assert "/usr/sbin/awp" in files and "/etc/awp/config" in files
    assert step(installed, "pycache"), "postinst byte-compiles the modules (py3compile)"


def test_installed_examples_check_and_apply(installed):
    assert "configuration OK: 1 simple door(s), 0 advanced door(s)" in step(installed, "check")
    assert "configuration OK" in step(installed, "check_advanced"), "the 600 advanced list is accepted"
    assert "protected TCP port(s): 22" in step(installed, "apply")
    status = step(installed, "status")
    assert "simple" in status and "7481" in status and "4410" in status and "match the configuration" in status
    frames = re.findall(r"^awp status \d\d:\d\d:\d\d  every 1 s  nftables", step(installed, "watch"), re.M)
    assert len(frames) >= 2, "the live view on Debian's python3-rich, ended by SIGINT with exit 0"


def test_installed_man_pages(installed):
    page = step(installed, "man")
    assert "awp" in page and "SYNOPSIS" in page
    assert step(installed, "man_where").split() == ["/usr/share/man/man8/awp.8.gz",
                                                    "/usr/share/man/man5/awp-portknock-list.5.gz",
                                                    "/usr/share/man/man1/knock.sh.1.gz"]
    step(installed, "man_lint")
    assert (installed / "man_lint.err").read_text() == ""
    assert "usage: knock.sh" in step(installed, "knock_help")


def test_installed_units_verify_with_the_installed_program(installed):
    """systemd-analyze verify checks that ExecStart names an existing executable: here the
    package's /usr/sbin/awp, not a stand-in."""
    step(installed, "verify")
    assert (installed / "verify.err").read_text().strip() == ""


def test_remove_keeps_conffiles_and_purge_deletes_them(installed):
    step(installed, "remove")
    after = step(installed, "after_remove", ok=False)
    assert "'/usr/sbin/awp': No such file" in after
    assert "dist-packages/awp': No such file" in after, "prerm removes the byte code (py3clean)"
    assert "# edited by the test" in after, "an edited conffile survives dpkg -r"
    step(installed, "purge")
    after = step(installed, "after_purge", ok=False)
    assert "'/etc/awp': No such file" in after and "'/var/awp': No such file" in after
