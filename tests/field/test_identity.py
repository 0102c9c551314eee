"""Identity values, the key fingerprint, the registry step and the report wait (no board needed)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.registry import Registry
from hil.field.check import DbWatch, wait_new_report
from hil.field.errors import GatewayRegistrationError, IdentityFormatError, NoReportError
from hil.field.identity import key_fingerprint, new_identity, parse_identity, parse_location
from hil.field.registration import Registration, register_device, registry_problem

EXAMPLES = 200 if os.environ.get("CIVICEDGE_FULL") == "1" else 25


def test_new_identity_round_trips_and_hides_its_key() -> None:
    ident = new_identity(device_id="sl-1", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    assert len(ident.key) == 32
    assert parse_identity(ident.to_json_bytes()) == ident
    assert ident.key.hex() not in repr(ident)
    assert ident.fingerprint == hashlib.sha256(ident.key).hexdigest()[:16]
    other = new_identity(device_id="sl-1", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    assert other.key != ident.key  # fresh from the OS RNG every time


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=EXAMPLES)
def test_fingerprint_is_8_bytes_and_not_the_key(key: bytes) -> None:
    fp = key_fingerprint(key)
    assert len(fp) == 16 and fp not in key.hex()


@pytest.mark.parametrize(("field", "value"), [("device_id", "bad id!"), ("device_id", "x" * 33),
                                               ("kind", "lamp"), ("zone", "")])
def test_bad_fields_are_refused(field: str, value: str) -> None:
    fields = {"device_id": "sl-1", "kind": "streetlight", "zone": "centre"}
    fields[field] = value
    with pytest.raises(IdentityFormatError):
        new_identity(lat="1.0", lon="2.0", **fields)


def test_a_zone_of_any_script_is_taken_and_a_bad_one_names_the_rule() -> None:
    # i18n QA: zones are the city's own names ("Śródmieście"), letters and digits of any script
    assert new_identity(device_id="sl-1", kind="streetlight", zone="Śródmieście", lat="1.0", lon="2.0").zone \
        == "Śródmieście"
    with pytest.raises(IdentityFormatError) as info:
        new_identity(device_id="sl-1", kind="streetlight", zone="Śródmieście/2", lat="1.0", lon="2.0")
    assert str(info.value) == ("zone 'Śródmieście/2' must be 1..64 characters: letters and digits of any script, "
                               "space . _ -; U+002F SOLIDUS is not a letter, digit, space . _ -")


def test_location_parses_to_decimal_strings() -> None:
    assert parse_location(" 52.3702 , -4.8952 ") == ("52.3702", "-4.8952")
    with pytest.raises(IdentityFormatError, match="out of range"):
        parse_location("10,200")
    for text in ("\uff15\uff12.3,4.9", "52.3,\u0664.9"):  # full-width, Arabic-Indic digits
        with pytest.raises(IdentityFormatError, match="decimal degrees"):
            parse_location(text)


@pytest.mark.parametrize(("doc", "match"), [
    (b"{not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"id": "a"}).encode(), "lacks kind"),
    (json.dumps({"id": "a", "kind": "bin", "zone": "z", "lat": "1", "lon": "2", "key": "abcd"}).encode(),
     "not 64 hex"),
])
def test_malformed_identity_files(doc: bytes, match: str) -> None:
    with pytest.raises(IdentityFormatError, match=match):
        parse_identity(doc)


def test_registration_is_idempotent(tmp_path: Path) -> None:
    Registry(tmp_path).close()
    ident = new_identity(device_id="sl-1", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    assert register_device(tmp_path, ident) is Registration.ADDED
    assert register_device(tmp_path, ident) is Registration.UNCHANGED
    rekeyed = new_identity(device_id="sl-1", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    with pytest.raises(GatewayRegistrationError, match="another key") as err:
        register_device(tmp_path, rekeyed)
    assert rekeyed.key.hex() not in str(err.value) and ident.key.hex() not in str(err.value)
    assert register_device(tmp_path, rekeyed, force=True) is Registration.REPLACED
    reg = Registry(tmp_path)
    try:
        assert reg.key("sl-1") == rekeyed.key
    finally:
        reg.close()


def test_missing_registry_dir_is_a_clear_error(tmp_path: Path) -> None:
    ident = new_identity(device_id="sl-1", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    with pytest.raises(GatewayRegistrationError, match="does not exist"):
        register_device(tmp_path / "nope", ident)
    # an empty directory (an unmounted share) is no registry: nothing is created in it
    (tmp_path / "empty").mkdir()
    with pytest.raises(GatewayRegistrationError, match="no registry at"):
        register_device(tmp_path / "empty", ident)
    assert list((tmp_path / "empty").iterdir()) == []


def test_waiting_for_a_report_times_out_clearly(tmp_path: Path) -> None:
    db = tmp_path / "reports.sqlite"
    sqlite3.connect(db).close()  # a store whose schema the gateway has not created yet
    watch = DbWatch(db, "sl-1")
    watch.mark()
    assert watch.new_report() is None
    started = time.monotonic()
    with pytest.raises(NoReportError, match="no report from sl-1 within 0.3 s") as err:
        wait_new_report(watch, device_id="sl-1", timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - started < 2 and err.value.details["device_id"] == "sl-1"


def test_registry_problem_tells_missing_same_and_other(tmp_path: Path) -> None:
    Registry(tmp_path).close()
    ident = new_identity(device_id="sl-9", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    assert registry_problem(tmp_path, ident, port="/dev/x")[0] == "registry: NOT REGISTERED"
    register_device(tmp_path, ident)
    assert registry_problem(tmp_path, ident, port="/dev/x") == ("registry: registered with this key", None)
    other_key = new_identity(device_id="sl-9", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    status, problem = registry_problem(tmp_path, other_key, port="/dev/x")
    assert status == "registry: REGISTERED WITH ANOTHER KEY" and problem is not None


def test_registry_problem_names_the_command_that_repairs_each_case(tmp_path: Path) -> None:
    # QA: check printed "REGISTERED WITH ANOTHER KEY OR LOCATION (re-provision with --force)" -- refused
    # in that state -- then waited a whole report window for a report the gateway refuses.
    Registry(tmp_path).close()
    ident = new_identity(device_id="sl-9", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    status, problem = registry_problem(tmp_path, ident, port="/dev/ttyUSB0")
    assert status == "registry: NOT REGISTERED" and problem is not None
    assert f"civicedge provision --port /dev/ttyUSB0 --id sl-9 --zone centre --location 52.1,4.2 --registry {tmp_path}" \
        in problem and "--force" not in problem
    register_device(tmp_path, ident)
    assert registry_problem(tmp_path, ident, port="/dev/ttyUSB0") == ("registry: registered with this key", None)
    assert registry_problem(tmp_path, replace(ident, lat="52.100"), port="/dev/ttyUSB0")[1] is None
    other_key = new_identity(device_id="sl-9", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    status, problem = registry_problem(tmp_path, other_key, port="/dev/ttyUSB0")
    assert status == "registry: REGISTERED WITH ANOTHER KEY" and problem is not None
    assert problem.endswith("--force --take-over --discard-unsent (a board holding the old key is refused from then on)")
    status, problem = registry_problem(tmp_path, replace(ident, zone="north"), port="/dev/ttyUSB0")
    assert "ANOTHER KIND, ZONE OR LOCATION" in status and problem is not None
    assert "--zone centre --location 52.1,4.2" in problem and "--force" in problem
    reg = Registry(tmp_path)
    reg.revoke("sl-9")
    reg.close()
    status, problem = registry_problem(tmp_path, ident, port="/dev/ttyUSB0")
    assert status == "registry: REVOKED" and problem is not None and "--id NEW-ID" in problem
    assert problem.endswith("--force --discard-unsent")
    for text in (status, problem):
        assert ident.key.hex() not in text and other_key.key.hex() not in text


def test_registry_problem_says_a_retired_board_is_refused_and_how_to_take_it_back(tmp_path: Path) -> None:
    # Before: "registered with this key", and check waited a whole window for a report the gateway refuses.
    Registry(tmp_path).close()
    ident = new_identity(device_id="bin-7", kind="bin", zone="old town", lat="52.1", lon="4.2")
    register_device(tmp_path, ident)
    reg = Registry(tmp_path)
    reg.retire("bin-7")
    reg.close()
    status, problem = registry_problem(tmp_path, ident, port="/dev/ttyUSB0")
    assert status == "registry: RETIRED"
    assert problem == (f"bin-7 is retired at this gateway (moved to another gateway or taken out of service): its "
                       f"reports are refused and not acknowledged; if the board is back here: civicedge gateway "
                       f"devices reinstate bin-7 --registry {tmp_path}")
    # The advice works: once reinstated the same board is registered with its key again.
    reg = Registry(tmp_path, create=False)
    reg.reinstate("bin-7")
    reg.close()
    assert registry_problem(tmp_path, ident, port="/dev/ttyUSB0") == ("registry: registered with this key", None)


def test_registry_problem_says_a_retired_id_holds_another_key_than_the_board(tmp_path: Path) -> None:
    # Before: only the reinstate command; once reinstated the board was refused as hmac (a board re-keyed
    # at another gateway), and check only then said REGISTERED WITH ANOTHER KEY.
    Registry(tmp_path).close()
    ident = new_identity(device_id="bin-7", kind="bin", zone="old town", lat="52.1", lon="4.2")
    register_device(tmp_path, ident)
    reg = Registry(tmp_path)
    reg.retire("bin-7")
    reg.close()
    rekeyed = new_identity(device_id="bin-7", kind="bin", zone="old town", lat="52.1", lon="4.2")
    status, problem = registry_problem(tmp_path, rekeyed, port="/dev/ttyUSB0", unsent=3)
    take_over = (f"civicedge provision --port /dev/ttyUSB0 --id bin-7 --zone 'old town' --location 52.1,4.2 "
                 f"--registry {tmp_path} --force --take-over --discard-unsent")
    assert status == "registry: RETIRED"
    assert problem == (f"bin-7 is retired at this gateway (moved to another gateway or taken out of service): its "
                       f"reports are refused and not acknowledged; if the board is back here: civicedge gateway "
                       f"devices reinstate bin-7 --registry {tmp_path}; and it holds another key than the board's: "
                       f"once reinstated, give the board a new key and register it: {take_over} (its 3 un-sent "
                       f"report(s) are framed under a key the gateway refuses: they can never be delivered)")
    assert rekeyed.key.hex() not in problem and ident.key.hex() not in problem
    # The same board with the registered key is told only to reinstate (test above); the key file gone:
    (tmp_path / "keys" / "bin-7.key").unlink()
    status, problem = registry_problem(tmp_path, ident, port="/dev/ttyUSB0")
    assert problem is not None and problem.endswith(
        f"; and the registry holds it without a usable key (no key file at {tmp_path / 'keys' / 'bin-7.key'}): "
        f"once reinstated, give the board a new key and register it: {take_over}")
    # The advice holds: once reinstated, check names the same repair.
    reg = Registry(tmp_path, create=False)
    reg.reinstate("bin-7")
    reg.close()
    status, problem = registry_problem(tmp_path, rekeyed, port="/dev/ttyUSB0")
    assert status == "registry: REGISTERED WITHOUT A USABLE KEY" and problem is not None and take_over in problem
