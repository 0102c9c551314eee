"""The [mqtt] TLS files are read regular-only and off the event loop, at every connect attempt: a FIFO as
cert_file blocked the whole gateway in open() (tls_context ran on the loop). Errors name the file that
failed (was "cannot use the TLS files of [mqtt] (ca_file, cert_file, key_file): no certificate or crl found")."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from mqtt_support import Running, upstream
from test_mqtt_review import make_pki

from gateway.config.model import MqttConfig
from gateway.storage.store import ReportStore
from gateway.upstream import mqtt
from gateway.upstream.mqtt import TlsFileError, encode_report, tls_context

pytestmark = [pytest.mark.timeout(60)]

PORT = 18852  # no broker: the TLS files fail before any connection


def _release(fifo: Path, after_s: float) -> threading.Thread:
    """Open ``fifo`` for writing after ``after_s`` (unless the test ended), so code stuck opening it to read
    returns and the test fails instead of hanging."""
    def release() -> None:
        time.sleep(after_s)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # nobody is blocked reading it
        os.close(fd)
    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


async def test_a_fifo_as_cert_file_does_not_block_the_loop(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           fast_backoff: None) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstream.mqtt")
    fifo = tmp_path / "client.pem"
    os.mkfifo(fifo, 0o600)
    _release(fifo, 3.0)
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"))
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    try:
        async with Running(upstream(store, PORT, tls=True, cert_file=fifo)) as up:
            started = time.monotonic()
            await asyncio.sleep(1.0)
            assert time.monotonic() - started < 1.5, "the event loop was blocked opening the FIFO"
            assert ticks >= 10, ticks
            assert up.problem == mqtt.HEALTH_FAILING and not up.connected
    finally:
        beat.cancel()
        store.close()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said and "cert_file %s: is a FIFO, not a regular file" % fifo in said[0], said


@pytest.mark.parametrize("which", ["ca_file", "cert_file", "key_file"])
def test_a_fifo_is_refused_at_once_naming_the_file(tmp_path: Path, which: str) -> None:
    pki = make_pki(tmp_path / "pki")
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo, 0o600)
    files = {"ca_file": pki["ca"], "cert_file": pki["client"], "key_file": pki["client_key"], which: fifo}
    _release(fifo, 3.0)
    started = time.monotonic()
    with pytest.raises(TlsFileError) as err:
        tls_context(MqttConfig(host="127.0.0.1", tls=True, **files))
    assert time.monotonic() - started < 1.0
    assert str(err.value) == "%s %s: is a FIFO, not a regular file" % (which, fifo)


def test_a_bad_ca_file_is_named(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with pytest.raises(TlsFileError) as err:
        tls_context(MqttConfig(host="127.0.0.1", tls=True, ca_file=pki["server_key"]))
    assert str(err.value).startswith("ca_file %s: holds no PEM certificate" % pki["server_key"]), err.value


def test_a_key_not_the_certificates_is_named(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with pytest.raises(TlsFileError) as err:
        tls_context(MqttConfig(host="127.0.0.1", tls=True, cert_file=pki["client"], key_file=pki["server_key"]))
    assert str(err.value).startswith("key_file %s is not the key of cert_file %s" % (pki["server_key"],
                                                                                      pki["client"])), err.value


def test_usable_files_make_a_context(tmp_path: Path) -> None:
    """The CA as cadata (with text around it, as openssl pkcs12 writes) and the client certificate and key."""
    pki = make_pki(tmp_path / "pki")
    ca = tmp_path / "ca-with-attributes.pem"
    ca.write_bytes("Bag Attributes\n    friendlyName: Stadtwerke Süd CA\n".encode() + pki["ca"].read_bytes())
    ctx = tls_context(MqttConfig(host="127.0.0.1", tls=True, ca_file=ca, cert_file=pki["client"],
                                 key_file=pki["client_key"]))
    assert len(ctx.get_ca_certs()) == 1 and ctx.check_hostname
    ctx = tls_context(MqttConfig(host="127.0.0.1", tls=True, cert_file=pki["client_both"]))
    assert ctx.check_hostname
