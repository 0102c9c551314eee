"""Under MicroPython: the device refuses, at load, a policy whose people count would leave raw.

QA finding (HIGH): ``civic.policy`` took a field as personal only when its ``release`` was exactly
``noisy_count``, so ``"noisy-count"`` (a typo) or ``"aggregate"`` on a ``personal: true`` field made
``report.build_body`` send the people count as a plain number. The device is the privacy boundary: it
refuses such a policy itself, from the full file and from the stripped copy a board holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from gateway.resources import policy_path
from hil.field.device_policy import device_policy, device_policy_bytes, doc_only_keys

_LOAD = (
    "import os\n"
    "from civic import policy\n"
    "for name in sorted(os.listdir('/flash/cases')):\n"
    "    kind = name.split('.')[0]\n"
    "    try:\n"
    "        p = policy.load(kind, '/flash/cases/' + name)\n"
    "        print('LOADED', name, ','.join(sorted(p.personal)))\n"
    "    except policy.PolicyError as exc:\n"
    "        print('REFUSED', name, exc.field, '|', str(exc))\n"
)

# (file stem: kind.case, kind, field, key, value (None: key removed))
CASES: list[tuple[str, str, str, str, Any]] = [
    ("streetlight.typo", "streetlight", "mot", "release", "noisy-count"),
    ("bin.aggregate_on_personal", "bin", "lid", "release", "aggregate"),
    ("streetlight.missing_personal", "streetlight", "lux", "personal", None),
    ("bin.missing_personal_on_noisy", "bin", "lid", "personal", None),
    ("bin.personal_not_bool", "bin", "fill", "personal", 1),
    ("streetlight.personal_false_noisy", "streetlight", "mot", "personal", False),
    ("bin.unknown_release", "bin", "temp", "release", "mean"),
    ("streetlight.missing_release", "streetlight", "wh", "release", None),
]


def _says(kind: str, field: str, release: Any, personal: Any) -> str:
    """What the device says: the kind, the field, both values as MicroPython shows them, the allowed ones."""
    return ("policy: kind %s field %s: release %r, personal %r (allowed: aggregate, noisy_count; noisy_count "
            "exactly when personal is true)" % (kind, field, release, personal))


def _mutated(case: tuple[str, str, str, str, Any]) -> dict[str, Any]:
    _, kind, field, key, value = case
    doc: dict[str, Any] = json.loads(policy_path().read_bytes())
    spec = doc["kinds"][kind]["fields"][field]
    if value is None:
        del spec[key]
    else:
        spec[key] = value
    return doc


def _run(flash_run: Callable[..., Any], tmp_path: Path, files: dict[str, bytes]) -> dict[str, str]:
    cases = tmp_path / "flash" / "cases"
    cases.mkdir(parents=True)
    for name, data in files.items():
        (cases / name).write_bytes(data)
    out: dict[str, str] = {}
    for line in flash_run(_LOAD, tmp_path / "flash").stdout.splitlines():
        if line.startswith(("LOADED ", "REFUSED ")):
            verdict, name, rest = line.split(" ", 2)
            out[name] = verdict + " " + rest
    assert set(out) == set(files)
    return out


def test_the_device_refuses_each_bad_policy_full_and_stripped(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    files: dict[str, bytes] = {}
    for case in CASES:
        doc = _mutated(case)
        files[case[0] + ".full.json"] = json.dumps(doc).encode()
        # what a board holds: the copy without the documentation keys (made here without the host's check,
        # which refuses these, to see that the device refuses on its own)
        files[case[0] + ".copy.json"] = json.dumps(device_policy(doc, doc_only_keys())).encode()
    out = _run(flash_run, tmp_path, files)
    for case in CASES:
        stem, kind, field = case[:3]
        spec = _mutated(case)["kinds"][kind]["fields"][field]
        says = _says(kind, field, spec.get("release"), spec.get("personal"))
        for variant in ("full", "copy"):
            assert out["%s.%s.json" % (stem, variant)] == "REFUSED %s | %s" % (field, says), stem
    # the values the device names are the bad ones (as MicroPython prints them)
    assert "release 'noisy-count', personal True" in out["streetlight.typo.full.json"]
    assert "release 'aggregate', personal True" in out["bin.aggregate_on_personal.full.json"]
    assert "release 'aggregate', personal None" in out["streetlight.missing_personal.copy.json"]
    assert "release 'noisy_count', personal False" in out["streetlight.personal_false_noisy.copy.json"]
    assert "release 'mean', personal False" in out["bin.unknown_release.full.json"]


def test_a_people_count_copied_as_aggregate_into_a_new_kind_is_refused(flash_run: Callable[..., Any],
                                                                       tmp_path: Path) -> None:
    doc: dict[str, Any] = json.loads(policy_path().read_bytes())
    doc["kinds"]["counter"] = {"window_s": 900, "fields": {
        "ppl": {"personal": True, "release": "aggregate", "report": "win", "quantum": 1},
        "bat": {"personal": False, "release": "aggregate", "report": "win", "quantum": 10}}}
    out = _run(flash_run, tmp_path, {"counter.json": json.dumps(doc).encode()})
    assert out["counter.json"] == "REFUSED ppl | " + _says("counter", "ppl", "aggregate", True)


def test_the_shipped_policy_and_its_device_copy_still_load(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    full = policy_path().read_bytes()
    copy = device_policy_bytes(full)
    for spec in json.loads(copy)["kinds"].values():  # the rule's keys survive the stripping
        assert all("personal" in f and "release" in f for f in spec["fields"].values())
    out = _run(flash_run, tmp_path, {"streetlight.full.json": full, "streetlight.copy.json": copy,
                                     "bin.full.json": full, "bin.copy.json": copy})
    assert out == {"streetlight.full.json": "LOADED mot", "streetlight.copy.json": "LOADED mot",
                   "bin.full.json": "LOADED lid", "bin.copy.json": "LOADED lid"}
