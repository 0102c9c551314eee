"""Links to devices behind one small interface (:class:`gateway.transports.base.Transport`)."""

from gateway.transports.base import FrameSink, Transport
from gateway.transports.serial_link import SerialTransport

__all__ = ["FrameSink", "SerialTransport", "Transport"]
