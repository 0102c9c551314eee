# MicroPython freeze manifest: an ESP32 / ESP32-C3 image with the civicedge package frozen into
# flash. Frozen bytecode is executed from flash instead of being loaded into the heap, which saves
# the ~62 KB that loading civic/*.mpy costs (bench/firmware_memory.py, bench/README.md): what a
# production board without PSRAM should run. boot.py, main.py, policy.json and the board's
# /board.json and /identity.json stay on the filesystem (`civicedge flash` / `provision`).
#
# Build with ESP-IDF and a MicroPython v1.27 checkout (paths are relative to this file):
#   make -C micropython/ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/boards/manifest.py
#   make -C micropython/ports/esp32 BOARD=ESP32_GENERIC_C3 FROZEN_MANIFEST=$PWD/boards/manifest.py
# then `civicedge flash --micropython .../build-ESP32_GENERIC/firmware.bin`. The frozen package
# comes before /lib on sys.path, so the copies of civic/ that flash also puts in the filesystem
# are not used.
include("$(PORT_DIR)/boards/manifest.py")
package("civic", base_path="../firmware/lib")
