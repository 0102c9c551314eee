"""main.py boots on whatever the link-test request raises (review L2).

``take_link_test`` runs before the watchdog starts; a partly copied firmware (an older ``civic``
without ``LINK_TEST``, an older ``hal/boot`` without ``take_link_test``) or a MemoryError there
stopped main() and left the board idle at the REPL for good. The unchanged boot.py and main.py in
MicroPython, with the firmware modules altered as a partial copy would leave them.
"""

from __future__ import annotations

import binascii
import json

import pytest
from test_boot import Mpy, last_json, run

IDENTITY = {"id": "sl-0001", "kind": "streetlight", "zone": "z1", "lat": "52.37", "lon": "4.89",
            "key": binascii.hexlify(bytes(range(32))).decode()}

BREAK = {
    # hal/boot from before the link test
    "old hal/boot": "from civic.hal import boot as b\ndel b.take_link_test\n",
    # civic/__init__ from before the link test (take_link_test imports LINK_TEST from it)
    "old civic": "import civic\ndel civic.LINK_TEST\n",
    "memory": ("from civic.hal import boot as b\n"
               "def _oom(machine, root='/'):\n    raise MemoryError('memory allocation failed')\n"
               "b.take_link_test = _oom\n"),
}


@pytest.mark.parametrize("case", sorted(BREAK))
def test_a_link_test_that_raises_is_skipped_and_the_board_starts(mpy: Mpy, case: str) -> None:
    res = run(mpy, f"""
write_board(CFG)
with open("/identity.json", "w") as f:
    f.write({json.dumps(json.dumps(IDENTITY))})
with open("/linktest", "w") as f:
    f.write("check")
FakeMachine.cause = FakeMachine.SOFT_RESET
boot()
{BREAK[case]}
from civic.apps import runtime
async def ran(rt):          # the runtime was built: stop here instead of running for ever
    print(json.dumps(["ran", rt.link_test]))
runtime.Runtime.run = ran
exec(MAIN_SRC, {{"__name__": "__main__"}})
""")
    assert "civicedge: link test skipped: " in res.stdout
    assert "civicedge: streetlight sl-0001 running" in res.stdout, res.stdout
    assert last_json(res) == ["ran", False]


def test_a_request_with_the_whole_firmware_is_answered(mpy: Mpy) -> None:
    # the guard changes nothing when the link test works
    res = run(mpy, f"""
write_board(CFG)
with open("/identity.json", "w") as f:
    f.write({json.dumps(json.dumps(IDENTITY))})
with open("/linktest", "w") as f:
    f.write("check")
FakeMachine.cause = FakeMachine.SOFT_RESET
boot()
from civic.apps import runtime
async def ran(rt):
    print(json.dumps(["ran", rt.link_test]))
runtime.Runtime.run = ran
exec(MAIN_SRC, {{"__name__": "__main__"}})
""")
    assert "skipped" not in res.stdout and last_json(res) == ["ran", True]
