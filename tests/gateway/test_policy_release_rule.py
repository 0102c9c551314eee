"""A people count whose ``release`` is not exactly ``noisy_count`` is refused, not published raw.

QA finding (HIGH): every privacy check tested only ``release == "noisy_count"``; ``personal: true``
enforced nothing. A people-count field with ``"release": "noisy-count"`` (a typo) or ``"aggregate"``
(copied from another field) was accepted by the gate and the transparency page, and a raw count was
stored (m={'ppl': 1}, e={}). Now the gateway refuses such a policy when it loads it (``run``, ``run
--check``, the gate, the board loader) and the flash tools before staging a board's copy.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import make_env

import gateway.resources as resources
from gateway.errors import ConfigError
from gateway.pipeline.verify import PolicyGate
from gateway.policy_rules import RELEASES, check_release_rules, people_fields
from gateway.resources import firmware_dir, load_policy
from gateway.web.transparency import _RELEASE_TEXT
from hil.cli.main import main
from hil.field.device_policy import DevicePolicyError, device_policy_bytes
from hil.field.firmware_copy import stage_firmware

Mutation = Callable[[dict[str, Any]], None]


def _set(kind: str, name: str, key: str, value: Any) -> Mutation:
    def apply(policy: dict[str, Any]) -> None:
        policy["kinds"][kind]["fields"][name][key] = value
    return apply


def _drop(kind: str, name: str, key: str) -> Mutation:
    def apply(policy: dict[str, Any]) -> None:
        del policy["kinds"][kind]["fields"][name][key]
    return apply


def _new_kind(release: str) -> Mutation:
    """The QA tester's new sensor kind: a people count copied from an aggregate field."""
    def apply(policy: dict[str, Any]) -> None:
        policy["kinds"]["counter"] = {"title": "People counter", "window_s": 900, "fields": {"ppl": {
            "label": "People passing", "unit": "count", "personal": True, "source": "PIR", "release": release,
            "report": "win", "quantum": 1, "retention_days": 90, "purpose": "footfall"}}}
    return apply


# (id, mutation, key at fault, what the message must say)
CASES: list[tuple[str, Mutation, str, tuple[str, ...]]] = [
    ("typo", _set("streetlight", "mot", "release", "noisy-count"), "kinds.streetlight.fields.mot.release",
     ("field mot of kind streetlight", "'noisy-count'", "not a known release", "did you mean 'noisy_count'?",
      "allowed: aggregate, noisy_count")),
    ("aggregate_on_personal", _set("bin", "lid", "release", "aggregate"), "kinds.bin.fields.lid.release",
     ("field lid of kind bin", "people-related field (personal: true)", "must be noisy_count, not 'aggregate'")),
    ("new_kind_copied_aggregate", _new_kind("aggregate"), "kinds.counter.fields.ppl.release",
     ("field ppl of kind counter", "must be noisy_count, not 'aggregate'")),
    ("missing_personal", _drop("streetlight", "lux", "personal"), "kinds.streetlight.fields.lux.personal",
     ("field lux of kind streetlight has no personal flag", "must be true", "or false")),
    ("missing_personal_on_noisy", _drop("bin", "lid", "personal"), "kinds.bin.fields.lid.personal",
     ("field lid of kind bin has no personal flag",)),
    ("personal_not_bool", _set("bin", "fill", "personal", 0), "kinds.bin.fields.fill.personal",
     ("field fill of kind bin has personal 0",)),
    ("personal_false_noisy", _set("streetlight", "mot", "personal", False), "kinds.streetlight.fields.mot.personal",
     ("field mot of kind streetlight has release noisy_count but personal: false",
      "a noisy count is only for a people-related field")),
    ("unknown_release", _set("bin", "temp", "release", "raw"), "kinds.bin.fields.temp.release",
     ("field temp of kind bin has release 'raw', which is not a known release", "allowed: aggregate, noisy_count")),
    ("missing_release", _drop("streetlight", "wh", "release"), "kinds.streetlight.fields.wh.release",
     ("field wh of kind streetlight has no release", "allowed: aggregate, noisy_count")),
]
IDS = [c[0] for c in CASES]


def _bad(mutation: Mutation) -> dict[str, Any]:
    """The shipped policy (read from the file, not :func:`load_policy`'s cache) with ``mutation`` applied."""
    policy = json.loads((firmware_dir() / "policy.json").read_bytes())
    mutation(policy)
    return policy


def _write(path: Path, policy: dict[str, Any]) -> None:
    """Make ``policy`` the file :func:`load_policy` reads next (its cache holds the file read before)."""
    path.write_text(json.dumps(policy), encoding="utf-8")
    load_policy.cache_clear()


