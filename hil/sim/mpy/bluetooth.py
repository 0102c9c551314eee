# MicroPython `bluetooth` module for virtual boards (runs INSIDE MicroPython, not CPython).
#
# The subset of ESP32 MicroPython's low-level BLE API the firmware uses, with the same
# semantics where the firmware can tell: BLE() is one shared stack, handles come from
# gatts_register_services, IRQ data tuples are the board's, attribute buffers default to
# 20 bytes (gatts_set_buffer raises it), notifications are cut to ATT_MTU-3 by the host side.
# Stack operations go to the host over the simulator channel "ble" (JS module _simhw) as JSON;
# hil/sim/radio/board_bridge.py turns them into a Bumble GATT peripheral on the virtual radio.
# Message format: docs/ble.md. Keep to the MicroPython subset (no f-strings with '=').

import binascii
import hashlib
import json
import sys

from micropython import const

try:
    import _simhw
except ImportError:  # only inside a virtual board; imported elsewhere for mpy-cross checks
    _simhw = None

FLAG_BROADCAST = const(0x0001)
FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)
FLAG_AUTHENTICATED_SIGNED_WRITE = const(0x0040)
FLAG_AUX_WRITE = const(0x0100)
FLAG_READ_ENCRYPTED = const(0x0200)
FLAG_READ_AUTHENTICATED = const(0x0400)
FLAG_READ_AUTHORIZED = const(0x0800)
FLAG_WRITE_ENCRYPTED = const(0x1000)
FLAG_WRITE_AUTHENTICATED = const(0x2000)
FLAG_WRITE_AUTHORIZED = const(0x4000)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_MTU_EXCHANGED = const(21)

_CHANNEL = "ble"
_DEFAULT_ATTR_LEN = const(20)      # MP_BLUETOOTH_DEFAULT_ATTR_LEN
_DEFAULT_MTU = const(256)          # ESP-IDF NimBLE preferred ATT MTU
_ATT_MTU_MIN = const(23)
_ADV_MAX = const(31)               # legacy advertising / scan response payload
_FIRST_USER_HANDLE = const(12)     # after the GAP and GATT services, as NimBLE lays them out
_ENODEV = const(19)                # stack not active
_EINVAL = const(22)
_EIO = const(5)
_ENOTCONN = const(-128)            # what ESP32 gatts_notify raises on a dead conn handle
_ADDR_SALT = b"civicedge-ble-addr:"  # same as hil/sim/radio/address.py
_DEFAULT_NAME = b"MPY ESP32"


def _hex(data):
    return binascii.hexlify(bytes(data)).decode()


def _unhex(text):
    return binascii.unhexlify(text)


class UUID:
    """A 16-bit or 128-bit Bluetooth UUID: UUID(0x180F), UUID("180f"), UUID("6c3e0001-...")."""

    def __init__(self, value):
        if isinstance(value, UUID):
            self._le = value._le
            return
        if isinstance(value, int):
            if value < 0 or value > 0xFFFF:
                raise ValueError("invalid UUID")
            self._le = bytes((value & 0xFF, value >> 8))
            return
        if isinstance(value, str):
            digits = value.replace("-", "")
            if len(digits) not in (4, 32) or (len(digits) == 32 and len(value) != 36):
                raise ValueError("invalid UUID")
            try:
                raw = binascii.unhexlify(digits)
            except ValueError:
                raise ValueError("invalid UUID")
            self._le = bytes(reversed(raw))
            return
        try:
            raw = bytes(value)
        except TypeError:
            raise TypeError("UUID must be int, str or bytes")
        if len(raw) not in (2, 4, 16):
            raise ValueError("invalid UUID")
        self._le = raw  # buffer form is little-endian, as on the board

    def __eq__(self, other):
        return isinstance(other, UUID) and other._le == self._le

    def __hash__(self):
        return hash(self._le)

    def text(self):
        """Canonical text: 4 hex digits or the dashed 128-bit form (lower case)."""
        h = _hex(bytes(reversed(self._le)))
        if len(h) == 32:
            return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
        return h

    def __str__(self):
        return self.__repr__()

    def __repr__(self):
        if len(self._le) == 2:
            return "UUID(0x" + self.text() + ")"
        return "UUID('" + self.text() + "')"


