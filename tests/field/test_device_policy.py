"""The device's copy of the policy (hil.field.device_policy): the full policy less the field keys and
the top-level keys the firmware drops at load, read from the firmware's own ``_DOC_ONLY`` and
``_DOC_ONLY_TOP``, written by every install."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from gateway.resources import firmware_dir, load_policy, policy_path
from hil.field.device_policy import (DevicePolicyError, device_policy, device_policy_bytes, doc_only_keys,
                                     doc_only_top_keys)
from hil.field.firmware_copy import device_files, expected_files, stage_firmware
from hil.sim.errors import FlashError
from hil.sim.flash import install_firmware


_KEEP = object()


def _tree(tmp_path: Path, doc_only: str | None | object = _KEEP, doc_only_top: str | None | object = _KEEP) -> Path:
    """A copy of the firmware tree whose ``civic/policy.py`` assigns ``_DOC_ONLY = doc_only`` and
    ``_DOC_ONLY_TOP = doc_only_top`` (None: not assigned; left out: as shipped)."""
    tree = tmp_path / "firmware"
    shutil.copytree(firmware_dir(), tree, ignore=shutil.ignore_patterns("__pycache__"))
    module = tree / "lib" / "civic" / "policy.py"
    lines = module.read_text().splitlines(keepends=True)
    for name, value in (("_DOC_ONLY", doc_only), ("_DOC_ONLY_TOP", doc_only_top)):
        if value is _KEEP:
            continue
        at = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        assert len(at) == 1
        lines[at[0]] = "" if value is None else f"{name} = {value}\n"
    module.write_text("".join(lines))
    return tree


def test_the_device_copy_holds_every_rule_and_no_key_the_firmware_drops() -> None:
    keys = doc_only_keys()
    top = doc_only_top_keys()
    full = load_policy()
    copy = json.loads(device_policy_bytes(policy_path().read_bytes()))
    assert {"label", "purpose", "valid_range", "retention_days"} <= set(keys)
    # the policy's text for people: in the full file, not in the device copy
    assert top == ("statement", "not_collected", "recipients") and set(top) <= set(full)
    for kind, spec in full["kinds"].items():
        for name, fspec in spec["fields"].items():
            assert copy["kinds"][kind]["fields"][name] == {k: v for k, v in fspec.items() if k not in keys}
        # what is not a field's documentation is copied as it is (window, alarms, config, ...)
        assert {k: v for k, v in copy["kinds"][kind].items() if k != "fields"} == {
            k: v for k, v in spec.items() if k != "fields"}
    assert {k: v for k, v in copy.items() if k != "kinds"} == {
        k: v for k, v in full.items() if k != "kinds" and k not in top}
    assert set(copy) == {"version", "defaults", "kinds"}
    assert len(device_policy_bytes(policy_path().read_bytes())) < len(policy_path().read_bytes()) * 2 // 3
    assert load_policy() == full  # the parsed policy was not modified


def test_the_key_list_is_the_firmware_trees_own(tmp_path: Path) -> None:
    # The host has no list of its own: a firmware that drops more (or fewer) keys gets a copy without
    # (or with) them.
    tree = _tree(tmp_path, '("label", "refractory_s")', '("statement",)')
    assert doc_only_keys(tree) == ("label", "refractory_s") and doc_only_top_keys(tree) == ("statement",)
    copy = json.loads(device_policy_bytes(policy_path().read_bytes(), firmware_root=tree))
    mot = copy["kinds"]["streetlight"]["fields"]["mot"]
    assert "refractory_s" not in mot and "label" not in mot and "purpose" in mot and "valid_range" in (
        copy["kinds"]["streetlight"]["fields"]["lux"])
    assert "statement" not in copy and copy["recipients"] == load_policy()["recipients"]
    # a firmware that drops nothing gets the whole policy (compacted)
    nothing = _tree(tmp_path / "none", "()", "()")
    assert json.loads(device_policy_bytes(policy_path().read_bytes(), firmware_root=nothing)) == load_policy()
    # a firmware older than _DOC_ONLY_TOP drops no top-level key: its copy keeps them, as its flash wrote
    older = _tree(tmp_path / "older", doc_only_top=None)
    assert doc_only_top_keys(older) == ()
    assert set(json.loads(device_policy_bytes(policy_path().read_bytes(), firmware_root=older))) == set(
        load_policy())


@pytest.mark.parametrize("assigned", [None, "tuple(['label'])", "['label']", "('label', 3)"])
def test_a_firmware_without_a_literal_key_list_is_refused(tmp_path: Path, assigned: str | None) -> None:
    tree = _tree(tmp_path, assigned)
    with pytest.raises(DevicePolicyError, match="_DOC_ONLY") as err:
        doc_only_keys(tree)
    assert err.value.details["path"].endswith("lib/civic/policy.py")
    with pytest.raises(DevicePolicyError):
        device_policy_bytes(policy_path().read_bytes(), firmware_root=tree)
    with pytest.raises(DevicePolicyError, match="cannot read"):
        doc_only_keys(tmp_path / "nowhere")


@pytest.mark.parametrize("assigned", ["tuple(['statement'])", "['statement']", "('statement', 3)"])
def test_a_firmware_whose_top_level_key_list_is_no_literal_is_refused(tmp_path: Path, assigned: str) -> None:
    tree = _tree(tmp_path, doc_only_top=assigned)
    with pytest.raises(DevicePolicyError, match="_DOC_ONLY_TOP") as err:
        doc_only_top_keys(tree)
    assert err.value.details["path"].endswith("lib/civic/policy.py")
    with pytest.raises(DevicePolicyError, match="_DOC_ONLY_TOP"):
        device_policy_bytes(policy_path().read_bytes(), firmware_root=tree)


@pytest.mark.parametrize("key", ["recipients", "statement", "not_collected"])
def test_a_change_of_the_policys_text_for_people_leaves_the_device_copy_as_it_was(key: str) -> None:
    """3d0099d re-worded the MQTT recipient line, which changed the device copy's bytes, so ``civicedge
    check`` asked for every board to be re-flashed for a text the firmware never reads."""
    full = policy_path().read_bytes()
    reworded = json.loads(full)
    if key == "recipients":
        reworded["recipients"][0]["gets"] += " (re-worded)"
    elif key == "statement":
        reworded["statement"] += " Re-worded."
    else:
        reworded["not_collected"].append("a new line of text")
    changed = json.dumps(reworded, indent=2, ensure_ascii=False).encode("utf-8")
    assert json.loads(changed) != json.loads(full)
    assert device_policy_bytes(changed) == device_policy_bytes(full)
    # what check compares: the expected hash of /policy.json
    assert hashlib.sha256(device_policy_bytes(changed)).hexdigest() == expected_files("source")["/policy.json"]


def test_the_same_policy_gives_the_same_bytes_whatever_its_layout() -> None:
    full = policy_path().read_bytes()
    relaid = json.dumps(json.loads(full), indent=4, ensure_ascii=True).encode()
    assert relaid != full and device_policy_bytes(relaid) == device_policy_bytes(full)
    assert device_policy_bytes(full).decode("utf-8")  # UTF-8, as the full file


def test_a_policy_that_is_no_json_object_is_refused_and_a_malformed_one_kept_for_the_firmware_to_refuse() -> None:
    with pytest.raises(DevicePolicyError, match="x/policy.json is not valid JSON"):
        device_policy_bytes(b'{"version": 1,', source="x/policy.json")
    with pytest.raises(DevicePolicyError, match="not a JSON object"):
        device_policy_bytes(b"[1]")
    odd = {"version": 1, "kinds": {"streetlight": {"fields": {"mot": "not an object", "lux": {"label": "L", "k": 1}}},
                                   "bin": "not an object"}}
    assert device_policy(odd, ("label",)) == {
        "version": 1, "kinds": {"streetlight": {"fields": {"mot": "not an object", "lux": {"k": 1}}},
                                "bin": "not an object"}}
    assert device_policy({"version": 1, "kinds": []}, ("label",)) == {"version": 1, "kinds": []}


def test_every_install_writes_the_device_copy(tmp_path: Path) -> None:
    copy = device_policy_bytes(policy_path().read_bytes())
    digest = hashlib.sha256(copy).hexdigest()
    staged = {b.device_path: b for b in stage_firmware(tmp_path / "stage", compile_mpy=False)}
    assert staged["/policy.json"].local_path.read_bytes() == copy
    # the QEMU image's files, civicedge check's expected hashes (either mode), a virtual board's flash
    assert device_files({"kind": "streetlight"}, compile_mpy=False)["/policy.json"] == copy
    assert expected_files("source")["/policy.json"] == digest
    flash = tmp_path / "flash"
    install_firmware(flash, {"kind": "streetlight"})
    assert (flash / "policy.json").read_bytes() == copy
    assert json.loads((flash / "firmware.json").read_text())["files"]["/policy.json"] == digest


def test_a_virtual_board_install_of_a_policy_that_is_no_json_says_so(tmp_path: Path) -> None:
    tree = _tree(tmp_path, '("label",)')
    (tree / "policy.json").write_text('{"version": 1,')
    with pytest.raises(FlashError, match="policy.json is not valid JSON"):
        install_firmware(tmp_path / "flash", {"kind": "streetlight"}, source=tree)


@pytest.mark.parametrize(("change", "key"), [
    (lambda p: p["kinds"]["bin"]["fields"]["fill"].__setitem__("retention_days", -5),
     "kinds.bin.fields.fill.retention_days"),
    (lambda p: p["kinds"]["bin"].__setitem__("window_s", "x"), "kinds.bin.window_s"),
    (lambda p: p.__setitem__("defaults", None), "defaults"),
])
def test_a_policy_the_gateway_refuses_never_reaches_a_board(change: object, key: str) -> None:
    """The flash tools check the policy as the gateway loads it (gateway.policy_check), not only its release rules:
    a board is never given a policy its gateway would refuse."""
    policy = json.loads(policy_path().read_text(encoding="utf-8"))
    change(policy)  # type: ignore[operator]
    with pytest.raises(DevicePolicyError, match="device would refuse it") as err:
        device_policy_bytes(json.dumps(policy), source="policy.json")
    assert err.value.details.get("key") == key
