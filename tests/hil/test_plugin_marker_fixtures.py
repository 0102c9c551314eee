"""requires(...) and the board fixtures resolve the same boards; misused markers and typos are one line.

Findings of an integrator's QA run: ``board(...)`` silently ignored by ``hil_fleet`` and ``fleet(...)`` by
``hil_board`` while ``requires(...)`` checked them; ``board()``/``board(a, b)`` and ``requires("ADC")``
ended in a plugin traceback; a board file's further problems and a project's ./boards/NAME.toml went
unmentioned.
"""

from __future__ import annotations

import shutil

import pytest

from hil.boards import load_board

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)


def _error_lines(out: str, test: str) -> list[str]:
    """The non-blank lines pytest prints between ``ERROR at setup of <test>`` and the next section."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if f"ERROR at setup of {test}" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("=", "_")))
    return [line for line in lines[start + 1:end] if line.strip()]


@pytest.mark.parametrize("markers, fixture, line", [
    ("@pytest.mark.board('bin-esp32c3')\n@pytest.mark.requires('deepsleep')", "hil_fleet",
     "ERROR: test_mix.py::test_mix: @pytest.mark.board('bin-esp32c3') is read by hil_board only, and this test's "
     "hil_fleet would ignore it (*); use @pytest.mark.fleet(**{'bin-esp32c3': 3})"),
    ("@pytest.mark.fleet(**{'bin-esp32c3': 1})\n@pytest.mark.requires('uart')", "hil_board",
     "ERROR: test_mix.py::test_mix: @pytest.mark.fleet(bin-esp32c3=1) is read by hil_fleet only, and this test's "
     "hil_board would ignore it (*); use @pytest.mark.board(NAME) for hil_board (*)"),
    ("@pytest.mark.fleet(**{'bin-esp32c3': 2})", "hil_board_definition", "*fleet(bin-esp32c3=2) is read by hil_fleet only*"),
    ("@pytest.mark.board()", "hil_board",
     "ERROR: test_mix.py::test_mix: @pytest.mark.board(): board(...) takes one board name or path to a board .toml "
     "file, *"),
    ("@pytest.mark.board('streetlight-esp32', 'bin-esp32c3')", "hil_board",
     "ERROR: test_mix.py::test_mix: @pytest.mark.board('streetlight-esp32', 'bin-esp32c3'): board(...) takes one *"),
    ("@pytest.mark.fleet()", "hil_fleet", "ERROR: test_mix.py::test_mix: fleet(...) needs board_name=count *"),
])
def test_a_marker_the_fixtures_ignore_or_a_malformed_one_is_a_usage_error(pytester: pytest.Pytester, markers: str,
                                                                         fixture: str, line: str) -> None:
    """Before nothing was said: the fleet ran on 3 session boards after requires(...) had judged the bin, or
    hil_board's test was skipped for the fleet's bin; board()/board(a, b) erred with a plugin traceback."""
    pytester.makepyfile(test_mix=f"""
import pytest