class _Stack:
    # One per interpreter: the board has one controller, BLE() objects share it.
    def __init__(self):
        self.active = False
        self.handler = None
        self.name = _DEFAULT_NAME
        self.mtu = _DEFAULT_MTU
        self.addr = None
        self.db = {}            # handle -> [value, buffer_len, append]
        self.conns = {}         # conn handle -> negotiated MTU
        self.adv = b""
        self.resp = b""
        self.listening = False


_stack = _Stack()


def _send(msg):
    if _simhw is None:
        raise OSError(_ENODEV)
    _simhw.send(_CHANNEL, json.dumps(msg))


def _irq(event, data):
    handler = _stack.handler
    if handler is None:
        return
    try:
        handler(event, data)
    except Exception as exc:  # as on the board: report and keep the stack alive
        print("Unhandled exception in IRQ callback handler")
        sys.print_exception(exc)


def _on_host(payload):
    try:
        msg = json.loads(payload)
        ev = msg["ev"]
    except (ValueError, KeyError, TypeError):
        print("bluetooth: bad host message")
        return
    s = _stack
    if ev == "addr":
        s.addr = _unhex(msg["addr"])
        return
    if not s.active:
        return
    if ev == "connect":
        conn = msg["conn"]
        s.conns[conn] = _ATT_MTU_MIN
        _irq(_IRQ_CENTRAL_CONNECT, (conn, msg["addr_type"], memoryview(_unhex(msg["addr"]))))
    elif ev == "disconnect":
        conn = msg["conn"]
        if s.conns.pop(conn, None) is not None:
            _irq(_IRQ_CENTRAL_DISCONNECT, (conn, msg["addr_type"], memoryview(_unhex(msg["addr"]))))
    elif ev == "write":
        entry = s.db.get(msg["handle"])
        if entry is not None:
            entry[0] = _unhex(msg["value"])
            _irq(_IRQ_GATTS_WRITE, (msg["conn"], msg["handle"]))
    elif ev == "mtu":
        conn = msg["conn"]
        if conn in s.conns:
            s.conns[conn] = msg["mtu"]
            _irq(_IRQ_MTU_EXCHANGED, (conn, msg["mtu"]))
    elif ev == "indicate_done":
        _irq(_IRQ_GATTS_INDICATE_DONE, (msg["conn"], msg["handle"], msg["status"]))


def _derive_addr():
    # Random static address from the provisioned id (the host derives the same one).
    try:
        with open("/identity.json") as f:
            ident = json.load(f)
        seed = ident["id"].encode()
    except (OSError, ValueError, KeyError, AttributeError):
        import os
        seed = os.urandom(16)
    raw = bytearray(hashlib.sha256(_ADDR_SALT + seed).digest()[:6])
    raw[0] |= 0xC0
    return bytes(raw)


def _listen():
    if not _stack.listening and _simhw is not None:
        _simhw.on(_CHANNEL, _on_host)
        _stack.listening = True


def _need_active():
    if not _stack.active:
        raise OSError(_ENODEV)


def _entry(handle):
    entry = _stack.db.get(handle)
    if entry is None:
        raise OSError(_EINVAL)
    return entry


