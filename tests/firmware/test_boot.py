"""boot.py, main.py and the boot decisions (recovery pin, crash counter, safe mode) in MicroPython."""

from __future__ import annotations

import json
from typing import Any, Callable

from gateway.resources import firmware_dir
from hil.sim.mprun import MpResult
from test_apps_support import FAKE_MACHINE, prelude

Mpy = Callable[..., MpResult]
BOOT_SRC = (firmware_dir() / "boot.py").read_text()
MAIN_SRC = (firmware_dir() / "main.py").read_text()

SETUP = """
import sys
sys.modules["machine"] = FakeMachine
with open("/policy.json", "w") as f:
    f.write(POLICY_TEXT)
def write_board(cfg):
    with open("/board.json", "w") as f:
        f.write(json.dumps(cfg))
def boot():
    exec(BOOT_SRC, {"__name__": "__main__"})
"""


def run(mpy: Mpy, body: str, board: str = "streetlight-esp32") -> MpResult:
    code = (prelude(board) + FAKE_MACHINE + f"BOOT_SRC = {BOOT_SRC!r}\nMAIN_SRC = {MAIN_SRC!r}\n" + SETUP + body)
    return mpy(code)


def last_json(res: MpResult) -> Any:
    """The last printed JSON array (main() prints after the script, from the event loop)."""
    return json.loads([line for line in res.stdout.splitlines() if line.startswith("[")][-1])


def test_crash_counter_enters_safe_mode_after_limit_and_clears(mpy: Mpy) -> None:
    res = run(mpy, """
from civic.hal import boot as b
modes = []
for i in range(5):                       # five resets that never reached a stable run
    FakeMachine.cause = FakeMachine.WDT_RESET
    modes.append(b.decide(FakeMachine, CFG))
FakeMachine.cause = FakeMachine.SOFT_RESET
soft = [b.decide(FakeMachine, CFG), b.CRASHES]   # a soft reset is not counted
b.mark_stable(FakeMachine)
FakeMachine.cause = FakeMachine.PWRON_RESET
fresh = [b.decide(FakeMachine, CFG), b.CRASHES]
foreign = b.parse_count(b"xyz")
print(json.dumps([modes, soft, fresh, foreign, list(FakeMachine.RTC().memory())]))
""")
    modes, soft, fresh, foreign, mem = last_json(res)
    assert modes == ["normal", "normal", "normal", "safe", "safe"]
    assert soft == ["safe", 5]
    assert fresh == ["normal", 1] and foreign == 0
    assert mem == [ord("C"), ord("E"), 1]


def test_recovery_pin_held_skips_main(mpy: Mpy) -> None:
    res = run(mpy, """
write_board(CFG)
class HeldPin(_PinFactory):
    def __init__(self, id, mode=None, pull=None, value=None):
        _PinFactory.__init__(self, id, mode, pull, value)
        self.v = 0 if id == CFG["recovery"]["pin"] else 1     # BOOT button pressed (low)
FakeMachine.Pin = HeldPin
boot()
from civic.hal import boot as b
exec(MAIN_SRC, {"__name__": "__main__"})
print(json.dumps([b.MODE, FakeMachine.pins[0].pull == FakeMachine.Pin.PULL_UP]))
""")
    assert "recovery pin held" in res.stdout
    assert "civicedge: recovery mode: firmware not started" in res.stdout
    assert last_json(res) == ["recovery", True]


def test_safe_mode_message_from_boot_and_main(mpy: Mpy) -> None:
    res = run(mpy, """
write_board(CFG)
FakeMachine.RTC().memory(b"CE" + bytes([3]))   # three unclean boots before this one
FakeMachine.cause = FakeMachine.WDT_RESET
boot()
exec(MAIN_SRC.replace("SAFE_RETRY_S = 900", "SAFE_RETRY_S = 0"), {"__name__": "__main__"})
""")
    assert "safe mode after 4 unclean boots: firmware not started" in res.stdout
    assert "civicedge: safe mode after 4 unclean boots; fix, then" in res.stdout  # printed by main() on the loop


def test_unprovisioned_board_prints_how_to_provision_and_idles(mpy: Mpy) -> None:
    res = run(mpy, """
write_board(CFG)
boot()
exec(MAIN_SRC, {"__name__": "__main__"})
""")
    assert "not provisioned: /identity.json is missing" in res.stdout
    assert "civicedge provision" in res.stdout
    assert "running" not in res.stdout


def test_missing_board_json_is_reported_and_boot_survives(mpy: Mpy) -> None:
    res = run(mpy, """
boot()
exec(MAIN_SRC, {"__name__": "__main__"})
""")
    assert "cannot start: board.json: cannot read /board.json" in res.stdout


def test_bad_identity_is_reported(mpy: Mpy) -> None:
    res = run(mpy, """
write_board(CFG)
with open("/identity.json", "w") as f:
    f.write(json.dumps({"id": "sl-1", "kind": "streetlight", "key": "zz"}))
boot()
exec(MAIN_SRC, {"__name__": "__main__"})
""")
    assert "cannot start: identity: key is not hex" in res.stdout


def test_battery_board_in_safe_mode_sleeps_instead_of_idling(mpy: Mpy) -> None:
    res = run(mpy, """
write_board(CFG)
FakeMachine.RTC().memory(b"CE" + bytes([7]))
FakeMachine.cause = FakeMachine.WDT_RESET
boot()
exec(MAIN_SRC.replace("SAFE_REPL_S = 120", "SAFE_REPL_S = 0"), {"__name__": "__main__"})
import asyncio
async def report():
    await asyncio.sleep_ms(50)
    # it sleeps with the crash count cleared: the wake is a fresh try, not safe mode for good
    print(json.dumps([FakeMachine.slept, list(FakeMachine.RTC().memory())]))
asyncio.create_task(report())
""", board="bin-esp32c3")
    assert "battery board: REPL for 0 s, then deep sleep for 3600 s" in res.stdout
    assert last_json(res) == [[3600000], [ord("C"), ord("E"), 0]]


def test_mains_board_in_safe_mode_retries_with_a_fresh_count(mpy: Mpy) -> None:
    """A streetlight after a reset storm: safe mode, then after SAFE_RETRY_S a reset with the crash
    counter cleared, so it runs again once the storm is over (Ctrl-C at the REPL cancels the retry)."""
    res = run(mpy, """
write_board(CFG)
FakeMachine.RTC().memory(b"CE" + bytes([3]))
FakeMachine.cause = FakeMachine.WDT_RESET
boot()
exec(MAIN_SRC.replace("SAFE_RETRY_S = 900", "SAFE_RETRY_S = 0"), {"__name__": "__main__"})
import asyncio
async def report():
    await asyncio.sleep_ms(50)
    print(json.dumps([list(m) for m in FakeMachine.resets]))
asyncio.create_task(report())
""")
    assert "retrying in 0 s with a fresh crash count" in res.stdout
    assert last_json(res) == [[ord("C"), ord("E"), 0]]
