"""Links to the gateway: UART (COBS + 0x00) and BLE GATT (fragments), sharing one session."""
