"""Semantics of the MicroPython `bluetooth` module in the real interpreter (host side recorded).

Each test runs MicroPython code against the module and checks what it printed and what it
sent on the ``ble`` channel; host events are injected as the bridge would send them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.radio.mpboard import ChannelBoard

pytestmark = pytest.mark.timeout(60)

SETUP = """
import bluetooth
ble = bluetooth.BLE()
events = []
def irq(ev, data):
    events.append((ev, tuple(bytes(x) if isinstance(x, memoryview) else x for x in data)))
ble.irq(irq)
"""


@pytest.fixture
async def mp() -> AsyncIterator[tuple[ChannelBoard, list[dict[str, object]]]]:
    board = ChannelBoard("api-1")
    sent: list[dict[str, object]] = []
    board.on("ble", lambda payload: sent.append(json.loads(payload)))
    await board.start()
    await board.exec(SETUP)
    try:
        yield board, sent
    finally:
        await board.stop()


async def run(board: ChannelBoard, code: str) -> str:
    await board.exec(code + "\nprint('END')")
    lines = []
    while (line := await board.output.get()) != "END":
        lines.append(line)
    return "\n".join(lines)


async def test_everything_needs_active_first(mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, sent = mp
    out = await run(board, """
for call in (lambda: ble.gap_advertise(100000), lambda: ble.config('mac'),
             lambda: ble.gatts_register_services(()), lambda: ble.gap_disconnect(1)):
    try:
        call()
        print('no error')
    except OSError as e:
        print('errno', e.errno)
print(ble.active())
""")
    assert out.splitlines() == ["errno 19"] * 4 + ["False"]
    assert [m["op"] for m in sent] == ["hello"]


async def test_uuid_parsing(mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, _ = mp
    out = await run(board, """
U = bluetooth.UUID
print(U(0x180F) == U('180f'), U('180F') == U(b'\\x0f\\x18'), repr(U(0x2902)))
print(U('6C3E0001-4A5E-4C1B-9B9E-0C1C1CE0ED9E') == U('6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e'))
for bad in (0x10000, -1, 'xyz', '6c3e00014a5e4c1b9b9e0c1c1ce0ed9e', b'abc'):
    try:
        U(bad)
        print('accepted', bad)
    except ValueError:
        print('ValueError')
try:
    U(1.5)
except TypeError:
    print('TypeError')
""")
    assert out.splitlines() == ["True True UUID(0x2902)", "True"] + ["ValueError"] * 5 + ["TypeError"]


async def test_register_services_handles_and_message(mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, sent = mp
    out = await run(board, """
U = bluetooth.UUID
ble.active(True)
svc1 = (U(0x180F), ((U(0x2A19), bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY),))
svc2 = (U('6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e'), (
    (U('6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e'), bluetooth.FLAG_WRITE, ((U(0x2901), bluetooth.FLAG_READ),)),))
print(ble.gatts_register_services((svc1, svc2)))
try:
    ble.gatts_register_services((('180f', ()),))
except TypeError:
    print('TypeError')
""")
    lines = out.splitlines()
    assert lines[0] == "((14,), (18, 19))"
    assert lines[1] == "TypeError"
    services = next(m for m in sent if m["op"] == "services")["services"]
    assert services == [
        {"uuid": "180f", "chars": [{"uuid": "2a19", "flags": 0x12, "handle": 14, "descs": []}]},
        {"uuid": "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e", "chars": [
            {"uuid": "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e", "flags": 0x08, "handle": 18,
             "descs": [{"uuid": "2901", "flags": 0x02, "handle": 19}]}]}]


async def test_irq_tuples_and_local_values(mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, sent = mp
    await run(board, """
ble.active(True)
((H,),) = ble.gatts_register_services(((bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), bluetooth.FLAG_WRITE | bluetooth.FLAG_NOTIFY),)),))
""")
    for ev in ({"ev": "connect", "conn": 3, "addr_type": 1, "addr": "c0ffee000001"},
               {"ev": "mtu", "conn": 3, "mtu": 185},
               {"ev": "write", "conn": 3, "handle": 14, "value": "0102"},
               {"ev": "mtu", "conn": 9, "mtu": 50},  # unknown conn: ignored
               {"ev": "disconnect", "conn": 3, "addr_type": 1, "addr": "c0ffee000001"}):
        board.send("ble", json.dumps(ev))
    out = await run(board, "print(events)\nprint(ble.gatts_read(H))")
    lines = out.splitlines()
    assert lines[-2] == ("[(1, (3, 1, b'\\xc0\\xff\\xee\\x00\\x00\\x01')), (21, (3, 185)), (3, (3, 14)), "
                         "(2, (3, 1, b'\\xc0\\xff\\xee\\x00\\x00\\x01'))]")
    assert lines[-1] == "b'\\x01\\x02'"


async def test_notify_needs_connection_and_sends_local_value(
        mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, sent = mp
    await run(board, """
