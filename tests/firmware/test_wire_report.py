"""Policy loading, the device-side allowlist and report framing (MicroPython), decoded in CPython."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Callable

import msgpack

import gateway
from hil.sim.mprun import MpResult

KEY_HEX = "11" * 32
SETUP = (
    "import binascii\nfrom civic import policy, report\n"
    "from civic.store.seq import SeqCounter\nfrom civic.store.outbox import Outbox\n"
    "P = policy.parse(open('/flash/policy.json').read(), 'streetlight')\n"
    f"KEY = binascii.unhexlify({KEY_HEX!r})\n"
    "R = report.Reporter('sl-0042', KEY, P, SeqCounter('/flash/seq.bin'), Outbox('/flash/outbox', 8))\n"
)


def _flash(tmp_path: Path, repo_root: Path) -> Path:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "policy.json").write_bytes((repo_root / "firmware" / "policy.json").read_bytes())
    return flash


def _parse(frame: bytes) -> tuple[int, str, int, Any]:
    key = bytes.fromhex(KEY_HEX)
    assert hmac.compare_digest(hmac.new(key, frame[:-16], hashlib.sha256).digest()[:16], frame[-16:])
    n = frame[2]
    return frame[1], frame[3:3 + n].decode(), int.from_bytes(frame[3 + n:7 + n], "big"), msgpack.unpackb(frame[7 + n:-16])


def test_reports_are_framed_into_the_outbox(flash_run: Callable[..., Any], tmp_path: Path, repo_root: Path) -> None:
    flash = _flash(tmp_path, repo_root)
    code = SETUP + (
        "print(R.report('win', 1795000500 - 1795000500 % 21600, 21600, {'mot': 17}, e={'mot': 500}))\n"
        "print(R.report('hour', 1794999600, 3600, {'wh': 33}))\n"
        "print(R.alarm(['lamp_fail'], 1795000517))\n"
    )
    assert flash_run(code, flash).stdout.split() == ["1", "2", "3"]
    names = sorted(p.name for p in (flash / "outbox").iterdir())
    assert names == ["00000001.r", "00000002.r", "00000003.a"]
    frames = [(flash / "outbox" / n).read_bytes()[4:] for n in names]
    t, dev, seq, body = _parse(frames[0])
    assert (t, dev, seq) == (1, "sl-0042", 1)
    assert body == {"t": "win", "k": "streetlight", "w": 1795000500 - 1795000500 % 21600, "l": 21600,
                    "m": {"mot": 17}, "e": {"mot": 500}, "fw": gateway.__version__,
                    "h": []}
    assert _parse(frames[1])[3]["m"] == {"wh": 33}
    # h: the seqs below it still in the outbox, as runs (protocol §2)
    assert [_parse(f)[3]["h"] for f in frames] == [[], [1, 1], [1, 2]]
    alarm = _parse(frames[2])[3]
    assert alarm["t"] == "alarm" and alarm["w"] == 1795000500 and alarm["l"] == 60 and alarm["a"] == ["lamp_fail"]


def test_allowlist_and_accounting_are_enforced(flash_run: Callable[..., Any], tmp_path: Path, repo_root: Path) -> None:
    flash = _flash(tmp_path, repo_root)
    bad = [
        "('win', 0, 900, {'mac': 1})",             # not on the allowlist
        "('win', 0, 900, {'fill': 10})",           # a bin field on a streetlight
        "('win', 0, 900, {'mot': 9})",             # people-related without epsilon
        "('win', 0, 900, {'lux': 1}, {'lux': 5})", # epsilon for a non-personal field
        "('win', 0, 900, {}, None, ['fire'])",     # alarm code of the other kind / not an alarm report
        "('alarm', 0, 60, {}, None, ['fire'])",    # alarm code of the other kind
        "('win', 0, 900, {'mot': 9}, {'mot': 500})",  # a count outside its release period (6 h)
        "('alarm', 0, 60, {'lamp': 1}, None, ['lamp_fail'])",  # a field its alarm does not carry
    ]
    invalid = [
        "('win', 10, 900, {'lux': 1})",            # w not a multiple of l
        "('win', 0, 900, {'lux': 1.5})",           # float value
        "('win', 0, 900, {'lux': True})",          # bool is not a measurement
        "('weekly', 0, 900, {})",                  # unknown type
        "('alarm', 0, 900, {}, None, ['lamp_fail'])",  # alarm period must be 60
        "('alarm', 0, 60, {})",                    # alarm without codes
    ]
    code = SETUP + (
        f"for args in [{', '.join(bad)}]:\n"
        "    try:\n        R.report(*args)\n        print('BUILT')\n"
        "    except policy.PolicyError as e:\n        print('policy', e.field)\n"
        f"for args in [{', '.join(invalid)}]:\n"
        "    try:\n        R.report(*args)\n        print('BUILT')\n"
        "    except policy.PolicyError as e:\n        print('POLICY', e)\n"
        "    except ValueError as e:\n        print('value')\n"
        "print(R.outbox.pending(), R.seq.last)\n"
    )
    lines = flash_run(code, flash).stdout.splitlines()
    assert lines[:8] == ["policy mac", "policy fill", "policy mot", "policy lux", "policy None", "policy fire",
                         "policy mot", "policy lamp"]
    assert lines[8:14] == ["value"] * 6
    assert lines[14] == "[] 0"  # nothing was queued and no seq was used


def test_policy_and_identity_errors(mpy: Callable[..., MpResult]) -> None:
    code = (
        "from civic import policy, report\n"
        "for text, kind in (('{', 'bin'), ('{\"version\": 1}', 'bin'), ('{\"version\": 2, \"kinds\": {}}', 'bin'),\n"
        "                   ('{\"version\": 1, \"kinds\": {\"bin\": {\"fields\": {}}}}', 'bin'),\n"
        "                   ('{\"version\": 1, \"kinds\": {}}', 'toaster'),\n"
        "                   ('{\"version\": 1, \"kinds\": {\"bin\": {\"fields\": {\"lid\": {\"release\": \"noisy_count\", \"k\": 5,"
        " \"eps_per_release_milli\": 900, \"eps_per_day_milli\": 500}}}}}', 'bin'),\n"
        "                   ('{\"version\": 1, \"kinds\": {\"bin\": {\"fields\": {\"lid\": {\"release\": \"noisy_count\", \"k\": 5,"
        " \"eps_per_release_milli\": 0.5, \"eps_per_day_milli\": 500}}}}}', 'bin')):\n"
        "    try:\n        policy.parse(text, kind)\n    except policy.PolicyError as e:\n        print('policy error')\n"
        "for doc in ({'id': 'a b', 'kind': 'bin', 'key': '00' * 32}, {'id': 'a', 'kind': 'bin', 'key': 'zz'},\n"
        "            {'id': 'a', 'kind': 'bin', 'key': '00' * 31}, {'id': 'a', 'kind': 'bin'}, []):\n"
        "    try:\n        report.parse_identity(doc)\n    except report.IdentityError as e:\n        print('identity', e.key)\n"
        "print(report.parse_identity({'id': 'bin-7', 'kind': 'bin', 'key': 'ab' * 32, 'zone': 'z'})[:2])\n"
        "try:\n    policy.load('bin', '/nonexistent.json')\nexcept policy.PolicyError:\n    print('missing file')\n"
    )
    assert mpy(code).stdout.splitlines() == ["policy error"] * 7 + [
        "identity id", "identity key", "identity key", "identity key", "identity None", "('bin-7', 'bin')", "missing file"]


def test_kind_policy_from_repo_policy(flash_run: Callable[..., Any], tmp_path: Path, repo_root: Path) -> None:
    flash = _flash(tmp_path, repo_root)
    code = (
        "from civic import policy\n"
        "for k in ('streetlight', 'bin'):\n"
        "    p = policy.load(k, '/flash/policy.json')\n"
        "    print(k, sorted(p.allowlist), sorted(p.personal), p.day_budgets(), p.window_s, sorted(p.alarms))\n"
    )
    lines = flash_run(code, flash).stdout.splitlines()
    assert lines[0] == "streetlight ['lamp', 'lux', 'lvl', 'mot', 'wh'] ['mot'] {'mot': 2000} 900 ['lamp_fail']"
    assert lines[1] == "bin ['bat', 'fill', 'lid', 'temp', 'tilt'] ['lid'] {'lid': 2000} 900 ['fire', 'tip']"



def test_reports_say_which_seqs_the_outbox_still_holds(flash_run: Callable[..., Any], tmp_path: Path,
                                                       repo_root: Path) -> None:
    """``h`` follows the outbox through ACKs, the cap (alarms kept: a hole), a reboot (seqs skipped)
    and a new key; beyond the run limit the highest runs merge (never under-claim). The frames are
    checked against the identity only when it changed (``owner``)."""
    flash = _flash(tmp_path, repo_root)
    code = SETUP + (
        "from civic.apps.runtime import _framed_by\n"
        "from civic.wire import frame, msgpack\n"
        "checked = []\n"
        "def boot(key=KEY):\n"
        "    def accept(d):\n"
        "        checked.append(1)\n"
        "        return _framed_by(d, 'sl-0042', key)\n"
        "    O = Outbox('/flash/ob', 3, accept=accept, owner=key[:8])\n"
        "    return O, report.Reporter('sl-0042', key, P, SeqCounter('/flash/s.bin', block=4), O)\n"
        "def rep(R, alarm=False):\n"
        "    n = R.alarm(['lamp_fail'], 0) if alarm else R.report('hour', 3600, 3600, {'wh': 1})\n"
        "    print(n, msgpack.decode(frame.parse(R.outbox.read(n), R.key)[3])['h'])\n"
        "O, R = boot()\n"
        "rep(R); rep(R)\n"          # 1 [], 2 [1, 1]
        "O.ack(1); rep(R)\n"        # 3 [2, 2]
        "rep(R); rep(R)\n"          # 4 [2, 3]; 5: the cap drops 2 first -> [3, 4]
        "O, R = boot(); rep(R)\n"   # reboot: 6..8 reserved, skipped; the cap drops 3 -> 9 [4, 5]
        "print(len(checked))\n"    # same identity as at the first boot: no frame checked
        "O.ack(9); rep(R)\n"        # nothing held -> 10 []
        "O, R = boot(b'\\x22' * 32)\n"  # re-provisioned with a new key: frame 10 can never verify
        "print(O.foreign, O.pending(), O.dropped)\n"
        "rep(R); rep(R, True); rep(R); rep(R)\n"  # 13 [], 14 (alarm) [13, 13], 15 [13, 14], 16: drops 13
        "rep(R)\n"                  # 17: the cap drops 15, the alarm 14 stays: a hole -> [14, 14, 16, 16]
        "O._index = [(1, False), (3, False), (4, False), (7, False), (9, False)]\n"
        "print(O.held_runs(), O.held_runs(2), O.held_runs(3))\n"
    )
    lines = flash_run(code, flash).stdout.splitlines()
    assert lines == ["1 []", "2 [1, 1]", "3 [2, 2]", "4 [2, 3]", "5 [3, 4]", "9 [4, 5]", "0", "10 []", "1 [] 3",
                     "13 []", "14 [13, 13]", "15 [13, 14]", "16 [14, 15]", "17 [14, 14, 16, 16]",
                     "[1, 1, 3, 4, 7, 7, 9, 9] [1, 1, 3, 9] [1, 1, 3, 4, 7, 9]"]


def test_frames_of_the_previous_protocol_version_survive_the_upgrade(flash_run: Callable[..., Any], tmp_path: Path,
                                                                     repo_root: Path) -> None:
    """The first boot of v2 firmware checks the outbox against its identity (no ``owner`` yet): the
    v1 frames the old firmware left there are its own and must stay (they were deleted as foreign)."""
    flash = _flash(tmp_path, repo_root)
    code = SETUP + (
        "from civic.apps.runtime import _framed_by\n"
        "from civic.wire import frame, hmac256\n"
        "O = Outbox('/flash/ob', 8)\n"
        "for n in (5, 6, 7):\n"
        "    f = bytearray(frame.build(frame.REPORT, 'sl-0042', n, b'\\x80', KEY))\n"
        "    f[0] = 1\n"  # framed by the previous firmware: v1, its tag over the v1 header
        "    f[-16:] = hmac256.digest(KEY, bytes(f[:-16]))[:16]\n"
        "    O.append(n, bytes(f), alarm=True)\n"
        "O = Outbox('/flash/ob', 8, accept=lambda d: _framed_by(d, 'sl-0042', KEY), owner=KEY[:8])\n"
        "print(O.pending(), O.foreign)\n"
    )
    assert flash_run(code, flash).stdout.split("\n")[0] == "[5, 6, 7] 0"
