"""The ``[mqtt]`` section: the upstream broker, its topics, credentials and TLS files (docs/mqtt.md)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from gateway.config.model import MqttConfig
from gateway.config.secret_files import check_key_mode, check_readable, holds_private_key, read_secret
from gateway.config.section import Section, is_host


# MQTT 3.1.1 §1.5.3: a topic is at most 65535 bytes of UTF-8. The gateway appends
# /<gateway id>/<kind>/<device>/<type> (at most 64 + 16 + 32 + 16 bytes and four slashes): 256 bytes is room enough.
TOPIC_MAX_BYTES = 65535
TOPIC_PREFIX_MAX_BYTES = TOPIC_MAX_BYTES - 256
# MQTT sets no limit on a topic's levels, brokers do: mosquitto closes the connection on a publish to a
# topic of more than 200 levels (and other brokers allow far fewer). The gateway adds 4 levels.
TOPIC_PREFIX_MAX_LEVELS = 32


def check_topic_prefix(prefix: str) -> str | None:
    """Why ``prefix`` cannot start every upstream topic, or None when it can (see docs/mqtt.md, Topic)."""
    if not prefix:
        return "must not be empty"
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > TOPIC_PREFIX_MAX_BYTES:
        return ("is %d bytes of UTF-8, above %d (an MQTT topic is at most %d bytes, and the gateway appends"
                " /<gateway>/<kind>/<device>/<type>)" % (size, TOPIC_PREFIX_MAX_BYTES, TOPIC_MAX_BYTES))
    if prefix.startswith("$"):
        # MQTT 3.1.1 §4.7.2: $ topics are the broker's; mosquitto accepts a publish to $SYS/... and drops it.
        return "must not start with $ (topics starting with $ belong to the broker, which drops such publishes)"
    for c in prefix:
        if c in "+#":
            return "must not contain the wildcard %r (wildcards are for subscribers)" % c
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return "must not contain the control or separator character U+%04X" % ord(c)
    if prefix.startswith("/") or prefix.endswith("/"):
        return "must not start or end with / (the gateway adds the separator)"
    if "//" in prefix:
        return "must not contain an empty level (//)"
    levels = prefix.count("/") + 1
    if levels > TOPIC_PREFIX_MAX_LEVELS:
        return ("has %d levels, above %d (the gateway adds 4 more, and brokers limit a topic's levels: mosquitto"
                " closes the connection on a publish to more than 200)" % (levels, TOPIC_PREFIX_MAX_LEVELS))
    return None


# MQTT 3.1.1 §1.5.3: a string is at most 65535 bytes of UTF-8 (a 16-bit length prefix).
MQTT_STRING_MAX_BYTES = 65535


def check_client_id(client_id: str) -> str | None:
    """Why ``client_id`` cannot be sent in an MQTT CONNECT, or None when it can (MQTT 3.1.1 §1.5.3).

    Longer than a string may be, the client could never build the packet and retried forever; with
    U+0000 (which the broker must refuse) or another control character, the broker closed the
    connection and it looked like a timeout.
    """
    size = len(client_id.encode("utf-8", "surrogatepass"))
    if size > MQTT_STRING_MAX_BYTES:
        return "is %d bytes of UTF-8, above %d (the most an MQTT string holds)" % (size, MQTT_STRING_MAX_BYTES)
    for c in client_id:
        if unicodedata.category(c) in ("Cc", "Cs"):
            return "must not contain the control character U+%04X (MQTT forbids it in a string)" % ord(c)
    return None


def parse_mqtt(sec: Section, base: Path) -> MqttConfig:
    """``[mqtt]``: the password file is read now (owner-only), the TLS files checked readable and a
    private key's mode checked; paths are relative to ``base``."""
    host = sec.get("host", str, required=True)
    if not is_host(host):
        # An empty host made the upstream task end at once, silently ("upstream :1883").
        raise sec.error("mqtt.host", "mqtt.host %r must be the broker's host name or IP address" % host, "bad_value")
    client_id = sec.get("client_id", str)
    if client_id is not None and not client_id:
        raise sec.error("mqtt.client_id", "mqtt.client_id must not be empty (leave it out for the default"
                        " civicedge-<gateway id>)", "bad_value")
    id_problem = None if client_id is None else check_client_id(client_id)
    if client_id is not None and id_problem is not None:
        shown = client_id if len(client_id) <= 80 else client_id[:60] + "..."
        raise sec.error("mqtt.client_id", "mqtt.client_id %r %s" % (shown, id_problem), "bad_value")
    prefix = sec.get("topic_prefix", str, "civicedge")
    problem = check_topic_prefix(prefix)
    if problem is not None:
        shown = prefix if len(prefix) <= 80 else prefix[:60] + "..."
        raise sec.error("mqtt.topic_prefix", "mqtt.topic_prefix %r %s" % (shown, problem), "bad_value")
    if "password" in sec.data:
        # Config files are shared and pasted into tickets; a secret belongs in its own owner-only file.
        raise sec.error("mqtt.password", "mqtt.password is not accepted in the config file: put the password in a"
                        " file only you can read (chmod 600) and name it with mqtt.password_file", "bad_value")
    username = sec.get("username", str)
    if username is not None and not username:
        raise sec.error("mqtt.username", "mqtt.username must not be empty (leave it out to connect without"
                        " credentials)", "bad_value")
    password_file, password = None, None
    if sec.get("password_file", str) is not None:
        if username is None:
            raise sec.error("mqtt.password_file", "mqtt.password_file needs mqtt.username (MQTT sends no password"
                            " without a user name)", "missing")
        password_file = sec.path("password_file", base, base, file=True)
        password = read_secret(sec, "mqtt.password_file", password_file)
    tls = sec.get("tls", bool, False)
    files: dict[str, Path | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        files[key] = None
        if sec.get(key, str) is None:
            continue
        if not tls:
            raise sec.error("mqtt.%s" % key, "mqtt.%s is only used with TLS: set mqtt.tls = true (or leave the key"
                            " out)" % key, "bad_value")
        files[key] = path = sec.path(key, base, base, file=True)
        check_readable(sec, "mqtt.%s" % key, path)
    if files["key_file"] is not None and files["cert_file"] is None:
        raise sec.error("mqtt.key_file", "mqtt.key_file needs mqtt.cert_file (the client certificate it belongs"
                        " to)", "missing")
    if files["key_file"] is not None:
        check_key_mode(sec, "mqtt.key_file", files["key_file"])
    if files["cert_file"] is not None and holds_private_key(sec, "mqtt.cert_file", files["cert_file"]):
        check_key_mode(sec, "mqtt.cert_file", files["cert_file"])  # the key is in it (no key_file needed)
    return MqttConfig(host=host, port=sec.number("port", int, 8883 if tls else 1883, 1, 65535), topic_prefix=prefix,
                      client_id=client_id,
                      outbox_max_bytes=sec.number("outbox_max_bytes", int, 64 * 1024 * 1024, 1024, 2**40),
                      outbox_policy=sec.choice("outbox_policy", "drop_oldest", ("drop_oldest", "drop_newest")),
                      keepalive_s=sec.number("keepalive_s", int, 30, 5, 3600), username=username,
                      password_file=password_file, password=password, tls=tls, ca_file=files["ca_file"],
                      cert_file=files["cert_file"], key_file=files["key_file"])
