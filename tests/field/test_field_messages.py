"""Messages a technician reads name the problem in words, not Python's or pyserial's internals
(field QA: ``<urlopen error [Errno 111] Connection refused>``, ``Could not configure port: (25,
'Inappropriate ioctl for device')``, ``field 'links.ble' = None``)."""

from __future__ import annotations

import socket

import pytest

from hil.field.errors import FieldError
from hil.field.ports import check_port_available
from hil.field.registration import AdminApiRegistrar


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_gateway_that_refuses_the_connection_is_said_in_words() -> None:
    from hil.field.identity import Identity

    registrar = AdminApiRegistrar(f"http://127.0.0.1:{_closed_port()}", token="t" * 32, timeout_s=2)
    identity = Identity(id="sl-9", kind="streetlight", zone="centre", lat="52.37", lon="4.89", key=bytes(range(32)))
    with pytest.raises(FieldError) as info:
        registrar(identity, False)
    assert str(info.value).endswith(": Connection refused") and "urlopen" not in str(info.value)


def test_a_device_that_is_no_serial_port_is_said_so() -> None:
    with pytest.raises(FieldError) as info:
        check_port_available("/dev/null")
    assert "/dev/null is not a serial device" in str(info.value) and "ioctl" not in str(info.value)
