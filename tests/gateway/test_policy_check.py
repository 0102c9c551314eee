"""A privacy policy the gateway cannot use is refused where it is loaded, naming the file and the key.

Bad-input audit: with firmware/policy.json edited, a file that is not JSON gave a JSONDecodeError
traceback; ``"defaults": null``, ``kinds.streetlight.alarms: null`` or ``kinds.bin.window_s: "x"`` passed
``gateway run --check`` ("config OK") and then ``gateway run`` died with a traceback; ``quantum: 0``
passed the check and was refused by ``run``; ``retention_days: -5`` was accepted by both and put the
retention cut-off 5 days in the future (every value of the field due for removal). Now
:func:`gateway.resources.load_policy`, which ``run``, ``run --check`` and the gate's policy all come
from, refuses each with a ConfigError naming the key and the file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import make_env

import gateway.resources as resources
from gateway.errors import ConfigError
from gateway.pipeline.verify import PolicyGate
from gateway.policy_check import MAX_PERIOD_S, MAX_RETENTION_DAYS, check_policy
from gateway.resources import load_policy
from gateway.storage.field_retention import MAX_DAYS
from gateway.web.admin_api import MAX_RETENTION_DAYS as API_MAX_DAYS
from hil.cli.main import main

Mutation = Callable[[dict[str, Any]], None]


def _at(path: str, value: Any) -> Mutation:
    """Set the value at the dotted ``path`` (``kinds.bin.window_s``)."""
    *parents, last = path.split(".")

    def apply(policy: dict[str, Any]) -> None:
        node = policy
        for part in parents:
            node = node[part]
        node[last] = value
    return apply


def _drop(path: str) -> Mutation:
    *parents, last = path.split(".")

    def apply(policy: dict[str, Any]) -> None:
        node = policy
        for part in parents:
            node = node[part]
        del node[last]
    return apply


def _both(*mutations: Mutation) -> Mutation:
    def apply(policy: dict[str, Any]) -> None:
        for m in mutations:
            m(policy)
    return apply


SL = "kinds.streetlight"
MOT = "kinds.streetlight.fields.mot"
FILL = "kinds.bin.fields.fill"

# (id, mutation, key at fault, what the message says besides the key)
CASES: list[tuple[str, Mutation, str, str]] = [
    # the audit's findings
    ("defaults_null", _at("defaults", None), "defaults", "must be an object"),
    ("alarms_null", _at(SL + ".alarms", None), SL + ".alarms", "must be an object"),
    ("window_text", _at("kinds.bin.window_s", "x"), "kinds.bin.window_s", "must be a whole number >= 1, not 'x'"),
    ("quantum_0", _at(FILL + ".quantum", 0), FILL + ".quantum", "must be a whole number >= 1, not 0"),
    ("retention_negative", _at(FILL + ".retention_days", -5), FILL + ".retention_days",
     "must be a whole number >= 1, not -5"),
    # top level
    ("version_2", _at("version", 2), "version", "must be 1"),
    ("version_text", _at("version", "1"), "version", "not '1'"),
    ("version_missing", _drop("version"), "version", "version is missing"),
    ("statement_number", _at("statement", 5), "statement", "must be a text"),
    ("not_collected_number", _at("not_collected", ["MAC addresses", 3]), "not_collected[1]", "must be a text"),
    ("recipients_null", _at("recipients", None), "recipients", "must be a list"),
    ("recipient_text", _at("recipients", ["everyone"]), "recipients[0]", "must be an object"),
    ("recipient_without_who", _at("recipients", [{"gets": "all"}]), "recipients[0].who", "is missing"),
    ("recipient_gets_list", _at("recipients", [{"who": "x", "gets": ["a"]}]), "recipients[0].gets", "must be a text"),
    ("defaults_window_text", _at("defaults.window_s", "900"), "defaults.window_s", "not '900'"),
    ("defaults_k_0", _at("defaults.k", 0), "defaults.k", "must be a whole number >= 1"),
    ("kinds_null", _at("kinds", None), "kinds", "has no kinds"),
    ("kind_null", _at("kinds.bin", None), "kinds.bin", "kind bin is not an object"),
    # a kind
    ("title_number", _at(SL + ".title", 1), SL + ".title", "must be a text"),
    ("window_0", _at("kinds.bin.window_s", 0), "kinds.bin.window_s", "must be a whole number >= 1, not 0"),
    ("window_float", _at("kinds.bin.window_s", 900.0), "kinds.bin.window_s", "not 900.0"),
    ("window_over_a_week", _at("kinds.bin.window_s", MAX_PERIOD_S + 1), "kinds.bin.window_s",
     "= 604801 is above 604800 (7 days"),
    ("no_window_anywhere", _both(_drop("kinds.bin.window_s"), _drop("defaults.window_s")), "kinds.bin.window_s",
     "missing and defaults has no window_s"),
    ("config_null", _at(SL + ".config", None), SL + ".config", "must be a list of texts"),
    ("alarm_text", _at(SL + ".alarms.lamp_fail", "x"), SL + ".alarms.lamp_fail", "must be an object"),
    ("alarm_label_number", _at(SL + ".alarms.lamp_fail.label", 1), SL + ".alarms.lamp_fail.label", "must be a text"),
    ("alarm_fields_personal", _at("kinds.bin.alarms.fire.fields", ["lid"]), "kinds.bin.alarms.fire.fields",
     "'lid' is not a non-personal field of bin"),
    ("alarm_fields_unknown", _at("kinds.bin.alarms.fire.fields", ["smoke"]), "kinds.bin.alarms.fire.fields",
     "'smoke' is not a non-personal field of bin"),
    ("alarm_fields_null", _at("kinds.bin.alarms.fire.fields", None), "kinds.bin.alarms.fire.fields",
     "must be a list of field names"),
    # a field
    ("field_null", _at(SL + ".fields.lux", None), SL + ".fields.lux", "is not an object"),
    ("label_missing", _drop(FILL + ".label"), FILL + ".label", "is missing (the transparency page shows it)"),
    ("purpose_number", _at(FILL + ".purpose", 1), FILL + ".purpose", "must be a text"),
    ("unit_null", _at(FILL + ".unit", None), FILL + ".unit", "must be a text"),
    ("report_week", _at(FILL + ".report", "week"), FILL + ".report", "must be one of win, hour, day, not 'week'"),
    ("report_missing", _drop(FILL + ".report"), FILL + ".report", "not None"),
    ("retention_0", _at(FILL + ".retention_days", 0), FILL + ".retention_days", "not 0"),
    ("retention_text", _at(FILL + ".retention_days", "730"), FILL + ".retention_days", "not '730'"),
    ("retention_over_a_century", _at(FILL + ".retention_days", MAX_RETENTION_DAYS + 1), FILL + ".retention_days",
     "= 36501 is above 36500"),
    ("retention_missing", _drop(FILL + ".retention_days"), FILL + ".retention_days", "is missing"),
    ("quantum_negative", _at(FILL + ".quantum", -10), FILL + ".quantum", "not -10"),
    ("quantum_bool", _at(FILL + ".quantum", True), FILL + ".quantum", "not True"),
    ("valid_range_reversed", _at(FILL + ".valid_range", [100, 0]), FILL + ".valid_range", "min is above max"),
    ("valid_range_null", _at(FILL + ".valid_range", None), FILL + ".valid_range", "must be [min, max]"),
    ("release_every_text", _at(FILL + ".release_every_s", "6h"), FILL + ".release_every_s", "not '6h'"),
    ("release_every_over_a_week", _at(MOT + ".release_every_s", MAX_PERIOD_S + 1), MOT + ".release_every_s",
     "is above 604800"),
    ("refractory_negative", _at(MOT + ".refractory_s", -1), MOT + ".refractory_s", "must be a whole number >= 0"),
    ("eps_0", _at(MOT + ".eps_per_release_milli", 0), MOT + ".eps_per_release_milli", "not 0"),
    ("eps_float", _at(MOT + ".eps_per_release_milli", 0.5), MOT + ".eps_per_release_milli", "not 0.5"),
    ("eps_day_null", _at(MOT + ".eps_per_day_milli", None), MOT + ".eps_per_day_milli", "not None"),
    ("k_0", _at(MOT + ".k", 0), MOT + ".k", "not 0"),
    ("eps_above_budget", _at(MOT + ".eps_per_release_milli", 2500), MOT + ".eps_per_release_milli",
     "= 2500 is above the daily budget eps_per_day_milli = 2000"),
    # what the board refuses: a noisy count's ε and k are read from the field only (civic.policy)
    ("k_only_in_defaults", _drop(MOT + ".k"), MOT + ".k", "no k: the gateway cannot check its releases"),
    ("eps_day_missing", _drop(MOT + ".eps_per_day_milli"), MOT + ".eps_per_day_milli",
     "no eps_per_day_milli: the gateway cannot check"),
    # the release rule (gateway.policy_rules), as before
    ("release_typo", _at(MOT + ".release", "noisy-count"), MOT + ".release", "did you mean 'noisy_count'?"),
]
IDS = [c[0] for c in CASES]
OWN_BOUNDS_ONLY = {"k_only_in_defaults", "eps_day_missing"}  # what the gate alone takes from defaults or skips


def _shipped() -> dict[str, Any]:
    """The shipped policy, read from the file (not from :func:`load_policy`'s cache)."""
    policy: dict[str, Any] = json.loads((resources.firmware_dir() / "policy.json").read_bytes())
    return policy


def _bad(mutation: Mutation) -> dict[str, Any]:
    policy = _shipped()
    mutation(policy)
    return policy


@pytest.fixture
def policy_file(tmp_path: Path) -> Iterator[Path]:
    """A policy file :func:`load_policy` reads instead of firmware/policy.json (the shipped one loaded
    again after, for the tests that follow)."""
    path = tmp_path / "policy" / "policy.json"
    path.parent.mkdir()
    path.write_bytes(resources.policy_path().read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(resources, "policy_path", lambda: path)
        load_policy.cache_clear()
        yield path
    load_policy.cache_clear()
    load_policy()


def _write(path: Path, content: dict[str, Any] | bytes) -> None:
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content, ensure_ascii=False).encode())
    load_policy.cache_clear()


