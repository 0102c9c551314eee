"""``<data_dir>/restore-in-progress``: a ``civicedge gateway restore`` swapping files (gateway.cli.restore_swap).

The restore removes it when its swap ends, rolled back or done; only a SIGKILL or a power cut during the swap
leaves it, and then the data directory may hold half old, half restored files. ``run``, ``run --check`` and
``backup`` refuse such a directory, instead of opening (or copying) a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.errors import StorageError

MARKER = "restore-in-progress"


def check_no_restore_marker(data_dir: Path) -> None:
    """Refuse a data directory a restore was cut off in.

    Raises:
        StorageError: reason ``restore_in_progress``, naming the marker, the backup, the folder of
            replaced files and the restore's pid (as the marker records them), and what to do.
    """
    marker = data_dir / MARKER
    if not os.path.lexists(marker):
        return
    try:
        info = json.loads(marker.read_bytes()[:65536])
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    pid = str(info.get("pid", "?"))
    running = pid.isdigit() and Path("/proc", pid).exists()
    what = ("a `civicedge gateway restore` (pid %s) is swapping files here: wait for it to finish" % pid if running
            else "a `civicedge gateway restore` was swapping files here and was cut off (pid %s, started %s): the "
                 "files may be half old, half restored. Run the same restore again (civicedge gateway restore %s), "
                 "or move the files from %s back by hand, then remove %s"
                 % (pid, info.get("started", "?"), info.get("backup", "BACKUP_DIR"), info.get("aside", "the "
                    "replaced-* folder"), marker))
    raise StorageError("%s exists: %s" % (marker, what), reason="restore_in_progress")