class BLE:
    """The board's BLE stack (every BLE() object is the same stack)."""

    def active(self, *args):
        s = _stack
        if not args:
            return s.active
        on = bool(args[0])
        if on and not s.active:
            _listen()
            if s.addr is None:
                s.addr = _derive_addr()
            s.active = True
            _send({"op": "active", "on": True, "name": s.name.decode(), "mtu": s.mtu})
        elif not on and s.active:
            s.active = False
            s.db = {}
            s.conns = {}
            _send({"op": "active", "on": False})
        return s.active

    def config(self, *args, **kwargs):
        s = _stack
        if args:
            if len(args) != 1 or kwargs:
                raise TypeError("must query one param")
            key = args[0]
            if key == "mac":
                _need_active()
                return (1, s.addr)  # random static address
            if key == "gap_name":
                return s.name
            if key == "mtu":
                return s.mtu
            if key == "addr_mode":
                return 1
            raise ValueError("unknown config param")
        for key in kwargs:
            value = kwargs[key]
            if key == "gap_name":
                s.name = value.encode() if isinstance(value, str) else bytes(value)
                if s.active:
                    _send({"op": "config", "name": s.name.decode()})
            elif key == "mtu":
                if value < _ATT_MTU_MIN or value > 517:
                    raise ValueError("invalid MTU")
                s.mtu = value
                if s.active:
                    _send({"op": "config", "mtu": value})
            elif key in ("rxbuf", "io", "bond", "mitm", "le_secure", "addr_mode"):
                pass  # accepted, no effect on the virtual radio (no pairing/bonding state)
            else:
                raise ValueError("unknown config param")

    def irq(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError("handler must be callable")
        _stack.handler = handler

    def gap_advertise(self, interval_us, adv_data=None, *, resp_data=None, connectable=True):
        _need_active()
        s = _stack
        if interval_us is None:
            _send({"op": "adv", "interval_us": None})
            return
        if adv_data is not None:
            s.adv = bytes(adv_data)
        if resp_data is not None:
            s.resp = bytes(resp_data)
        if len(s.adv) > _ADV_MAX or len(s.resp) > _ADV_MAX:
            raise OSError(_EIO)
        _send({"op": "adv", "interval_us": int(interval_us), "adv": _hex(s.adv),
               "resp": _hex(s.resp), "connectable": bool(connectable)})

    def gap_disconnect(self, conn_handle):
        _need_active()
        if conn_handle not in _stack.conns:
            return False
        _send({"op": "disconnect", "conn": conn_handle})
        return True

    def gatts_register_services(self, services_definition):
        _need_active()
        handle = _FIRST_USER_HANDLE - 1  # last handle in use
        db = {}
        spec = []
        result = []
        for service in services_definition:
            suuid, chars = service[0], service[1]
            if not isinstance(suuid, UUID):
                raise TypeError("expected UUID")
            handle += 1  # service declaration
            handles = []
            cspecs = []
            for char in chars:
                cuuid, flags = char[0], char[1]
                if not isinstance(cuuid, UUID):
                    raise TypeError("expected UUID")
                value_handle = handle + 2  # after the characteristic declaration
                handle = value_handle
                handles.append(value_handle)
                db[value_handle] = [b"", _DEFAULT_ATTR_LEN, False]
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    handle += 1  # CCCD, managed by the stack
                dspecs = []
                for desc in (char[2] if len(char) > 2 else ()):
                    duuid, dflags = desc[0], desc[1]
                    if not isinstance(duuid, UUID):
                        raise TypeError("expected UUID")
                    handle += 1
                    handles.append(handle)
                    db[handle] = [b"", _DEFAULT_ATTR_LEN, False]
                    dspecs.append({"uuid": duuid.text(), "flags": dflags, "handle": handle})
                cspecs.append({"uuid": cuuid.text(), "flags": flags, "handle": value_handle,
                               "descs": dspecs})
            spec.append({"uuid": suuid.text(), "chars": cspecs})
            result.append(tuple(handles))
        _stack.db = db
        _send({"op": "services", "services": spec})
        return tuple(result)

    def gatts_read(self, value_handle):
        entry = _entry(value_handle)
        value = entry[0]
        if entry[2]:  # append mode: reading drains the buffer, as on the board
            entry[0] = b""
            _send({"op": "write", "handle": value_handle, "data": "", "update": False})
        return value

    def gatts_write(self, value_handle, data, send_update=False):
        entry = _entry(value_handle)
        value = bytes(data)
        entry[0] = value
        if len(value) > entry[1]:
            entry[1] = len(value)
        _send({"op": "write", "handle": value_handle, "data": _hex(value), "update": bool(send_update)})

    def gatts_set_buffer(self, value_handle, length, append=False):
        entry = _entry(value_handle)
        entry[1] = length
        entry[2] = bool(append)
        _send({"op": "buffer", "handle": value_handle, "len": length, "append": bool(append)})

    def _check_conn(self, conn_handle, value_handle):
        _need_active()
        if conn_handle not in _stack.conns:
            raise OSError(_ENOTCONN)
        return _entry(value_handle)

    def gatts_notify(self, conn_handle, value_handle, data=None):
        entry = self._check_conn(conn_handle, value_handle)
        payload = entry[0] if data is None else bytes(data)
        _send({"op": "notify", "conn": conn_handle, "handle": value_handle, "data": _hex(payload)})

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        entry = self._check_conn(conn_handle, value_handle)
        payload = entry[0] if data is None else bytes(data)
        _send({"op": "indicate", "conn": conn_handle, "handle": value_handle, "data": _hex(payload)})


# Announce a fresh stack to the host (boot, soft reset, reset): the host drops any link and
# advertising left over from the previous interpreter, as a rebooting ESP32's controller does.
if _simhw is not None:
    _listen()
    _send({"op": "hello"})
