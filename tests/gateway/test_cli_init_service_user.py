"""`civicedge gateway init` run as root for a service (docs/gateway.md, "Running as a service"): the
service user must be able to read the config (and its admin token file) and pass `run --check`.

Before, init made /etc/civicedge 0700 root's, so the documented `sudo -u civicedge ... --check` could not
read the config. The "service user" here is ``nobody`` with its own group; the check runs in a process
that drops to it with setuid after loading its modules (the venv's interpreter may live where that
user cannot reach, as under /root)."""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from procs import REPO

pytestmark = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="needs root: init is run as root, the check as another user")

MARK = "---- as the service user"
# Loads the modules `run --check` imports lazily (a check of a scratch config, as root), then drops to
# the service user and checks the config given.
_CHECK_AS = r"""
import os, sys, tempfile
MARK = %r
from pathlib import Path
from gateway.config import write_example
from hil.cli.main import build_parser, parse_command_line
parser = build_parser()
with tempfile.TemporaryDirectory() as warm:
    write_example(Path(warm) / "gateway.toml")
    warm_args = parse_command_line(parser, ["gateway", "run", "-c", warm + "/gateway.toml", "--check"])
    warm_args.func(warm_args)
args = parse_command_line(parser, ["gateway", "run", "-c", sys.argv[1], "--check"])
uid, gid = int(sys.argv[2]), int(sys.argv[3])
os.setgroups([gid]); os.setgid(gid); os.setuid(uid)
sys.stdout.flush(); sys.stderr.flush()
print(MARK); print(MARK, file=sys.stderr); sys.stdout.flush(); sys.stderr.flush()
sys.exit(args.func(args))
""" % MARK


def _after(text: str) -> str:
    """What the check printed as the service user (not the warm-up's lines)."""
    assert MARK in text, text
    return text.split(MARK, 1)[1]


def _service_user() -> tuple[int, int, str]:
    try:
        user = pwd.getpwnam("nobody")
        group = grp.getgrgid(user.pw_gid).gr_name
    except KeyError:
        pytest.skip("no user nobody (and its group) to stand for the service user")
    return user.pw_uid, user.pw_gid, group


@pytest.fixture
def root_dir() -> Iterator[Path]:
    """A scratch root every user may enter (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="civicedge-init-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _civicedge(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def _as_service_user(root: Path, config: Path, uid: int, gid: int) -> "subprocess.CompletedProcess[str]":
    """The rest of the documented steps (data_dir, an admin token file the user owns, mode 600), then
    `gateway run -c CONFIG --check` as that user."""
    data = root / "var" / "lib" / "civicedge"
    data.mkdir(parents=True)
    for d in (root / "var", root / "var" / "lib"):
        d.chmod(0o755)
    os.chown(data, uid, gid)
    data.chmod(0o700)
    text = config.read_text()
    text = text.replace('data_dir = "data"', 'data_dir = "%s"' % data, 1)
    text = text.replace('# admin_token_file = "admin.token"', 'admin_token_file = "admin.token"', 1)
    text = text.replace("port = 8080", "port = 18531", 1)
    config.write_text(text)
    token = config.parent / "admin.token"
    token.write_text(secrets.token_hex(32) + "\n")
    os.chown(token, uid, gid)
    token.chmod(0o600)
    return subprocess.run([sys.executable, "-c", _CHECK_AS, str(config), str(uid), str(gid)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_init_with_the_service_group_lets_that_user_read_the_config_and_check_it(root_dir: Path) -> None:
    uid, gid, group = _service_user()
    config = root_dir / "etc" / "civicedge" / "gateway.toml"
    done = _civicedge("gateway", "init", "--group", group, str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote %s" % config and done.stderr == ""
    for d in (root_dir / "etc", config.parent):
        st = d.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, gid), d  # group: enter, not write
    st = config.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, gid)
    check = _as_service_user(root_dir, config, uid, gid)
    assert check.returncode == 0, check.stderr
    assert "config OK" in _after(check.stdout)


def test_init_as_root_without_a_group_says_the_exact_next_step(root_dir: Path) -> None:
    """The directory stays root's 0700 (the service user cannot check the config: the bug), and init says
    which commands make it readable; they do."""
    uid, gid, group = _service_user()
    config = root_dir / "etc" / "civicedge" / "gateway.toml"
    done = _civicedge("gateway", "init", str(config))
    assert done.returncode == 0, done.stderr
    etc = root_dir / "etc"
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    fix = "chgrp civicedge %s %s %s && chmod 750 %s %s && chmod 640 %s" % (etc, config.parent, config, etc,
                                                                          config.parent, config)
    assert fix in done.stderr, done.stderr
    assert "civicedge gateway init --force --group civicedge %s" % config in done.stderr
    refused = _as_service_user(root_dir, config, uid, gid)
    assert refused.returncode == 1 and "config OK" not in _after(refused.stdout)
    assert "cannot read config %s: Permission denied" % config in _after(refused.stderr), refused.stderr
    subprocess.run(re.sub(r"^chgrp civicedge", "chgrp %s" % group, fix), shell=True, check=True)
    check = subprocess.run([sys.executable, "-c", _CHECK_AS, str(config), str(uid), str(gid)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "config OK" in _after(check.stdout)


def test_init_refuses_an_unknown_group(root_dir: Path) -> None:
    config = root_dir / "etc" / "gateway.toml"
    done = _civicedge("gateway", "init", "--group", "no-such-group-civicedge", str(config))
    assert done.returncode == 1
    assert "no group 'no-such-group-civicedge' on this system" in done.stderr and "Traceback" not in done.stderr
    assert not config.exists()
