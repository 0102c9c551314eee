"""CPython side of wire protocol v2 (and v1) (docs/protocol.md): frames, COBS, BLE fragments.

Parsers here do no I/O: feed bytes in, get frames out.
"""

from gateway.protocol.ble_fragments import FragmentReassembler, fragment_frame
from gateway.protocol.cobs import cobs_decode, cobs_encode
from gateway.protocol.frame import (
    FRAME_ACK,
    FRAME_CONFIG,
    FRAME_REPORT,
    MAX_FRAME,
    MIN_FRAME,
    TAG_LEN,
    VERSION,
    VERSIONS,
    Frame,
    build_frame,
    compute_tag,
    decode_body,
    parse_frame,
    verify_tag,
)
from gateway.protocol.serial_codec import SerialDeframer, encode_serial

__all__ = [
    "FRAME_ACK", "FRAME_CONFIG", "FRAME_REPORT", "MAX_FRAME", "MIN_FRAME", "TAG_LEN", "VERSION", "VERSIONS",
    "Frame", "FragmentReassembler", "SerialDeframer", "build_frame", "cobs_decode", "cobs_encode",
    "compute_tag", "decode_body", "encode_serial", "fragment_frame", "parse_frame", "verify_tag",
]