def test_the_shipped_policy_passes() -> None:
    check_policy(_shipped())
    check_policy(_shipped(), own_bounds=False)


def test_the_bounds_are_those_the_rest_of_the_gateway_keeps() -> None:
    assert MAX_RETENTION_DAYS == MAX_DAYS == API_MAX_DAYS  # a saved retention pass, the admin API
    assert MAX_PERIOD_S == 7 * 86400  # the most gateway.pipeline.verify accepts of a report's l


@pytest.mark.parametrize("change", [
    _at("kinds.bin.window_s", MAX_PERIOD_S), _at("kinds.bin.window_s", 1),
    _at(FILL + ".retention_days", MAX_RETENTION_DAYS), _at(FILL + ".retention_days", 1),
    _at(MOT + ".refractory_s", 0), _at(MOT + ".eps_per_release_milli", 2000),
    _drop("kinds.bin.window_s"),  # defaults.window_s applies
    _drop("defaults"), _drop("statement"), _drop("recipients"), _drop(SL + ".alarms"),
], ids=["window_week", "window_1", "retention_century", "retention_1", "refractory_0", "eps_equal_budget",
        "window_from_defaults", "no_defaults", "no_statement", "no_recipients", "no_alarms"])
def test_values_at_the_limits_pass(change: Mutation, policy_file: Path) -> None:
    policy = _bad(change)
    _write(policy_file, policy)
    assert load_policy() == policy
    PolicyGate(policy)


