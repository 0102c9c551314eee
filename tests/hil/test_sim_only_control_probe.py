"""``hil_board.control`` off the sim backend can be probed: ``hasattr`` and ``getattr(..., None)`` answer
instead of raising, while a real use still raises the BackendError naming the requires marker (review LOW:
SimOnlyControl raised BackendError, not AttributeError, for every name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.backends.board import BoardHandle, make_identity
from hil.backends.errors import BackendError, SimOnlyError
from hil.boards import load_board


def test_probing_control_off_the_sim_backend_answers(tmp_path: Path) -> None:
    light = load_board("streetlight-esp32")
    handle = BoardHandle(backend="serial", definition=light, identity=make_identity(light), workdir=tmp_path)
    assert not hasattr(handle.control, "stimulus")
    assert getattr(handle.control, "clock", None) is None
    with pytest.raises(BackendError) as err:
        handle.control.stimulus("lux", 120)
    assert isinstance(err.value, AttributeError) and isinstance(err.value, SimOnlyError)
    assert err.value.details == {"backend": "serial", "attribute": "stimulus"}
    assert "is sim-only" in str(err.value) and 'requires("stimuli")' in str(err.value)
