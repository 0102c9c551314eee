"""Under MicroPython: the device copy of the policy (hil.field.device_policy, what ``civicedge flash``
writes) loads to exactly what the firmware keeps of the full policy, which it still loads too (a board
an older flash tool wrote). Fails if the host's key lists and the firmware's ``_DOC_ONLY`` and
``_DOC_ONLY_TOP`` diverge."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable

from gateway.resources import policy_path
from hil.field.device_policy import device_policy_bytes, doc_only_keys, doc_only_top_keys

_KEPT = (
    "import json\n"
    "from civic import policy\n"
    "print('DOC_ONLY', repr(policy._DOC_ONLY))\n"
    "print('DOC_ONLY_TOP', repr(policy._DOC_ONLY_TOP))\n"
    "for path in ('/flash/full.json', '/flash/policy.json'):\n"
    "    for k in ('streetlight', 'bin'):\n"
    "        p = policy.load(k, path)\n"
    "        kept = {'window_s': p.window_s, 'personal': sorted(p.personal), 'alarms': sorted(p.alarms),\n"
    "                'alarm_fields': sorted([c, list(p.alarm_fields[c])] for c in p.alarm_fields),\n"
    "                'config': sorted(p.config_keys), 'budgets': sorted(p.day_budgets().items()),\n"
    "                'fields': sorted([f, sorted(p.fields[f].items())] for f in p.fields)}\n"
    "        print('KEPT', path, k, json.dumps(kept))\n"
)


def _jsonable(value: Any) -> Any:
    """What json.dumps then json.loads makes of ``value`` (tuples become lists), for comparing with the device."""
    return json.loads(json.dumps(value))


def test_the_device_copy_loads_to_what_the_firmware_keeps_of_the_full_policy(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    full = policy_path().read_bytes()
    copy = device_policy_bytes(full)
    (flash / "full.json").write_bytes(full)
    (flash / "policy.json").write_bytes(copy)
    lines = flash_run(_KEPT, flash).stdout.splitlines()

    # the host reads the very tuple the firmware drops
    device_keys = ast.literal_eval(next(x for x in lines if x.startswith("DOC_ONLY ")).split(" ", 1)[1])
    assert device_keys == doc_only_keys()
    device_top = ast.literal_eval(next(x for x in lines if x.startswith("DOC_ONLY_TOP ")).split(" ", 1)[1])
    assert device_top == doc_only_top_keys()
    assert not set(device_top) & set(json.loads(copy))  # the copy holds none of them

    kept = {(path, kind): json.loads(doc) for _, path, kind, doc in
            (x.split(" ", 3) for x in lines if x.startswith("KEPT "))}
    assert len(kept) == 4
    host_copy = json.loads(copy)
    for kind in ("streetlight", "bin"):
        from_full, from_copy = kept[("/flash/full.json", kind)], kept[("/flash/policy.json", kind)]
        # the same rules from either file
        assert from_copy == from_full
        # nothing the device drops is in the copy, and everything it keeps is
        assert from_copy["fields"] == _jsonable(sorted([f, sorted(spec.items())] for f, spec in
                                                       host_copy["kinds"][kind]["fields"].items()))


# json.loads as the firmware calls it, keeping what it returned: the parsed document parse() goes on with
_DROPPED = (
    "import json as real\n"
    "from civic import policy\n"
    "held = []\n"
    "class Spy:\n"
    "    @staticmethod\n"
    "    def loads(text):\n"
    "        doc = real.loads(text)\n"
    "        held.append(doc)\n"
    "        return doc\n"
    "policy.json = Spy\n"
    "for path in ('/flash/full.json', '/flash/policy.json'):\n"
    "    del held[:]\n"
    "    p = policy.load('bin', path)\n"
    "    print('LEFT', path, ','.join(sorted(held[0])), len(p.fields))\n"
)


def test_the_firmware_drops_the_policys_text_for_people_at_load(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """The full file (a board an older flash wrote) and the device copy: after load the parsed policy
    holds no statement, not_collected or recipients (heap the firmware has no use for)."""
    flash = tmp_path / "flash"
    flash.mkdir()
    full = policy_path().read_bytes()
    assert set(doc_only_top_keys()) <= set(json.loads(full))
    (flash / "full.json").write_bytes(full)
    (flash / "policy.json").write_bytes(device_policy_bytes(full))
    lines = [x.split(" ", 3) for x in flash_run(_DROPPED, flash).stdout.splitlines() if x.startswith("LEFT ")]
    assert [x[1] for x in lines] == ["/flash/full.json", "/flash/policy.json"]
    for _, _, left, n_fields in lines:
        assert left.split(",") == ["defaults", "kinds", "version"]
        assert int(n_fields) == len(json.loads(full)["kinds"]["bin"]["fields"])
