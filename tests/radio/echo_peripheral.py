# MicroPython test program: a civicedge-like peripheral on the `bluetooth` module.
# Writes to RX are echoed as notifications on TX (the local TX value is set to them too);
# b"long" notifies 300 bytes (to see MTU truncation); b"bye" disconnects the central.
import bluetooth
from micropython import const

_SVC = bluetooth.UUID("6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e")
_TX = (bluetooth.UUID("6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"), bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY)
_RX = (bluetooth.UUID("6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"),
       bluetooth.FLAG_WRITE | bluetooth.FLAG_WRITE_NO_RESPONSE)
NAME = b"mp-echo-1"

ble = bluetooth.BLE()
ble.active(True)
ble.config(gap_name="mp-echo-1", mtu=247)
((TX, RX),) = ble.gatts_register_services(((_SVC, (_TX, _RX)),))
ble.gatts_set_buffer(RX, 256)
ble.gatts_write(TX, b"ready")
ADV = bytes((2, 1, 6, 17, 7)) + bytes(reversed(bytes.fromhex("6c3e00014a5e4c1b9b9e0c1c1ce0ed9e")))
RESP = bytes((len(NAME) + 1, 9)) + NAME


def advertise():
    ble.gap_advertise(100000, adv_data=ADV, resp_data=RESP)


def irq(event, data):
    if event == 1:
        print("connect", data[0], data[1], len(bytes(data[2])))
    elif event == 2:
        print("disconnect", data[0])
        advertise()
    elif event == 3:
        conn, handle = data
        value = ble.gatts_read(handle)
        print("write", handle == RX, len(value))
        if value == b"long":
            ble.gatts_notify(conn, TX, bytes(300))
        elif value == b"bye":
            print("gap_disconnect", ble.gap_disconnect(conn))
        else:
            ble.gatts_write(TX, value)
            ble.gatts_notify(conn, TX)
    elif event == 21:
        print("mtu", data[0], data[1])


ble.irq(irq)
advertise()
print("advertising", ble.config("mac")[0])
