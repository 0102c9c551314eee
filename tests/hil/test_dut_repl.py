"""DUT transport against a real MicroPython REPL (wasm interpreter) behind a pty."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.dut import Dut
from hil.dut.errors import (
    DeviceConnectError,
    DeviceDisconnectedError,
    DeviceError,
    DevicePathError,
    DeviceResultError,
    DeviceTimeoutError,
)

from hil_peer import NetworkPortServer, ReplPeer

pytestmark = pytest.mark.timeout(90)
MAX_EXAMPLES = 60 if os.environ.get("CIVICEDGE_FULL") == "1" else 8


def test_exec_returns_output_and_keeps_globals(repl_peer: ReplPeer) -> None:
    with Dut(repl_peer.path) as dut:
        assert dut.exec("x = 20\nprint('x is', x)") == "x is 20\n"
        assert dut.exec("print(x + 1)") == "21\n"
        assert dut.eval("x * 2") == 40


def test_eval_returns_python_values(repl_peer: ReplPeer) -> None:
    with Dut(repl_peer.path) as dut:
        assert dut.eval("{'a': b'\\x00\\xff', 'b': (1, -2, None), 'c': [True, 'ü']}") == {
            "a": b"\x00\xff", "b": (1, -2, None), "c": [True, "ü"]}
        assert dut.eval("2 ** 70") == 2 ** 70
        with pytest.raises(DeviceResultError) as err:
            dut.eval("object()")
        assert "object" in err.value.output


def test_device_exception_carries_device_traceback(repl_peer: ReplPeer) -> None:
    with Dut(repl_peer.path) as dut:
        with pytest.raises(DeviceError) as err:
            dut.exec("print('before')\ndef f(v):\n    raise ValueError('bad reading %d' % v)\nf(7)")
        e = err.value
        assert (e.exception_type, e.exception_message) == ("ValueError", "bad reading 7")
        assert 'File "<stdin>", line 3, in f' in e.traceback and e.stdout == "before\n"
        assert "--- device traceback ---" in str(e) and "line 3, in f" in str(e)
        assert dut.eval("1 + 1") == 2  # the session survives a device exception


def test_timeout_is_not_a_disconnect_and_the_session_recovers(repl_peer: ReplPeer) -> None:
    with Dut(repl_peer.path) as dut:
        assert dut.eval("1") == 1  # in the raw REPL already: the 0.5 s are the exec's alone (entering it on a
        # loaded machine could take them, and the timeout was then the raw REPL's)
        with pytest.raises(DeviceTimeoutError) as err:
            dut.exec("import time\ntime.sleep(2)\nprint('late')", timeout_s=0.5)
        assert err.value.operation == "exec" and err.value.timeout_s == 0.5
        assert dut.eval("'back'", timeout_s=20) == "back"


def test_disconnect_is_reported_as_such(repl_peer: ReplPeer) -> None:
    dut = Dut(repl_peer.path)
    assert dut.eval("3") == 3
    repl_peer.hang_up()
    with pytest.raises(DeviceDisconnectedError) as err:
        dut.exec("print(1)", timeout_s=5)
    assert err.value.url == repl_peer.path and err.value.cause
    dut.close()


def test_cannot_open_missing_port() -> None:
    with pytest.raises(DeviceConnectError) as err:
        Dut("/dev/civicedge-no-such-port")
    assert "No such file" in err.value.cause or "could not open" in err.value.cause.lower()


def test_file_write_read_round_trip_binary(repl_peer: ReplPeer) -> None:
    data = bytes(range(256)) * 21  # > 2 write chunks, every byte value
    with Dut(repl_peer.path) as dut:
        dut.write_file("/data/blob.bin", data)
        assert dut.read_file("data/blob.bin") == data
        assert dut.eval("len(open('/data/blob.bin','rb').read())") == len(data)
        assert dut.hash_files(["/data/blob.bin", "/nope"]) == {
            "/data/blob.bin": hashlib.sha256(data).hexdigest(), "/nope": None}
        assert dut.eval("'blob.bin.part' in __import__('os').listdir('/data')") is False
        with pytest.raises(DeviceError) as err:
            dut.read_file("/missing.txt")
        assert err.value.exception_type == "OSError"
        dut.remove_file("/data/blob.bin")
        assert dut.hash_files(["/data/blob.bin"]) == {"/data/blob.bin": None}
        with pytest.raises(DevicePathError):
            dut.write_file("/../etc/passwd", b"")


def test_sync_copies_only_changed_files(repl_peer: ReplPeer) -> None:
    files = {"/main.py": b"print('main')\n", "/lib/civic/__init__.py": b"", "/lib/civic/x/y.py": b"Y = 1\n",
             "/policy.json": b'{"v": 1}'}
    with Dut(repl_peer.path) as dut:
        first = dut.sync_files(files)
        assert set(first.copied) == set(files) and first.unchanged == ()
        second = dut.sync_files(files)
        assert second.copied == () and set(second.unchanged) == set(files)
        changed = dict(files, **{"/lib/civic/x/y.py": b"Y = 2\n", "/new.txt": b"n"})
        progress: list[tuple[int, int]] = []
        third = dut.sync_files(changed, on_copied=lambda done, total: progress.append((done, total)))
        assert set(third.copied) == {"/lib/civic/x/y.py", "/new.txt"}
        assert progress == [(0, 2), (1, 2), (2, 2)]
        assert dut.exec("import sys\nsys.path.append('/lib')\nfrom civic.x import y\nprint(y.Y)") == "2\n"


def test_soft_reset_clears_state(repl_peer: ReplPeer) -> None:
    with Dut(repl_peer.path) as dut:
        dut.exec("marker = 1")
        out = dut.soft_reset()
        assert "soft reboot" in out
        with pytest.raises(DeviceError) as err:
            dut.eval("marker")
        assert err.value.exception_type == "NameError"


literals = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 80), 2 ** 80) | st.text(max_size=12) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(literals, min_size=1, max_size=15))
def test_eval_round_trips_literals(repl_peer: ReplPeer, values: list[object]) -> None:
    with Dut(repl_peer.path) as dut:
        assert dut.eval(repr(values)) == values


@pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")
@pytest.mark.parametrize("rfc", [True, False], ids=["rfc2217", "socket"])
def test_remote_rig_urls(repl_peer: ReplPeer, rfc: bool) -> None:
    """The same transport over the network, as a remote rig (RFC 2217) or QEMU (raw TCP) serves it."""
    server = NetworkPortServer(repl_peer.path, rfc2217=rfc)
    try:
        with Dut(server.url) as dut:
            assert dut.url.startswith("rfc2217://" if rfc else "socket://")
            assert dut.eval("[i * i for i in range(4)]") == [0, 1, 4, 9]
            data = os.urandom(3000)
            dut.write_file("/remote.bin", data)
            assert dut.read_file("/remote.bin") == data
            with pytest.raises(DeviceError) as err:
                dut.exec("raise OSError(5)")
            assert err.value.exception_type == "OSError"
    finally:
        server.close()


def test_ctrl_c_in_the_middle_of_a_file_transfer_is_not_lost(repl_peer: ReplPeer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C arriving after a command was sent but before its answer was read: the clean-up
    exchange in a ``finally`` then failed, and its link error replaced the KeyboardInterrupt (which
    ``flash`` retried: the flash went on and exited 0)."""
    data = bytes(range(256)) * 21  # several chunks
    with Dut(repl_peer.path) as dut:
        real = dut._transport.exec_raw_no_follow
        sent: list[bytes] = []

        def send_then_interrupt(command: bytes) -> None:
            real(command)
            sent.append(command)
            if b"_civic_f.write" in command:
                raise KeyboardInterrupt  # the answer of this chunk is left unread on the line

        monkeypatch.setattr(dut._transport, "exec_raw_no_follow", send_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            dut.write_file("/data/blob.bin", data)
        assert not any(b"_civic_f.close" in c for c in sent)  # nothing more was sent after Ctrl-C
