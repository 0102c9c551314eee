"""docs/hil.md's advice on giving path options as ``--hil-port=PATH``: pytest picks its rootdir before it loads the
plugin, so ``--hil-port /dev/…`` (two words) counts the path among the test paths and, with no configuration file,
the rootdir becomes ``/``; the ``=`` form, or a pytest.ini in the project, keeps it at the project. And the page's
example commands give such options in the ``=`` form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "hil.md"
PORT = "/dev/null"  # an existing path outside the project, as /dev/ttyUSB0 is on a rig
# --collect-only: nothing is opened; no cache provider: nothing is written to the rootdir.
COLLECT = ("--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--collect-only", "-p", "no:cacheprovider")


def _rootdir(result: pytest.RunResult) -> str:
    lines = [line for line in result.stdout.lines if line.startswith("rootdir: ")]
    assert lines, result.stdout.str()
    return lines[0].removeprefix("rootdir: ").split(",")[0]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_rig="def test_rig():\n    pass\n")
    return pytester


def test_the_two_word_form_roots_pytest_at_the_filesystem_root(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*COLLECT, "--hil-port", PORT, "test_rig.py")
    assert _rootdir(result) == "/"


def test_the_equals_form_keeps_the_projects_rootdir(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*COLLECT, f"--hil-port={PORT}", "test_rig.py")
    assert _rootdir(result) == str(project.path)
    result.stdout.fnmatch_lines(["*1 test collected*"])


def test_a_configuration_file_in_the_project_keeps_its_rootdir(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\n")
    result = project.runpytest_subprocess(*COLLECT, "--hil-port", PORT, "test_rig.py")
    assert _rootdir(result) == str(project.path)


def test_another_path_option_in_two_words_moves_the_rootdir_too(project: pytest.Pytester,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    leases = tmp_path_factory.mktemp("leases")  # outside the project
    result = project.runpytest_subprocess(*COLLECT, f"--hil-port={PORT}", "--hil-lease-dir", str(leases), "test_rig.py")
    assert _rootdir(result) != str(project.path)
    result = project.runpytest_subprocess(*COLLECT, f"--hil-port={PORT}", f"--hil-lease-dir={leases}", "test_rig.py")
    assert _rootdir(result) == str(project.path)


PATH_OPTIONS = re.compile(r"--hil-(?:port|data-port|qemu-image|lease-dir) ")


def test_the_docs_commands_give_path_options_with_equals() -> None:
    text = DOC.read_text()
    commands = re.findall(r"`(pytest [^`]*)`", text)
    assert any("--hil-port=" in command for command in commands), commands
    two_words = [command for command in commands if PATH_OPTIONS.search(command)]
    assert not two_words, two_words
    options = text.split("### Options", 1)[1]
    assert "`--hil-port=/dev/ttyUSB0`" in options.split("|", 1)[0]  # the advice opens the options section
