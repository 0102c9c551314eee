"""Copy our firmware onto a board that runs MicroPython, and read back what it holds.

The copy is hash-based (only changed files are written) and ends with a manifest,
``/firmware.json`` = ``{"version", "mode", "files": {device path: sha256}}``, that
``civicedge check`` verifies against the board's own hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from gateway.pipeline.verify import FW_PATTERN
from gateway.resources import firmware_dir
from hil.dut import Dut
from hil.dut.errors import DeviceError, DutError
from hil.dut.dut import WRITE_CHUNK
from hil.dut.files import parent_dirs
from hil.field.device import BOARD_CONFIG_PATH, IDENTITY_PATH, MANIFEST_PATH, device_mpy, read_text, with_retries
from hil.field.device_policy import device_policy_bytes
from hil.field.errors import BoardFullError, DeviceIOError, FieldError, FirmwareVerifyError
from hil.field.mpy_build import BuiltFile, MpyVersion, build_firmware, check_compatible, mpy_cross_version

log = logging.getLogger(__name__)

# What of firmware/ goes to the device (type-checker configs and such stay home).
DEVICE_TOP_LEVEL = frozenset({"boot.py", "main.py", "policy.json", "lib"})
POLICY_FILE = "policy.json"  # staged as the device's copy, not as it is
_VERSION_RE = re.compile(r'^VERSION\s*=\s*"([^"]+)"', re.M)



@dataclass(frozen=True)
class CopyResult:
    """Outcome of :func:`copy_firmware`.

    Attributes:
        mode: ``mpy`` (compiled) or ``source``.
        device_mpy: the device's ``sys.implementation._mpy`` version.
        copied, unchanged: device paths written / already identical.
        manifest: device path -> sha256 of every file installed (board config included).
    """

    mode: str
    device_mpy: MpyVersion
    copied: tuple[str, ...]
    unchanged: tuple[str, ...]
    manifest: dict[str, str]


def firmware_version(src: Path | None = None) -> str:
    """The firmware release (``civic.VERSION``) of the host's firmware tree.

    Raises:
        FieldError: no ``VERSION``, or one the gateway refuses in a report's ``fw`` (every report of a
            board running it would be refused: never stored, acknowledged or answered with the time).
    """
    init = (src or firmware_dir()) / "lib" / "civic" / "__init__.py"
    match = _VERSION_RE.search(init.read_text())
    if match is None:
        raise FieldError(f"no VERSION in {init}", path=str(init))
    version = match.group(1)
    if not FW_PATTERN.fullmatch(version):
        raise FieldError(f"firmware VERSION {version!r} in {init} is not a version string the gateway accepts "
                         "(1-32 of 0-9 A-Z a-z . + -): every report of a board running it would be refused; "
                         "fix VERSION before flashing", path=str(init))
    return version


def stage_firmware(out_dir: Path, *, compile_mpy: bool, src: Path | None = None) -> list[BuiltFile]:
    """Build the device files of ``firmware/`` into ``out_dir`` (compiled or source).

    ``policy.json`` is staged as the device's copy (:func:`hil.field.device_policy.device_policy_bytes`:
    without the keys the firmware drops at load), so every install (``flash``, the simulator, QEMU images)
    and every hash check (``expected_files``) sees the same bytes.

    Raises:
        DevicePolicyError: ``policy.json`` is not JSON or breaks the release rules (a people count not
            released as a noisy count), or the tree's firmware has no readable key list.
    """
    source = src or firmware_dir()
    staging_src = out_dir / "src"
    for item in sorted(source.iterdir()):
        if item.name == POLICY_FILE:
            staging_src.mkdir(parents=True, exist_ok=True)
            (staging_src / POLICY_FILE).write_bytes(
                device_policy_bytes(item.read_bytes(), firmware_root=source, source=str(item)))
        elif item.name in DEVICE_TOP_LEVEL:
            _link_tree(item, staging_src / item.name)
    return build_firmware(staging_src, out_dir / "device", compile_mpy=compile_mpy)


def board_config_bytes(board_config: Mapping[str, Any]) -> bytes:
    """The ``/board.json`` content ``flash`` writes for ``board_config`` (``BoardDefinition.to_device_config()``)."""
    return json.dumps(dict(board_config), separators=(",", ":")).encode()


def manifest_doc(files: Mapping[str, bytes], *, release: str, mode: str) -> dict[str, Any]:
    """The ``/firmware.json`` document describing ``files`` (device path -> content) of ``release`` in ``mode``."""
    return {"version": release, "mode": mode, "files": {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}}


def device_files(board_config: Mapping[str, Any], *, compile_mpy: bool, src: Path | None = None) -> dict[str, bytes]:
    """Everything ``flash`` installs, as one file set for a board's flash built elsewhere (a QEMU image):
    the firmware of ``src`` (default ``firmware/``, only :data:`DEVICE_TOP_LEVEL`) built as
    ``flash`` builds it, ``/board.json``, and the manifest ``/firmware.json`` describing both.

    Args:
        board_config: written as ``/board.json``.
        compile_mpy: ``.mpy`` modules (the device must load the installed mpy-cross's version) or sources.
        src: the firmware tree.

    Returns:
        Device path -> content, sorted by path.

    Raises:
        FieldError: a bad ``VERSION`` (:func:`firmware_version`) or an mpy-cross failure.
    """
    release = firmware_version(src)
    with tempfile.TemporaryDirectory(prefix="civicedge-fw-") as tmp:
        files = {b.device_path: b.local_path.read_bytes() for b in stage_firmware(Path(tmp), compile_mpy=compile_mpy,
                                                                                  src=src)}
    files[BOARD_CONFIG_PATH] = board_config_bytes(board_config)
    doc = manifest_doc(files, release=release, mode="mpy" if compile_mpy else "source")
    files[MANIFEST_PATH] = json.dumps(doc, sort_keys=True).encode()
    return dict(sorted(files.items()))


def copy_firmware(dut: Dut, *, board_config: Mapping[str, Any], source_only: bool = False,
                  compiler: MpyVersion | None = None,
                  on_progress: Callable[[str], None] | None = None,
                  on_copied: Callable[[int, int], None] | None = None) -> CopyResult:
    """Compile (unless ``source_only``), copy by hash, write the manifest and verify by hash.

    Args:
        dut: an open board.
        board_config: written as ``/board.json``.
        source_only: copy ``.py`` files instead of ``.mpy``.
        compiler: the mpy-cross version (None: ask the installed mpy-cross).
        on_progress: told the name of each step as it starts.
        on_copied: told ``(done, to_copy)`` as the sync step writes the files that differ.

    Raises:
        MpyVersionMismatchError: the device cannot load our ``.mpy`` files.
        FirmwareVerifyError: a file's hash on the device differs after the copy.
        DeviceIOError: the link failed.
    """
    say = on_progress or (lambda _step: None)
    release = firmware_version()  # refuses a VERSION the gateway would refuse before the board is touched
    say("read MicroPython version")
    device = MpyVersion.from_sys_mpy(device_mpy(dut))
    if not source_only:
        check_compatible(device, compiler or mpy_cross_version())
    say("compile firmware" if not source_only else "stage firmware sources")
    with tempfile.TemporaryDirectory(prefix="civicedge-fw-") as tmp:
        built = stage_firmware(Path(tmp), compile_mpy=not source_only)
        files = {b.device_path: b.local_path.read_bytes() for b in built}
    files[BOARD_CONFIG_PATH] = board_config_bytes(board_config)
    check_room(dut, files)
    say(f"sync {len(files)} files (only those whose hash differs are copied)")
    try:
        # Half-written temp files of an interrupted copy (written as X.part, then renamed) are junk.
        with_retries(dut, lambda: _remove_partial_files(dut, files))
        # Stale modules of the other mode would shadow the new ones (.py wins over .mpy).
        with_retries(dut, lambda: _remove_other_mode(dut, files, source_only=source_only))
        # each chunk gets chunk_timeout_s(), not the hashing exchange's HASH_TIMEOUT_S: a reset mid-copy
        # stalled the copy for two minutes
        result = with_retries(dut, lambda: dut.sync_files(
            files, timeout_s=HASH_TIMEOUT_S, write_timeout_s=chunk_timeout_s(), dirs_timeout_s=30, on_copied=on_copied))
    except DutError as exc:
        if is_no_space(exc):
            raise _full_after_copy(dut, files) from None
        raise DeviceIOError(f"copying the firmware to {dut.url} failed: {exc}", port=dut.url) from exc
    mode = "source" if source_only else "mpy"
    doc = manifest_doc(files, release=release, mode=mode)
    manifest: dict[str, str] = doc["files"]
    say("verify by hash")
    try:
        with_retries(dut, lambda: dut.write_file(MANIFEST_PATH, json.dumps(doc, sort_keys=True).encode(),
                                                     timeout_s=chunk_timeout_s()))
    except DutError as exc:
        if is_no_space(exc):
            raise _full_after_copy(dut, files) from None
        raise DeviceIOError(f"writing {MANIFEST_PATH} on {dut.url} failed: {exc}", port=dut.url) from exc
    bad = verify_manifest(dut, manifest)
    if bad:
        raise FirmwareVerifyError(f"{len(bad)} files differ on the board after copying: {', '.join(bad)}; retry",
                                  files=bad)
    return CopyResult(mode, device, result.copied, result.unchanged, manifest)


_SPACE = """\
import os
def _civic_space(paths):
    s = os.statvfs('/')
    have = {{}}
    for p in paths:
        try:
            have[p] = os.stat(p)[6]
        except OSError:
            pass
    return [s[1] or s[0], s[4], have]
print(repr(_civic_space({paths!r})))
del _civic_space
"""


# Blocks kept free beyond the files' own: LittleFS writes its metadata copy-on-write (a rename, a
# file's directory entry), so a write that fits its data exactly can still fail.
ROOM_MARGIN_BLOCKS = 2


def read_space(dut: Dut, paths: Iterable[str]) -> tuple[int, int, dict[str, int]] | None:
    """(block size, free blocks, the size of each of ``paths`` that exists) on the board's filesystem, or
    None when the board cannot say: its ``os`` has no ``statvfs`` (optional on MicroPython).

    Raises:
        DutError: the link failed (lost, timed out) or the board raised anything else.
        ValueError: the answer is not the expected one (a garbled line).
    """
    try:
        answer = with_retries(dut, lambda: dut.eval_code(_SPACE.format(paths=sorted(paths)), timeout_s=30))
    except DeviceError as exc:
        if exc.exception_type == "AttributeError" and "statvfs" in (exc.exception_message or ""):
            return None
        raise
    try:
        block, avail, have = answer
        return int(block) or 4096, int(avail), {str(p): int(n) for p, n in dict(have).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"unexpected free-space answer from {dut.url}: {type(answer).__name__}") from exc


def is_no_space(exc: BaseException) -> bool:
    """True when the device raised ``OSError`` ENOSPC (28, MicroPython's number)."""
    return (isinstance(exc, DeviceError) and exc.exception_type == "OSError"
            and re.match(r"(\[Errno )?28\b|.*ENOSPC", exc.exception_message or "") is not None)


def _removed_before_copy(files: Mapping[str, bytes]) -> list[str]:
    """The paths the copy removes before writing: the other mode's twins of ``files`` (``X.py`` of
    ``X.mpy`` and the reverse: :func:`_remove_other_mode` removes those of the mode not copied, and a
    board holds one or the other) and the ``.part`` temp files of an interrupted copy."""
    twins = [p[:-4] + ".py" for p in files if p.endswith(".mpy")] + [
        p[:-3] + ".mpy" for p in files if p.endswith(".py")]
    return sorted({*twins, *(p + ".part" for p in [*files, *twins])} - set(files))


def _room(dut: Dut, files: Mapping[str, bytes]) -> tuple[int, int] | None:
    """(bytes free on the board, bytes the copy needs beyond what its files hold now), or None when
    the board cannot say (no ``os.statvfs``). The blocks of what the copy removes first (the other
    mode's twins, ``.part`` files) are credited: source on a nearly full flash has room for .mpy."""
    removed = _removed_before_copy(files)
    try:
        space = read_space(dut, {*files, *removed})
    except (DutError, ValueError) as exc:
        log.info("cannot read the free space on %s: %s", dut.url, exc)
        return None
    if space is None:
        return None
    block, avail, have = space

    def blocks(size: int) -> int:
        return -(-size // block)

    # Each file is written to X.part, then renamed over X: the largest needs room twice for a moment.
    grow = sum(max(0, blocks(len(data)) - blocks(have.get(p, 0))) for p, data in files.items())
    freed = sum(blocks(have[p]) for p in removed if p in have)
    need = max(0, grow + max((blocks(len(d)) for d in files.values()), default=0) + ROOM_MARGIN_BLOCKS
               - freed) * block  # + manifest
    return int(avail) * block, need


def _full_message(dut: Dut, free: int, need: int) -> str:
    port = shlex.quote(dut.url)
    return (f"the board's filesystem is full ({free // 1024} KB free, the firmware needs about {-(-need // 1024)} KB "
            f"more): remove files (mpremote connect {port} fs ls : lists them, "
            f"mpremote connect {port} fs rm ':PATH' removes one), then run flash again")


def check_room(dut: Dut, files: Mapping[str, bytes]) -> None:
    """Refuse a copy the board's filesystem has no room for, before a file is written.

    Raises:
        BoardFullError: not enough free space (with ``free_kb`` and ``need_kb``).
    """
    room = _room(dut, files)
    if room is None:
        return
    free, need = room
    if need > free:
        raise BoardFullError(_full_message(dut, free, need),
                             port=dut.url, free_kb=free // 1024, need_kb=need // 1024)


def _full_after_copy(dut: Dut, files: Mapping[str, bytes]) -> BoardFullError:
    """The error of a copy the board ran out of space in; its half-written temp files are removed."""
    try:
        with_retries(dut, lambda: _remove_partial_files(dut, files))
    except DutError as exc:
        log.info("could not remove the partial files on %s: %s", dut.url, exc)
    room = _room(dut, files)
    free, need = room if room is not None else (0, sum(len(d) for d in files.values()))
    return BoardFullError(_full_message(dut, free, need),
                          port=dut.url, free_kb=free // 1024, need_kb=need // 1024)


def read_manifest(dut: Dut) -> dict[str, Any] | None:
    """The board's ``/firmware.json`` or None when the firmware was never copied by ``flash``."""
    text = read_text(dut, MANIFEST_PATH)
    if text is None:
        return None
    try:
        doc: Any = json.loads(text)
    except ValueError:
        raise FirmwareVerifyError(f"{MANIFEST_PATH} on the board is not JSON; run civicedge flash again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise FirmwareVerifyError(f"{MANIFEST_PATH} on the board is malformed; run civicedge flash again")
    return doc


def verify_manifest(dut: Dut, manifest: Mapping[str, str]) -> list[str]:
    """Return the device paths whose on-device SHA-256 differs from ``manifest`` (missing included)."""
    try:
        remote = with_retries(dut, lambda: dut.hash_files(list(manifest), timeout_s=60))
    except DutError as exc:
        raise DeviceIOError(f"hashing files on {dut.url} failed: {exc}", port=dut.url) from exc
    return sorted(p for p, h in manifest.items() if remote.get(p) != h)


def expected_files(mode: str) -> dict[str, str]:
    """Device path -> sha256 of this host's firmware release built in ``mode`` (board config excluded)."""
    with tempfile.TemporaryDirectory(prefix="civicedge-fw-") as tmp:
        return {b.device_path: b.sha256 for b in stage_firmware(Path(tmp), compile_mpy=mode == "mpy")}


_REMOVE_PARTIAL = """\
import os
def _civic_clean(dirs, names):
    n = 0
    for d in dirs:
        try:
            entries = list(os.ilistdir(d))
        except OSError:
            continue
        for e in entries:
            if e[1] != 0x4000 and e[0] in names:
                os.remove(d.rstrip('/') + '/' + e[0])
                n += 1
    return n
print(repr(_civic_clean({dirs!r}, {names!r})))
del _civic_clean
"""


def _remove_partial_files(dut: Dut, files: Mapping[str, bytes]) -> None:
    """Remove the ``X.part`` temp files an interrupted copy of ``files`` may have left.

    Only those names, in the firmware's own directories: a board's outbox (thousands of files
    after an outage) or an SD card is not walked, and nobody else's ``.part`` file is touched.
    """
    dirs = sorted({"/"} | set(parent_dirs(list(files))))
    base = {p.rsplit("/", 1)[1] for p in files} | {MANIFEST_PATH[1:], IDENTITY_PATH[1:]}
    # A copy in the other mode (source vs .mpy) may have been the one interrupted.
    twins = {n[:-4] + ".py" for n in base if n.endswith(".mpy")} | {n[:-3] + ".mpy" for n in base if n.endswith(".py")}
    names = sorted(n + ".part" for n in base | twins)
    removed = dut.eval_code(_REMOVE_PARTIAL.format(dirs=dirs, names=names), timeout_s=30)
    if removed:
        log.info("removed %s partial file(s) of an interrupted copy on %s", removed, dut.url)


def _remove_other_mode(dut: Dut, files: Mapping[str, bytes], *, source_only: bool) -> None:
    other = ".mpy" if source_only else ".py"
    mine = ".py" if source_only else ".mpy"
    stale = [p[: -len(mine)] + other for p in files if p.endswith(mine)]
    if stale:
        dut.exec("import os\nfor p in %r:\n    try:\n        os.remove(p)\n    except OSError:\n        pass\n" % stale,
                 timeout_s=30)


def _link_tree(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        for item in src.rglob("*"):
            if item.is_file() and "__pycache__" not in item.parts and not item.name.endswith((".pyc", ".pyi")):
                target = dest / item.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(item.read_bytes())
    else:
        dest.write_bytes(src.read_bytes())


# Each REPL exchange that writes one chunk of a file gets this long: a chunk (WRITE_CHUNK bytes, base64 on
# the wire) takes well under a second at 115200 baud plus a flash write, so a board that reset mid-copy
# is noticed within seconds and with_retries starts over (copying only what still differs).
CHUNK_TIMEOUT_FLOOR_S = 5.0
CHUNK_BYTES_PER_S = 2000.0  # a pessimistic rate for the base64 chunk and its flash write
HASH_TIMEOUT_S = 120.0  # hashing every firmware file on the device in one exchange


def chunk_timeout_s(chunk_bytes: int = WRITE_CHUNK) -> float:
    """The per-chunk write timeout: proportional to the chunk (base64 grows it by 4/3), at least the floor."""
    return max(CHUNK_TIMEOUT_FLOOR_S, 4 * chunk_bytes / 3 / CHUNK_BYTES_PER_S)


def write_board_config(dut: Dut, board_config: Mapping[str, Any]) -> bool:
    """Make ``/board.json`` hold ``board_config``; keep the manifest in step. True if it changed."""
    data = board_config_bytes(board_config)
    try:
        result = with_retries(dut, lambda: dut.sync_files({BOARD_CONFIG_PATH: data}, timeout_s=30))
    except DutError as exc:
        raise DeviceIOError(f"writing {BOARD_CONFIG_PATH} on {dut.url} failed: {exc}", port=dut.url) from exc
    if not result.copied:
        return False
    manifest = read_manifest(dut)
    if manifest is not None:
        manifest["files"][BOARD_CONFIG_PATH] = hashlib.sha256(data).hexdigest()
        doc = json.dumps(manifest, sort_keys=True).encode()
        try:
            with_retries(dut, lambda: dut.write_file(MANIFEST_PATH, doc, timeout_s=chunk_timeout_s()))
        except DutError as exc:
            raise DeviceIOError(f"updating {MANIFEST_PATH} on {dut.url} failed: {exc}", port=dut.url) from exc
    return True
