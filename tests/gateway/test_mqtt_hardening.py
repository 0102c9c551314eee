"""[mqtt] hardening against a real mosquitto: topic_prefix validation, topics built from the current prefix,
a message the client refuses does not block the others, broker credentials and TLS, quiet library logs,
a clean broker shutdown named as such, held-back outbox-drop counts logged at SIGTERM."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from mqtt_support import Running, load_mqtt, mosquitto, until, upstream
from procs import GatewayProcess, Mosquitto, PtyDevice, Subscriber, free_port

from gateway.errors import ConfigError
from gateway.storage.store import ReportRecord, ReportStore
from gateway.upstream.mqtt import encode_report

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]

LOGGER = "gateway.upstream.mqtt"


# -- config -----------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, why", [
    ("a" * 65400, "bytes of UTF-8, above"),
    ("\u00e9" * 33000, "bytes of UTF-8, above"),  # 66000 bytes although 33000 characters
    ("$SYS/city", "must not start with $"),
    ("city//x", "empty level"),
    ("city\u2028x", "U+2028"),
    ("city\tx", "U+0009"),
    ("city/+", "wildcard"),
    ("/city", "start or end with /"),
])
def test_a_bad_topic_prefix_is_refused_with_the_reason(tmp_path: Path, prefix: str, why: str) -> None:
    import json

    with pytest.raises(ConfigError) as err:
        load_mqtt(tmp_path, "topic_prefix = %s\n" % json.dumps(prefix))
    assert err.value.reason == "bad_value" and err.value.key == "mqtt.topic_prefix"
    assert why in str(err.value), str(err.value)
    assert len(str(err.value)) < 600  # a 65 KB prefix is not echoed whole


def test_a_long_but_valid_prefix_and_unicode_are_accepted(tmp_path: Path) -> None:
    assert load_mqtt(tmp_path, 'topic_prefix = "stad/\u00e9t\u00e9"\n').topic_prefix == "stad/\u00e9t\u00e9"
    assert len(load_mqtt(tmp_path, 'topic_prefix = "%s"\n' % ("a" * 65000)).topic_prefix) == 65000


def test_credentials_and_tls_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_mqtt(tmp_path, 'username = "gw"\npassword = "s3cret-value"\n')
    assert err.value.key == "mqtt.password" and "password_file" in str(err.value)
    assert "s3cret-value" not in str(err.value)
    secret = tmp_path / "mqtt.pw"
    secret.write_text("s3cret-value\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        load_mqtt(tmp_path, 'username = "gw"\npassword_file = "mqtt.pw"\n')
    assert err.value.key == "mqtt.password_file" and "chmod 600" in str(err.value)
    secret.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        load_mqtt(tmp_path, 'password_file = "mqtt.pw"\n')
    assert err.value.reason == "missing" and "username" in str(err.value)
    cfg = load_mqtt(tmp_path, 'username = "gw"\npassword_file = "mqtt.pw"\n')
    assert cfg.password == "s3cret-value" and "s3cret" not in repr(cfg)
    with pytest.raises(ConfigError) as err:
        load_mqtt(tmp_path, 'ca_file = "mqtt.pw"\n')
    assert err.value.key == "mqtt.ca_file" and "tls = true" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_mqtt(tmp_path, 'tls = true\nca_file = "nope.pem"\n')
    assert err.value.reason == "bad_path" and "does not exist" in str(err.value)
    assert load_mqtt(tmp_path, "tls = true\n").port == 8883


# -- brokers ----------------------------------------------------------------------------------

def record(seq: int, device: str = "bin-1") -> ReportRecord:
    return ReportRecord(device, seq, "bin", "north", "win", 900 * seq, 900, {"fill": 10}, {}, [], None, 1.0,
                        "serial:x", "00" * 32)


# -- topics and refused messages --------------------------------------------------------------

async def test_the_backlog_is_published_under_the_current_prefix(tmp_path: Path, fast_backoff: None) -> None:
    """QA: after the prefix was changed back, the backlog still went to oldpfx/... (each row kept its topic)."""
    broker = mosquitto(tmp_path / "b")
    broker.start()
    sub = Subscriber(broker.port, topic="#")
    sub.wait_subscribed()
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("oldpfx", "gw"))
    try:
        store.insert_batch([record(s) for s in range(1, 6)])
        async with Running(upstream(store, broker.port)):
            await until(lambda: len(sub.messages) >= 5, 15, "backlog delivered")
            await until(lambda: store.outbox_depth == 0, 5, "outbox emptied")
        assert {t for t, _ in sub.messages} == {"city/gw/bin/bin-1/win"}
    finally:
        store.close()
        sub.close()
        broker.stop()


async def test_a_message_the_client_refuses_is_dropped_once_and_the_rest_delivered_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, fast_backoff: None) -> None:
    """QA: a topic paho refuses ("Publish topic is too long.") headed the outbox forever, the upstream
    retried every 0.5 s with an ERROR each time and re-published the messages behind it (544 deliveries
    for 88 reports)."""
    caplog.set_level(logging.INFO)
    broker = mosquitto(tmp_path / "b")
    broker.start()
    sub = Subscriber(broker.port)
    sub.wait_subscribed()
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"))
    try:
        # a device id no topic can hold (70 000 bytes) among good reports: refused by the client before sending
        store.insert_batch([record(1), record(2), record(1, device="x" * 70000), record(3)]
                           + [record(s) for s in range(4, 61)])
        async with Running(upstream(store, broker.port)) as up:
            await until(lambda: store.outbox_depth == 0, 20, "outbox emptied")
            await asyncio.sleep(0.5)  # a re-publish would show now
            assert up.connected and up.problem is None
        assert sorted(sub.seqs("bin-1")) == list(range(1, 61)), "each delivered exactly once"
        assert store.counter("outbox_refused") == 1 and up.refused == 1
        assert up._metrics.registry.get_sample_value("civicedge_outbox_refused_total") == 1.0
        refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(refused) == 1 and "refused 1 message(s)" in refused[0], refused
        assert "too long" in refused[0] and len(refused[0]) < 600, refused[0][:300]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        store.close()
        sub.close()
        broker.stop()


# -- credentials ------------------------------------------------------------------------------

def password_broker(tmp_path: Path) -> Mosquitto:
    passwd = Path("/usr/bin/mosquitto_passwd")
    if not passwd.exists():
        pytest.skip("mosquitto_passwd is not installed (package mosquitto)")
    pwfile = tmp_path / "b" / "passwd"
    pwfile.parent.mkdir(parents=True)
    subprocess.run([str(passwd), "-b", "-c", str(pwfile), "gw", "right-password"], check=True, capture_output=True)
    pwfile.chmod(0o600)
    return mosquitto(tmp_path / "b", "password_file %s\n" % pwfile, anonymous=False)


async def test_wrong_credentials_are_named_and_right_ones_deliver(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                  fast_backoff: None) -> None:
    caplog.set_level(logging.INFO)
    broker = password_broker(tmp_path)
    broker.start()
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"))
    try:
        store.insert_batch([record(1)])
        async with Running(upstream(store, broker.port, username="gw", password="wrong-password")) as up:
            await until(lambda: up.problem == "mqtt broker refused the credentials", 10, "credentials refused")
            await asyncio.sleep(0.5)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings and "refused the credentials" in warnings[0] and "'gw'" in warnings[0], warnings
        assert not any("wrong-password" in r.getMessage() for r in caplog.records)
        assert store.outbox_depth == 1
        async with Running(upstream(store, broker.port, username="gw", password="right-password")) as up:
            await until(lambda: store.outbox_depth == 0, 10, "delivered with the right password")
            assert up.problem is None
    finally:
        store.close()
        broker.stop()


# -- TLS --------------------------------------------------------------------------------------

def make_pki(where: Path) -> dict[str, Path]:
    """A self-signed CA, a server certificate for 127.0.0.1 signed by it, and a second, unrelated CA."""
    x509 = pytest.importorskip("cryptography.x509", reason="python cryptography is needed to make test certificates")
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    where.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    pems = {"ca": cert("test CA", ca_key, "test CA", ca_key, True),
            "other_ca": cert("other CA", other_key, "other CA", other_key, True),
            "server": cert("127.0.0.1", server_key, "test CA", ca_key, False)}
    for label, c in pems.items():
        out[label] = where / ("%s.pem" % label)
        out[label].write_bytes(c.public_bytes(serialization.Encoding.PEM))
    out["server_key"] = where / "server.key"
    out["server_key"].write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                                           serialization.NoEncryption()))
    out["server_key"].chmod(0o600)
    return out


async def test_tls_right_ca_delivers_wrong_ca_and_plain_client_are_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, fast_backoff: None) -> None:
    pki = make_pki(tmp_path / "pki")
    broker = mosquitto(tmp_path / "b", "cafile %s\ncertfile %s\nkeyfile %s\n"
                    % (pki["ca"], pki["server"], pki["server_key"]))
    broker.start()
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"))
    try:
        store.insert_batch([record(1)])
        caplog.set_level(logging.INFO)
        async with Running(upstream(store, broker.port, tls=True, ca_file=pki["other_ca"])) as up:
            await until(lambda: up.problem == "mqtt broker TLS handshake failed", 10, "TLS failure named")
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert "TLS handshake failed" in warnings[0] and "CERTIFICATE_VERIFY_FAILED" in warnings[0], warnings

        # plain MQTT to the TLS-only listener: QA saw a library ERROR per retry and "Operation timed out"
        caplog.clear()
        async with Running(upstream(store, broker.port)) as up:
            await until(lambda: up.problem is not None and "reset" in up.problem, 30, "reset named")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert "tls = true" in warnings[0], warnings

        async with Running(upstream(store, broker.port, tls=True, ca_file=pki["ca"])) as up:
            await until(lambda: store.outbox_depth == 0, 10, "delivered over TLS")
            assert up.problem is None
    finally:
        store.close()
        broker.stop()


# -- loss wording -----------------------------------------------------------------------------

async def test_a_broker_shut_down_cleanly_closed_the_connection(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                 fast_backoff: None) -> None:
    """It was reported as "lost ([code:128] Unspecified error)"."""
    caplog.set_level(logging.INFO)
    broker = mosquitto(tmp_path / "b")
    broker.start()
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw", outbox_encoder=encode_report("city", "gw"))
    try:
        async with Running(upstream(store, broker.port)) as up:
            await until(lambda: up.connected, 10, "connected")
            broker.stop()
            await until(lambda: not up.connected, 10, "loss seen")
        lost = [r.getMessage() for r in caplog.records if " lost " in r.getMessage()]
        assert lost and "closed the connection" in lost[0] and "code:128" not in lost[0], lost
    finally:
        store.close()
        broker.stop()


# -- gateway run ------------------------------------------------------------------------------

def test_held_back_outbox_drops_are_logged_at_sigterm(tmp_path: Path) -> None:
    """QA: drops the once-a-minute limit held back were never logged before shutdown."""
    dev = PtyDevice(KEYS)
    down = free_port()  # nothing listens: the outbox only fills
    gw = GatewayProcess(make_env(tmp_path, serial=(dev.path,), mqtt_port=down, outbox_max_bytes=1024),
                        tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("opened %s" % dev.path)
        for seq in range(1, 11):  # one commit each: the first drop is logged, the later ones held back
            dev.send([report_frame("bin-1", seq, KEYS["bin-1"])])
            dev.wait_ack("bin-1", seq)
        conn = sqlite3.connect(tmp_path / "data" / "reports.sqlite")
        dropped = conn.execute("SELECT value FROM counters WHERE name='outbox_dropped'").fetchone()[0]
        conn.close()
        assert dropped >= 3
        assert gw.logs().count("dropped") == 1, gw.logs()  # "Each failed retry is INFO (-v)": no more WARNINGs
        gw.wait_log("still unreachable")  # a failed retry: INFO
        assert gw.terminate() == 0
    finally:
        gw.kill()
        dev.close()
    logs = gw.logs()
    first = int(logs.split("dropped ", 1)[1].split(" ", 1)[0])
    assert "dropped %d more message(s) since the last such line" % (dropped - first) in logs, logs
    assert os.path.exists(tmp_path / "data" / "reports.sqlite")


# -- run --check ------------------------------------------------------------------------------

def test_run_check_has_an_mqtt_line_and_refuses_unusable_tls_files(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli.main import main

    pki = make_pki(tmp_path / "pki")
    config = make_env(tmp_path, mqtt_port=free_port(), extra="")
    text = config.read_text().replace('host = "127.0.0.1"', 'host = "localhost"')
    config.write_text(text)
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("mqtt "))
    assert "localhost" in line and "resolves to" in line and "broker not contacted" in line, out
    config.write_text(text.replace("keepalive_s = 5", 'keepalive_s = 5\ntls = true\nca_file = "%s"' % pki["server_key"]))
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
    err = capsys.readouterr().err
    assert "TLS files of [mqtt]" in err, err
    config.write_text(text.replace("keepalive_s = 5", 'keepalive_s = 5\ntls = true\nca_file = "%s"' % pki["ca"]))
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0
    assert "TLS (CA %s)" % pki["ca"] in capsys.readouterr().out