{markers}
def test_mix({fixture}):
    raise AssertionError("must not run")
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([line])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_fixture_asked_for_at_run_time_checks_the_markers_itself(pytester: pytest.Pytester) -> None:
    """request.getfixturevalue is not in the collection-time fixture list: the fixture says it in one line."""
    pytester.makepyfile(test_runtime="""
import pytest

@pytest.mark.board("bin-esp32c3")
def test_runtime(request):
    request.getfixturevalue("hil_fleet")
    raise AssertionError("must not run")
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["test_runtime.py::test_runtime: @pytest.mark.board('bin-esp32c3') is read by "
                                 "hil_board only, and this test's hil_fleet would ignore it (*"])
    assert "Traceback" not in result.stdout.str() and "must not run" not in result.stdout.str()


def test_requires_checks_each_board_the_fixtures_bring_up(pytester: pytest.Pytester) -> None:
    """With both fixtures each marker reaches its own fixture, and requires(...) checks every board:
    hil_board's bin lacks a UART, hil_fleet's bin too; a fleet without a marker is of the session board."""
    pytester.makepyfile(test_both="""
import pytest

@pytest.mark.board("bin-esp32c3")
@pytest.mark.requires("uart")
def test_board_marker_with_default_fleet(hil_board, hil_fleet):
    raise AssertionError("must not run")

@pytest.mark.fleet(**{"bin-esp32c3": 1})
@pytest.mark.requires("uart")
def test_fleet_marker_with_default_board(hil_board, hil_fleet):
    raise AssertionError("must not run")

@pytest.mark.board("bin-esp32c3")
@pytest.mark.requires("deepsleep")
def test_default_fleet_has_no_deep_sleep(hil_board, hil_fleet):
    raise AssertionError("must not run")
""")
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*test_both.py:3: board 'bin-esp32c3' lacks uart*",
                                 "*test_both.py:8: board 'bin-esp32c3' lacks uart*",
                                 "*test_both.py:13: board 'streetlight-esp32' lacks deepsleep*"])


def test_a_capability_typo_errors_in_one_line_with_the_closest_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_caps="""
import pytest

@pytest.mark.requires("ADC")
def test_upper(hil_board):
    pass

@pytest.mark.requires("deepslep")
def test_typo():
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert _error_lines(out, "test_upper") == [
        "requires: UnknownCapabilityError: @pytest.mark.requires('ADC'): unknown capability 'ADC' (did you mean "
        "'adc'? known: adc, ble, console, deepsleep, faults, gpio, pwm, stimuli, uart, virtual_time)"]
    assert _error_lines(out, "test_typo")[0].startswith(
        "requires: UnknownCapabilityError: @pytest.mark.requires('deepslep'): unknown capability 'deepslep' "
        "(did you mean 'deepsleep'?")
    assert len(_error_lines(out, "test_typo")) == 1


def _board_with_three_problems(path: pytest.Pytester) -> None:
    text = load_board("streetlight-esp32").source.read_text()
    bad = text.replace('pull = "down"', 'pul = "down"').replace('atten = "11db"', 'aten = "11db"')
    assert bad.count("aten =") == 2 and "pul =" in bad
    (path.path / "bad-light.toml").write_text(bad)


def test_a_board_file_with_several_problems_says_how_many_more(pytester: pytest.Pytester) -> None:
    """As `civicedge boards list` does: the first problem, then "(and 2 more: civicedge boards check FILE)"."""
    _board_with_three_problems(pytester)
    pytester.makepyfile(test_bad="""
import pytest

@pytest.mark.board("bad-light.toml")
def test_bad(hil_board_definition):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    lines = _error_lines(result.stdout.str(), "test_bad")
    assert len(lines) == 1, lines
    assert lines[0].startswith("hil_board: UnknownFieldError: @pytest.mark.board('bad-light.toml'): ")
    assert lines[0].endswith(f"(and 2 more: civicedge boards check {pytester.path / 'bad-light.toml'})"), lines[0]
    session = pytester.runpytest("-p", "no:cacheprovider", "--hil-board", "bad-light.toml")
    assert session.ret == pytest.ExitCode.USAGE_ERROR
    session.stderr.fnmatch_lines(["ERROR: --hil-board bad-light.toml: *unknown field*(and 2 more: civicedge boards "
                                  "check bad-light.toml)"])


def test_a_project_boards_folder_is_named_when_a_board_name_is_not_found(pytester: pytest.Pytester,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Board names are looked up in CIVICEDGE_BOARDS and civicedge's own boards/, not ./boards/: say so."""
    monkeypatch.delenv("CIVICEDGE_BOARDS", raising=False)
    (pytester.path / "boards").mkdir()
    shutil.copy(load_board("bin-esp32c3").source, pytester.path / "boards" / "my-bin.toml")
    pytester.makepyfile(test_local="""
import pytest

@pytest.mark.board("my-bin")
def test_local(hil_board_definition):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    lines = _error_lines(result.stdout.str(), "test_local")
    assert len(lines) == 1, lines
    assert lines[0].endswith("; boards/my-bin.toml exists in the current directory, but board names are looked up in "
                             "the CIVICEDGE_BOARDS directories and the boards/ shipped inside civicedge only: pass its "
                             "path (boards/my-bin.toml) or add ./boards to CIVICEDGE_BOARDS"), lines[0]
    session = pytester.runpytest("-p", "no:cacheprovider", "--hil-board", "my-bin")
    assert session.ret == pytest.ExitCode.USAGE_ERROR
    session.stderr.fnmatch_lines(["ERROR: --hil-board my-bin: *; boards/my-bin.toml exists in the current directory*"
                                  "add ./boards to CIVICEDGE_BOARDS"])
    # The way the message gives works.
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(pytester.path / "boards"))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_under_xdist_a_collection_usage_error_errors_its_test_with_the_line(pytester: pytest.Pytester) -> None:
    """A UsageError raised in an xdist worker's collection crashed it: INTERNALERROR, the message lost."""
    pytester.makepyfile(test_xdist="""
import pytest

@pytest.mark.board("bin-esp32c3")
def test_bins(hil_fleet):
    raise AssertionError("must not run")

@pytest.mark.sim(speed="fast")
def test_sim():
    raise AssertionError("must not run")

def test_plain():
    pass
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1", timeout=110)
    result.assert_outcomes(passed=1, errors=2)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out, out
    result.stdout.fnmatch_lines_random([
        "usage error: test_xdist.py::test_bins: @pytest.mark.board('bin-esp32c3') is read by hil_board only, *",
        "usage error: test_xdist.py::test_sim: sim(speed=...) must be a number >= 0 *"])
