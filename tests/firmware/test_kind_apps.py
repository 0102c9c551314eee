"""The app of a device kind (civic.apps.runtime.APPS) in MicroPython: a kind without an app, a
deep-sleep board of an app without a deep-sleep cycle, and a failing app constructor stop the start
with a line on the console; the deep-sleep wake rule follows the app, not the kind's name; the
firmware's kinds match the policy's and the board loader's."""

from __future__ import annotations

import json
from typing import Callable

from gateway.resources import load_policy
from hil.boards.kinds import KINDS
from hil.sim.mprun import MpResult
from test_apps_support import FAKE_MACHINE, prelude
from test_boot import BOOT_SRC, MAIN_SRC, SETUP

Mpy = Callable[..., MpResult]
T0 = 1767225600  # 2026-01-01 00:00 UTC

# A kind the policy and the firmware's io table know, given the board's own kind's entries.
ADD_KIND = """
from civic.hal import config
def add_kind(name, like):
    config.IO_BY_KIND[name] = config.IO_BY_KIND[like]
    pol = json.loads(POLICY_TEXT)
    pol["kinds"][name] = pol["kinds"][like]
    with open("/policy.json", "w") as f:
        f.write(json.dumps(pol))
    cfg = dict(CFG)
    cfg["kind"] = name
    return cfg
def write_identity(device, kind):
    with open("/identity.json", "w") as f:
        f.write(json.dumps({"id": device, "kind": kind, "zone": "z1", "lat": "52.0", "lon": "4.0", "key": "11" * 32}))
"""


def boot_main(mpy: Mpy, body: str, board: str = "streetlight-esp32") -> str:
    """Run ``body`` (it writes the device files), then boot.py and main.py; the console text."""
    code = (prelude(board) + FAKE_MACHINE + f"BOOT_SRC = {BOOT_SRC!r}\nMAIN_SRC = {MAIN_SRC!r}\n" + SETUP
            + ADD_KIND + body + '\nboot()\nexec(MAIN_SRC, {"__name__": "__main__"})\n')
    return mpy(code).stdout


def test_a_kind_without_an_app_fails_at_start_on_the_console(mpy: Mpy) -> None:
    # QA: a kind added to the policy and the io table but not to the runtime ran the bin app,
    # which died with KeyError inside BinApp ("Task exception wasn't retrieved"), the board idle.
    out = boot_main(mpy, """
write_board(add_kind("air", "streetlight"))
write_identity("air-1", "air")
""")
    assert "civicedge: cannot start: runtime: no app for kind 'air' (apps: bin, streetlight)" in out
    assert "running" not in out and "Task exception" not in out and "Traceback" not in out


def test_a_failing_app_constructor_is_said_on_the_console(mpy: Mpy) -> None:
    # A /board.json without the bin's fill calibration (config.py checks io, not calibration):
    # BinApp raises KeyError, which main.py let kill its task unseen.
    out = boot_main(mpy, """
cfg = dict(CFG)
cfg["cal"] = {k: v for k, v in CFG["cal"].items() if k != "fill"}
write_board(cfg)
write_identity("bin-1", "bin")
""", board="bin-esp32c3")
    assert "civicedge: cannot start: KeyError: fill" in out
    assert "Traceback" in out                      # where it failed, for whoever fixes it
    assert "running" not in out and "Task exception" not in out


def test_a_deep_sleep_board_of_an_app_without_a_deep_sleep_cycle_does_not_start(mpy: Mpy) -> None:
    # The streetlight app has no run_deep: it would run awake with its links on, every PIR wake
    # on the air. Before, the runtime ran it awake whatever the board said.
    out = boot_main(mpy, """
cfg = dict(CFG)
cfg["sleep"] = {"mode": "deep", "interval_s": 300, "wake": ["pir"]}
write_board(cfg)
write_identity("sl-1", "streetlight")
""")
    assert ("civicedge: cannot start: runtime: sleep mode 'deep' but the streetlight app has no deep-sleep cycle"
            in out)
    assert "running" not in out


def test_a_wake_by_a_people_input_alone_keeps_the_radio_off_whatever_the_kind_is_called(mpy: Mpy) -> None:
    # The deep-sleep cycle is chosen by the app (run_deep), not by kind == "bin": the bin's app
    # registered as another kind keeps its links unbuilt at a wake by the lid alone.
    code = prelude("bin-esp32c3") + FAKE_MACHINE + SETUP + ADD_KIND + f"""
from civic.apps import runtime
runtime.APPS["litterbox"] = runtime.APPS["bin"]
cfg = add_kind("litterbox", "bin")
IDENTITY = {{"id": "lb-1", "kind": "litterbox", "zone": "z1", "lat": "52.0", "lon": "4.0", "key": "11" * 32}}
rt = runtime.build(cfg, IDENTITY, FakeMachine, None, root="/", log=lambda s: None)
rt.app.clock = FakeClock({T0} + 60)
rt.app.state["next"] = {T0} + 300                  # no reading due
FakeMachine.cause = FakeMachine.DEEPSLEEP_RESET
FakeMachine.wake = FakeMachine.EXT1_WAKE           # a GPIO ended the sleep
FakeMachine.pins[3].v = 1                          # the lid is open
FakeMachine.pins[4].v = 0                          # upright
co = rt.run()
try:
    while True:
        co.send(None)
except StopIteration:
    pass
print(json.dumps({{"links_built": rt.make_links is None, "lid": rt.app.state["lid"], "slept": FakeMachine.slept}}))
"""
    res = [json.loads(line) for line in mpy(code).stdout.splitlines() if line.startswith("{")]
    assert res == [{"links_built": False, "lid": 1, "slept": [240000]}]


def test_the_firmware_kinds_are_the_policy_kinds_with_the_board_loader_roles(mpy: Mpy) -> None:
    # A kind added in one place only fails here, not on a board in the field.
    code = """
import json
from civic.hal import config
from civic.apps import runtime
out = {}
for kind in runtime.APPS:
    cls = runtime.app_class(kind)[0]
    out[kind] = {"io": sorted(config.IO_BY_KIND.get(kind, ())), "deep": hasattr(cls, "run_deep")}
print(json.dumps({"apps": out, "io_kinds": sorted(config.IO_BY_KIND)}))
"""
    res = json.loads([line for line in mpy(code).stdout.splitlines() if line.startswith("{")][-1])
    policy_kinds = sorted(load_policy()["kinds"])
    assert sorted(res["apps"]) == policy_kinds and res["io_kinds"] == policy_kinds and sorted(KINDS) == policy_kinds
    for kind, spec in KINDS.items():
        assert res["apps"][kind] == {"io": sorted(spec.io), "deep": spec.deep_sleep}, kind
        assert set(spec.people_io) <= set(spec.io), kind