def _assert_names(exc: BaseException, key: str, says: tuple[str, ...]) -> None:
    text = str(exc)
    for part in says:
        assert part in text, (part, text)
    assert key in text


@pytest.fixture
def policy_file(tmp_path: Path) -> Iterator[Path]:
    """A policy file that :func:`load_policy` reads instead of firmware/policy.json (cache cleared around;
    the shipped file loaded again after)."""
    path = tmp_path / "policy.json"
    path.write_bytes(resources.policy_path().read_bytes())
    with pytest.MonkeyPatch.context() as mp:  # undone before the shipped file is loaded again
        mp.setattr(resources, "policy_path", lambda: path)
        load_policy.cache_clear()
        yield path
    load_policy.cache_clear()
    load_policy()  # the shipped file is again what was loaded, for the tests after this one


def test_the_shipped_policy_keeps_the_rule() -> None:
    policy = load_policy()  # checked as it loads
    check_release_rules(policy)
    PolicyGate(policy)
    assert {k: people_fields(spec) for k, spec in policy["kinds"].items()} == {"streetlight": ["mot"], "bin": ["lid"]}
    for spec in policy["kinds"].values():
        for field in spec["fields"].values():
            assert field["personal"] is (field["release"] == "noisy_count")


def test_every_known_release_has_words_on_the_transparency_page_and_the_firmware_knows_the_same() -> None:
    assert set(_RELEASE_TEXT) == set(RELEASES)
    tree = ast.parse((firmware_dir() / "lib" / "civic" / "policy.py").read_text(encoding="utf-8"))
    firmware = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and isinstance(n.targets[0], ast.Name) and n.targets[0].id == "_RELEASES")
    assert tuple(firmware) == RELEASES


@pytest.mark.parametrize(("mutation", "key", "says"), [c[1:] for c in CASES], ids=IDS)
def test_the_gate_refuses_the_policy(mutation: Mutation, key: str, says: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyGate(_bad(mutation))
    assert info.value.key == key and info.value.reason == "bad_value"
    _assert_names(info.value, key, says)


@pytest.mark.parametrize(("mutation", "key", "says"), [c[1:] for c in CASES], ids=IDS)
def test_gateway_run_check_refuses_the_policy(mutation: Mutation, key: str, says: tuple[str, ...], policy_file: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)  # registers devices, which reads the policy too: before it turns bad
    _write(policy_file, _bad(mutation))
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
    out = capsys.readouterr()
    assert "config OK" not in out.out
    assert "error (bad_value) [%s]: privacy policy: " % key in out.err
    _assert_names(Exception(out.err), key, says)


def test_gateway_run_refuses_to_start_and_the_loader_keeps_refusing(policy_file: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)
    _write(policy_file, _bad(_set("streetlight", "mot", "release", "aggregate")))
    assert main(["gateway", "run", "--config", str(config)]) == 1
    assert "error (bad_value) [kinds.streetlight.fields.mot.release]" in capsys.readouterr().err
    assert not (tmp_path / "data" / "reports.sqlite").exists()  # refused before the store was opened
    with pytest.raises(ConfigError):  # not cached as loaded
        load_policy()


def test_a_fixed_policy_loads_again(policy_file: Path) -> None:
    _write(policy_file, _bad(_set("bin", "lid", "release", "noisy-count")))
    with pytest.raises(ConfigError):
        load_policy()
    _write(policy_file, _bad(lambda policy: None))
    assert people_fields(load_policy()["kinds"]["bin"]) == ["lid"]


@pytest.mark.parametrize(("mutation", "key", "says"), [c[1:] for c in CASES], ids=IDS)
def test_the_flash_tools_refuse_to_make_a_boards_copy(mutation: Mutation, key: str, says: tuple[str, ...]) -> None:
    with pytest.raises(DevicePolicyError) as info:
        device_policy_bytes(json.dumps(_bad(mutation)), source="bad.json")
    assert info.value.details == {"path": "bad.json", "key": key}
    _assert_names(info.value, key, says)
    assert "the device would refuse it" in str(info.value)


def test_staging_a_firmware_tree_with_such_a_policy_is_refused(tmp_path: Path) -> None:
    """What ``civicedge flash`` and the simulator's install stage: a tree whose policy breaks the rule."""
    tree = tmp_path / "firmware"
    shutil.copytree(firmware_dir(), tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "policy.json").write_text(json.dumps(_bad(_set("streetlight", "mot", "release", "noisy-count"))),
                                      encoding="utf-8")
    with pytest.raises(DevicePolicyError, match="did you mean 'noisy_count'"):
        stage_firmware(tmp_path / "out", compile_mpy=False, src=tree)