@pytest.mark.parametrize(("mutation", "key", "says"), [c[1:] for c in CASES], ids=IDS)
def test_load_refuses_naming_the_key_and_the_file(mutation: Mutation, key: str, says: str,
                                                   policy_file: Path) -> None:
    _write(policy_file, _bad(mutation))
    with pytest.raises(ConfigError) as info:
        load_policy()
    exc = info.value
    assert (exc.key, exc.reason, exc.path) == (key, "bad_value", policy_file)
    assert str(exc).startswith("privacy policy: %s: " % policy_file)
    assert key in str(exc) and says in str(exc), str(exc)
    source = resources.loaded_policy_source()  # a refused file is never what is published as in force
    assert source is None or source.path != policy_file


@pytest.mark.parametrize(("mutation", "key", "says"), [c[1:] for c in CASES if c[0] not in OWN_BOUNDS_ONLY],
                         ids=[i for i in IDS if i not in OWN_BOUNDS_ONLY])
def test_the_gate_refuses_the_same(mutation: Mutation, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyGate(_bad(mutation))
    assert (info.value.key, info.value.reason, info.value.path) == (key, "bad_value", None)
    assert says in str(info.value)


def test_the_gate_alone_takes_k_from_defaults() -> None:
    """As before: the gate falls back on defaults; a policy file may not (the board would refuse it)."""
    gate = PolicyGate(_bad(_drop(MOT + ".k")))
    assert gate.releases["streetlight"]["mot"].k == _shipped()["defaults"]["k"]


@pytest.mark.parametrize(("body", "says"), [
    (b'{\n  "version": 1,\n  "kinds": {,\n}', "is not valid JSON: Expecting property name enclosed in double quotes "
                                              "at line 3, column 13"),
    (b'{"version": 1, "statement": "caf\xe9"}', "is not UTF-8 text: byte 32 cannot be decoded"),
    (b"", "is not valid JSON: Expecting value at line 1, column 1"),
])
def test_a_file_that_is_not_json_is_refused_with_its_line_and_column(body: bytes, says: str,
                                                                      policy_file: Path) -> None:
    _write(policy_file, body)
    with pytest.raises(ConfigError) as info:
        load_policy()
    assert (info.value.key, info.value.reason, info.value.path) == ("", "syntax", policy_file)
    assert str(info.value) == "the privacy policy %s %s" % (policy_file, says)


def test_a_file_that_is_not_an_object_is_refused(policy_file: Path) -> None:
    _write(policy_file, b"[1, 2]")
    with pytest.raises(ConfigError, match=r"the file must hold a JSON object, not a list \[1, 2\]") as info:
        load_policy()
    assert (info.value.key, info.value.path) == ("", policy_file)


def test_an_unreadable_file_is_refused(policy_file: Path) -> None:
    policy_file.unlink()
    load_policy.cache_clear()
    with pytest.raises(ConfigError, match="cannot read the privacy policy .*policy.json: No such file") as info:
        load_policy()
    assert (info.value.reason, info.value.path) == ("bad_path", policy_file)


@pytest.mark.parametrize(("mutation", "key", "says"), [c[1:] for c in CASES], ids=IDS)
def test_run_check_refuses_without_a_traceback(mutation: Mutation, key: str, says: str, policy_file: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)  # registers devices, which reads the policy: before it turns bad
    _write(policy_file, _bad(mutation))
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
    out = capsys.readouterr()
    assert "config OK" not in out.out and "Traceback" not in out.err
    assert "error (bad_value) [%s]: privacy policy: %s: " % (key, policy_file) in out.err
    assert says in out.err


def test_run_check_refuses_a_file_that_is_not_json(policy_file: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)
    _write(policy_file, b'{"version": 1,\n "kinds": }')
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error (syntax): the privacy policy %s is not valid JSON: Expecting value at line 2, column 11" % (
        policy_file) in err


@pytest.mark.parametrize("case", ["defaults_null", "alarms_null", "window_text", "quantum_0", "retention_negative"])
def test_run_refuses_to_start_as_the_check_does(case: str, policy_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The audit's cases: the check passed, then ``run`` died with a traceback or started (retention -5)."""
    _, mutation, key, _says = next(c for c in CASES if c[0] == case)
    config = make_env(tmp_path)
    _write(policy_file, _bad(mutation))
    assert main(["gateway", "run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error (bad_value) [%s]: " % key in err
    assert not (tmp_path / "data" / "reports.sqlite").exists()  # refused before the store was opened


def test_a_fixed_file_loads_again(policy_file: Path) -> None:
    _write(policy_file, _bad(_at(FILL + ".retention_days", -5)))
    with pytest.raises(ConfigError):
        load_policy()
    fixed = _bad(_at(FILL + ".retention_days", 30))
    _write(policy_file, fixed)
    assert load_policy()["kinds"]["bin"]["fields"]["fill"]["retention_days"] == 30
    assert copy.deepcopy(load_policy()) == fixed
