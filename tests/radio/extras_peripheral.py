# MicroPython test program: indications, descriptors and gatts_write(send_update=True).
import bluetooth

_SVC = bluetooth.UUID("6c3e00f0-4a5e-4c1b-9b9e-0c1c1ce0ed9e")
_IND = (bluetooth.UUID("6c3e00f1-4a5e-4c1b-9b9e-0c1c1ce0ed9e"), bluetooth.FLAG_INDICATE)
_UPD = (bluetooth.UUID("6c3e00f2-4a5e-4c1b-9b9e-0c1c1ce0ed9e"), bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY,
        ((bluetooth.UUID(0x2901), bluetooth.FLAG_READ),))
NAME = b"mp-extra-1"

ble = bluetooth.BLE()
ble.active(True)
((IND, UPD, DESC),) = ble.gatts_register_services(((_SVC, (_IND, _UPD)),))
ble.gatts_write(DESC, b"update counter")
conn = None


def irq(event, data):
    global conn
    if event == 1:
        conn = data[0]
        print("connect", conn)
    elif event == 20:
        print("indicate_done", data[0], data[1] == IND, data[2])


ble.irq(irq)
ble.gap_advertise(100000, adv_data=bytes((len(NAME) + 1, 9)) + NAME)
print("advertising")