ble.active(True)
((H,),) = ble.gatts_register_services(((bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY),)),))
""")
    out = await run(board, """
try:
    ble.gatts_notify(1, H, b'x')
except OSError as e:
    print('errno', e.errno)
""")
    assert out == "errno -128"
    board.send("ble", json.dumps({"ev": "connect", "conn": 1, "addr_type": 1, "addr": "c00000000001"}))
    await run(board, "ble.gatts_write(H, b'abc')\nble.gatts_notify(1, H)\nble.gatts_notify(1, H, b'zz')")
    ops = [m for m in sent if m["op"] in ("write", "notify")]
    assert ops == [{"op": "write", "handle": 14, "data": "616263", "update": False},
                   {"op": "notify", "conn": 1, "handle": 14, "data": "616263"},
                   {"op": "notify", "conn": 1, "handle": 14, "data": "7a7a"}]
    out = await run(board, """
try:
    ble.gatts_notify(1, 99)
except OSError as e:
    print('errno', e.errno)
print(ble.gap_disconnect(1), ble.gap_disconnect(7))
""")
    assert out.splitlines() == ["errno 22", "True False"]


async def test_append_buffer_drains_on_read(mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, sent = mp
    await run(board, """
ble.active(True)
((H,),) = ble.gatts_register_services(((bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), bluetooth.FLAG_WRITE),)),))
ble.gatts_set_buffer(H, 64, True)
""")
    assert {"op": "buffer", "handle": 14, "len": 64, "append": True} in sent
    board.send("ble", json.dumps({"ev": "connect", "conn": 1, "addr_type": 1, "addr": "c00000000001"}))
    board.send("ble", json.dumps({"ev": "write", "conn": 1, "handle": 14, "value": "6162"}))
    out = await run(board, "print(ble.gatts_read(H), ble.gatts_read(H))")
    assert out == "b'ab' b''"
    assert sent[-1] == {"op": "write", "handle": 14, "data": "", "update": False}


async def test_advertising_payload_rules(mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, sent = mp
    out = await run(board, """
ble.active(True)
ble.gap_advertise(250000, adv_data=b'\\x02\\x01\\x06', resp_data=b'\\x03\\x09ab')
ble.gap_advertise(100000)  # None: reuse the previous payloads
try:
    ble.gap_advertise(100000, adv_data=bytes(32))
except OSError as e:
    print('errno', e.errno)
ble.gap_advertise(None)
""")
    assert out == "errno 5"
    advs = [m for m in sent if m["op"] == "adv"]
    assert advs == [
        {"op": "adv", "interval_us": 250000, "adv": "020106", "resp": "03096162", "connectable": True},
        {"op": "adv", "interval_us": 100000, "adv": "020106", "resp": "03096162", "connectable": True},
        {"op": "adv", "interval_us": None}]


async def test_config(mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, sent = mp
    out = await run(board, """
print(ble.config('gap_name'), ble.config('mtu'))
ble.active(True)
ble.config(gap_name='sl-9', mtu=247)
print(ble.config('gap_name'), ble.config('mtu'), ble.config('mac')[0], len(ble.config('mac')[1]))
for bad in (lambda: ble.config('nope'), lambda: ble.config(mtu=22), lambda: ble.config(nope=1)):
    try:
        bad()
    except ValueError:
        print('ValueError')
try:
    ble.config('mtu', 'gap_name')
except TypeError:
    print('TypeError')
ble.active(False)
print(ble.active())
""")
    assert out.splitlines() == ["b'MPY ESP32' 256", "b'sl-9' 247 1 6", "ValueError", "ValueError",
                                "ValueError", "TypeError", "False"]
    assert {"op": "config", "name": "sl-9"} in sent and {"op": "config", "mtu": 247} in sent
    assert sent[-1] == {"op": "active", "on": False}


async def test_irq_handler_exception_is_reported_not_fatal(
        mp: tuple[ChannelBoard, list[dict[str, object]]]) -> None:
    board, _ = mp
    await run(board, "ble.active(True)\ndef bad(ev, data):\n    raise RuntimeError('boom')\nble.irq(bad)")
    board.send("ble", json.dumps({"ev": "connect", "conn": 1, "addr_type": 1, "addr": "c00000000001"}))
    assert (await board.expect("Unhandled")) == "Unhandled exception in IRQ callback handler"
    out = await run(board, "print(ble.active())")
    assert "RuntimeError: boom" in out  # the traceback is printed, as on the board
    assert out.splitlines()[-1] == "True"
