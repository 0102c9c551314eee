"""Bad files where the gateway reads a small file by path: a FIFO (no writer) fails instead of hanging,
a device or a file past the size limit is refused instead of read into memory, a document nested too
deeply is a clear error instead of a RecursionError traceback, an over-long registry name a clean
error (audit H3, M7, M8, M9)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from gateway import small_files
from gateway.config.loader import load_config, read_admin_token
from gateway.config.model import SimClockConfig
from gateway.config.sim_clock import FollowFileError, SimClock, read_follow_file
from gateway.errors import ConfigError, RegistryError
from gateway.registry import Registry, read_key_file
from gateway.resources import load_policy
from gateway.web.retention import RetentionFileError, RetentionSettings, parse_retention_file, policy_retention
from hil.cli.main import main

pytestmark = pytest.mark.timeout(60)
TOKEN = "9f2c41d7e8b0a6c35d1e4f7a2b8c9d0e"
DEEP_TOML = "a = " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_JSON = "[" * 100_000 + "]" * 100_000


def _within(call: Callable[[], Any], fifos: list[Path], timeout: float = 5.0) -> Any:
    """``call()``'s result (or the exception it raised), failing when it does not return within
    ``timeout`` s: then the FIFOs get a writer, so the blocked call (the code before the fix) ends."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # returned to the test, which checks it
            out["value"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        for fifo in fifos:  # a reader is blocked on it: a non-blocking writer open succeeds
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        worker.join(5)
        pytest.fail("blocked on a FIFO for more than %.0f s" % timeout)
    return out["value"]


def _config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-files"\ndata_dir = "data"\n[http]\nport = 0\n' + extra)
    return cfg


def _limited_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a child limited to 1 GiB of address space and 60 s: the code before the fix read
    /dev/zero until it ran out of memory, which must not reach the shared host's OOM killer."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], capture_output=True, text=True,
                          timeout=60, preexec_fn=limit, cwd=tmp_path)


# --- the config file (--config) ---

