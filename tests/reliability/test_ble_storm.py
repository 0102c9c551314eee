"""Guarantee 2 (BLE part): a disconnect storm on the BLE link of a virtual bin (unchanged firmware on
real MicroPython, on the virtual radio) feeding a real gateway process: every report the firmware wrote
to its outbox is stored exactly once. The board runs 40x faster than real time; the gateway's clock
follows the simulation (``[sim_clock]``). The storm: a ``ble_disconnect`` fault every 2 wall seconds
(80 virtual seconds) for the whole run, so frames are cut mid-fragment and re-sent after reconnects.

Load: the generated set is taken on a frozen clock with an empty outbox (see the calm phase), the gateway
starts off the event loop with room for a slow start, and its clock is anchored to the board's within half
a round trip. What remains tied to wall time is the run limit: a simulator host that cannot keep up falls
behind SPEED (hil/sim/host.mjs), so reports come later than every 22.5 wall s; the limit's message says
how fast the virtual clock really ran.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest
from hil.scenarios.outbox import OutboxWatch
from procs import GatewayProcess

from gateway.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
SPEED = 40.0
MIN_REPORTS = 3
MIN_FAULTS = 3
RUN_LIMIT_S = 120.0
GATEWAY_START_S = 60.0  # GatewayProcess.start's default 30 s is tight with the suite's other tests on 2 cores


async def test_ble_disconnect_storm_loses_and_doubles_nothing(tmp_path: Path) -> None:
    import hil.sim.board as board_mod
    import hil.sim.host as host_mod
    import hil.sim.radio.relay as relay_mod
    from hil.boards.variants import write_awake_bin

    relay = relay_mod.start_relay()
    bin_toml = write_awake_bin(tmp_path)
    start_ms = (int(time.time()) // 900 + 1) * 900 * 1000 - 5000  # a window closes 5 virtual s in
    host = host_mod.SimHost(speed=SPEED, start_ms=start_ms)
    board = board_mod.VirtualBoard(bin_toml, device_id="bin-storm", flash_dir=tmp_path / "bin", host=host, seed=5,
                                   radio_url=relay.url, zone="north", lat="52.3790", lon="4.9000")
    watch = OutboxWatch(tmp_path / "bin" / "outbox")
    gw: GatewayProcess | None = None
    faults = 0
    try:
        await host.start()
        await board.start()
        ident = json.loads(board.identity_path.read_text())
        reg = Registry(tmp_path / "data" / "registry")
        reg.add(ident["id"], kind=ident["kind"], zone=ident["zone"], lat=ident["lat"], lon=ident["lon"],
                key=bytes.fromhex(ident["key"]))
        reg.close()
        # The gateway's clock follows the board's: the board read its clock somewhere between w0 and w1, so
        # the middle is off by at most half the round trip (x SPEED), however long a loaded machine makes it.
        w0 = time.time()
        virtual0 = (await board.state())["now"] / 1000.0
        w1 = time.time()
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(
            '[gateway]\nid = "gw-storm"\ndata_dir = "data"\n[storage]\nbatch_ms = 20\n[http]\nenabled = false\n'
            '[ble]\nenabled = true\nbackend = "virtual"\nradio = "%s"\nscan_interval_s = 0.5\n'
            '[sim_clock]\nspeed = %s\nvirtual_at = %r\nwall_at = %r\n' % (relay.url, SPEED, virtual0, (w0 + w1) / 2))
        gw = GatewayProcess(cfg, tmp_path / "gw.log", verbose=1)
        # Off the event loop (start blocks until the gateway's ready line, longer on a loaded machine), with
        # room for a slow start: the simulator's events keep being read meanwhile.
        await asyncio.to_thread(gw.start, GATEWAY_START_S)
        deadline = time.monotonic() + RUN_LIMIT_S
        next_fault = time.monotonic() + 2.0
        # The storm, while the board generates reports. Both bounds: started just before midnight UTC the
        # first window closes with the hour and the day, and three reports come out at once.
        while len(watch.poll()) < MIN_REPORTS or faults < MIN_FAULTS:
            if time.monotonic() >= deadline:
                ran = ((await host.ping())["now"] / 1000.0 - virtual0) / (time.time() - w1)
                raise AssertionError("only %r generated in %.0f s (virtual clock at %.1fx of %sx asked)\n%s"
                                     % (watch.seqs, RUN_LIMIT_S, ran, SPEED, gw.logs()[-2000:]))
            if time.monotonic() >= next_fault:
                await board.fault("ble_disconnect")
                faults += 1
                next_fault += 2.0
            await asyncio.sleep(0.1)
        # Calm: let the outbox drain over BLE (virtual time runs: the firmware's resends need it), then freeze
        # virtual time and look again. A window that closed between the last look and the freeze (a slow
        # round trip to the simulator on a loaded machine is seconds of virtual time) wrote a report not
        # acknowledged yet, counted generated but maybe never stored: drain again until the outbox is
        # empty on a frozen clock, where no report can be generated any more.
        drains = 0
        while True:
            drains += 1
            while watch.pending():
                assert time.monotonic() < deadline + 60, "not drained: %r\n%s" % (watch.pending(), gw.logs()[-3000:])
                await asyncio.sleep(0.2)
            await host.set_speed(None)
            await asyncio.sleep(0.3)  # a report written as the clock stopped shows in the outbox listing
            if not watch.pending():
                break
            await host.set_speed(SPEED)
        generated = set(watch.poll())
        assert gw.terminate() == 0
    finally:
        if gw is not None:
            gw.kill()
        await board.stop()
        await host.close()
        relay.stop()
        watch.close()
    conn = sqlite3.connect(tmp_path / "data" / "reports.sqlite")
    rows = conn.execute("SELECT seq, link FROM reports WHERE device = 'bin-storm'").fetchall()
    conn.close()
    print("\nble storm: %d disconnect faults, %d reports generated, %d stored, %d drain(s), clock read in %.3f s"
          % (faults, len(generated), len(rows), drains, w1 - w0))
    assert faults >= MIN_FAULTS
    assert sorted(s for s, _ in rows) == sorted(generated)
    assert {link.split(":")[0] for _, link in rows} == {"ble"}
    assert "disconnect" in gw.logs().lower()