def test_a_fifo_config_nobody_writes_to_fails_instead_of_hanging(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(small_files, "PIPE_WAIT_S", 0.5)
    fifo = tmp_path / "gateway.toml"
    os.mkfifo(fifo, 0o600)
    exc = _within(lambda: load_config(fifo), [fifo])
    assert isinstance(exc, ConfigError) and exc.reason == "bad_path", exc
    assert str(exc) == "cannot read config %s: is a FIFO no program wrote to within 0.5 s" % fifo


def test_a_config_from_a_pipe_still_loads(tmp_path: Path) -> None:
    """``--config <(...)``: the shell passes /dev/fd/N, a pipe; it is read (bounded), not refused."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, ('[gateway]\nid = "gw-pipe"\ndata_dir = "%s"\n' % (tmp_path / "data")).encode())
        os.close(write_end)
        cfg = load_config(Path("/proc/self/fd/%d" % read_end))
    finally:
        os.close(read_end)
    assert cfg.id == "gw-pipe"


def test_a_config_larger_than_the_limit_is_refused_not_read(tmp_path: Path) -> None:
    cfg = tmp_path / "big.toml"
    with cfg.open("wb") as f:
        f.truncate(small_files.CONFIG_MAX + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.reason == "bad_path"
    assert str(info.value) == "cannot read config %s: larger than 1 MiB, the most this file may hold" % cfg


def test_check_with_dev_zero_as_config_is_refused(tmp_path: Path) -> None:
    result = _limited_cli(["gateway", "run", "--config", "/dev/zero", "--check"], tmp_path)
    assert result.returncode != 0
    assert "cannot read config /dev/zero: is a character device, not a regular file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_nested_too_deeply_is_a_syntax_error_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "deep.toml"
    cfg.write_text(DEEP_TOML)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.reason == "syntax"
    assert str(info.value).startswith("%s: nested too deeply" % cfg)


def test_nesting_at_the_limit_passes_and_one_deeper_is_refused() -> None:
    small_files.check_depth(json.loads("[" * small_files.MAX_DEPTH + "]" * small_files.MAX_DEPTH))
    with pytest.raises(small_files.NestedTooDeeplyError):
        small_files.check_depth(json.loads("[" * (small_files.MAX_DEPTH + 1) + "]" * (small_files.MAX_DEPTH + 1)))


# --- files the config names ---

def test_an_admin_token_fifo_is_refused_at_check(tmp_path: Path) -> None:
    fifo = tmp_path / "admin.token"
    os.mkfifo(fifo, 0o600)
    cfg = _config(tmp_path, 'admin_token_file = "admin.token"\n')
    exc = _within(lambda: load_config(cfg), [fifo])
    assert isinstance(exc, ConfigError) and exc.reason == "bad_path", exc
    assert exc.key == "http.admin_token_file"
    assert "cannot read %s %s: is a FIFO, not a regular file" % (exc.key, fifo) in str(exc)


def test_read_admin_token_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "admin.token"
    os.mkfifo(fifo, 0o600)
    exc = _within(lambda: read_admin_token(fifo), [fifo])
    assert isinstance(exc, ConfigError) and exc.reason == "bad_path", exc
    assert str(exc) == "cannot read http.admin_token_file %s: is a FIFO, not a regular file" % fifo


def test_a_symlinked_admin_token_file_is_still_read(tmp_path: Path) -> None:
    real = tmp_path / "secrets" / "token"
    real.parent.mkdir()
    real.write_text(TOKEN + "\n")
    real.chmod(0o600)
    (tmp_path / "admin.token").symlink_to(real)
    assert read_admin_token(tmp_path / "admin.token") == TOKEN


def test_an_admin_token_file_past_the_limit_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + " " * small_files.SECRET_MAX)
    token.chmod(0o600)
    with pytest.raises(ConfigError, match="larger than 64 KiB, the most this file may hold"):
        read_admin_token(token)


def test_a_fifo_as_mqtt_ca_file_is_refused_at_check(tmp_path: Path) -> None:
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo, 0o600)
    cfg = _config(tmp_path, '[mqtt]\nhost = "127.0.0.1"\ntls = true\nca_file = "ca.pem"\n')
    exc = _within(lambda: load_config(cfg), [fifo])
    assert isinstance(exc, ConfigError) and exc.reason == "bad_path", exc
    assert "cannot read %s %s: is a FIFO, not a regular file" % (exc.key, fifo) in str(exc)


# --- [sim_clock] follow_file ---

def test_a_follow_file_fifo_is_refused_at_load(tmp_path: Path) -> None:
    fifo = tmp_path / "clock.json"
    os.mkfifo(fifo, 0o600)
    exc = _within(lambda: read_follow_file(fifo), [fifo])
    assert isinstance(exc, FollowFileError) and exc.reason == "bad_path", exc
    assert str(exc) == "cannot read %s: is a FIFO, not a regular file" % fifo


def test_a_follow_file_replaced_by_a_fifo_keeps_the_clock_running(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    follow = tmp_path / "clock.json"
    follow.write_text(json.dumps({"speed": 1.0, "virtual_at": 1_800_000_000.0, "wall_at": time.time()}))
    clock = SimClock(SimClockConfig(speed=1.0, virtual_at=1_800_000_000.0, wall_at=time.time(), follow_file=follow))
    first = clock()
    follow.unlink()
    os.mkfifo(follow, 0o600)
    clock._next_check = float("-inf")  # look at the file at this call, not 1 s later
    now = _within(clock, [follow])
    assert isinstance(now, float) and now >= first
    assert "is a FIFO, not a regular file; keeping the last clock" in caplog.text


def test_a_follow_file_nested_too_deeply_is_a_clear_error(tmp_path: Path) -> None:
    follow = tmp_path / "clock.json"
    follow.write_text(DEEP_JSON)
    with pytest.raises(FollowFileError) as info:
        read_follow_file(follow)
    assert info.value.reason == "bad_value"
    assert str(info.value).startswith("%s is not a follow file: nested too deeply" % follow)


# --- retention.json ---

def test_a_retention_file_nested_too_deeply_is_a_clear_error() -> None:
    with pytest.raises(RetentionFileError, match="nested too deeply"):
        parse_retention_file(('{"overrides": %s}' % DEEP_JSON).encode(), policy_retention(load_policy()))


def test_a_retention_file_past_the_limit_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "retention.json"
    path.write_text('{"overrides": []}' + " " * small_files.STATE_MAX)
    with pytest.raises(Exception, match="cannot be read \\(larger than 1 MiB, the most this file may hold\\)"):
        RetentionSettings(load_policy(), path=path)


# --- the registry ---

def test_a_registry_name_too_long_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / ("r" * 300)
    for create in (False, True):
        with pytest.raises(RegistryError) as info:
            Registry(path, create=create)
        assert info.value.reason == "bad_path"
        assert str(info.value) == "cannot open registry %s: File name too long" % path


def test_devices_list_with_a_registry_name_too_long(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / ("r" * 300)
    assert main(["gateway", "devices", "--registry", str(path), "list"]) != 0
    err = capsys.readouterr().err
    assert "error (bad_path): cannot open registry %s: File name too long" % path in err, err


# read_key_file in a child limited to 1 GiB of address space; prints its error and the bytes it read
# (the kernel's count, /proc/self/io rchar, taken around the call only)
_READ_KEY_CHILD = """
import sys
from pathlib import Path
from gateway.errors import RegistryError
from gateway.registry import read_key_file

def rchar():
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])

before = rchar()
try:
    read_key_file(Path(sys.argv[1]), regular_only=sys.argv[2] == "1")
except RegistryError as exc:
    print(exc)
print(rchar() - before)
"""


@pytest.mark.parametrize("regular_only", [False, True])
def test_a_key_file_is_read_no_further_than_a_key(tmp_path: Path, regular_only: bool) -> None:
    big = tmp_path / "key.hex"
    with big.open("wb") as f:
        f.truncate(1 << 32)  # sparse: read whole (as before), 4 GiB, past the child's address space
    result = subprocess.run([sys.executable, "-c", _READ_KEY_CHILD, str(big), "1" if regular_only else "0"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)))
    assert result.returncode == 0, result.stderr
    error, read = result.stdout.splitlines()
    assert error == "key file %s does not hold a 32-byte key (64 hex chars or 32 raw bytes)" % big
    assert int(read) < 1 << 20, read  # a key file holds 4 KiB at most: read no further than that, not 4 GiB


def test_devices_add_with_dev_zero_as_key_file_is_refused(tmp_path: Path) -> None:
    result = _limited_cli(["gateway", "devices", "--registry", str(tmp_path / "reg"), "add", "--id", "bin-z",
                           "--kind", "bin", "--zone", "north", "--location", "52.37,4.89",
                           "--key-file", "/dev/zero"], tmp_path)
    assert result.returncode != 0
    assert "key file /dev/zero does not hold a 32-byte key" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
