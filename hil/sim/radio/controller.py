"""The emulated controller each radio client gets (Bumble's, with the gaps that matter filled).

Bumble's emulated ``Controller`` is close to what we need; this subclass makes it behave like
an ESP32's BLE 4.2 controller where the firmware or bleak can tell the difference:

* legacy advertising only (the ESP32 has no extended advertising), so hosts use legacy
  scanning and connection commands;
* active scanning returns the advertiser's real scan-response data (Bumble echoes the
  advertising data instead);
* RSSI differs per advertiser/scanner pair (deterministic, -40..-79 dBm) instead of a constant;
* LE Create Connection Cancel really cancels (Bumble keeps the pending connection forever,
  which would block every later connect after one timeout);
* a client that vanishes from the radio drops its links with "connection timeout" at its
  peers, like a board losing power.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from bumble import hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink

logger = logging.getLogger(__name__)

_NO_EXTENDED = ~(hci.LeFeatureMask.LE_EXTENDED_ADVERTISING | hci.LeFeatureMask.LE_PERIODIC_ADVERTISING)
_ACTIVE_SCAN = 1


class RadioLink(LocalLink):
    """A room's link; advertising PDUs go only to controllers that can use them.

    Bumble's ``LocalLink`` hands every advertisement to every controller. With a fleet of
    advertising boards that is O(boards²) callbacks per interval; only scanners and initiators
    need advertisements, and a CONNECT_IND concerns only its advertiser.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # Controllers that scan or initiate a connection, kept up to date by RadioController,
        # so an advertisement costs O(listeners), not O(controllers).
        self.listening: set[Controller] = set()

    def set_listening(self, controller: Controller, listening: bool) -> None:
        """Record whether ``controller`` wants advertisements (scanning or connecting)."""
        if listening:
            self.listening.add(controller)
        else:
            self.listening.discard(controller)

    def remove_controller(self, controller: Controller) -> None:
        self.listening.discard(controller)
        super().remove_controller(controller)

    def send_advertising_pdu(self, sender_controller: Any, packet: Any) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(packet, ll.ConnectInd):
            target = self.find_le_controller(packet.advertiser_address)
            if target is not None and target is not sender_controller:
                loop.call_soon(target.on_ll_advertising_pdu, packet)
            return
        for controller in list(self.listening):
            if controller is not sender_controller:
                loop.call_soon(controller.on_ll_advertising_pdu, packet)


def pair_rssi(advertiser: hci.Address, scanner: hci.Address) -> int:
    """Deterministic RSSI in dBm for one advertiser/scanner pair (-40..-79)."""
    digest = hashlib.sha256(bytes(advertiser) + bytes(scanner)).digest()
    return -40 - digest[0] % 40


class RadioController(Controller):
    """One emulated BLE controller on a room's :class:`~bumble.link.LocalLink`."""

    le_features = hci.LeFeatureMask(Controller.le_features & _NO_EXTENDED)
    _scan_on: bool = False
    _pending: Any = None
    # LE Data Length Extension (as on the ESP32): 251-byte link-layer payloads.
    le_acl_data_packet_length = 251
    supported_max_tx_octets = 251
    supported_max_rx_octets = 251

    # Scanning and initiating state are properties so the link learns who listens.
    @property
    def le_scan_enable(self) -> bool:
        return self._scan_on

    @le_scan_enable.setter
    def le_scan_enable(self, value: bool) -> None:
        self._scan_on = bool(value)
        self._update_listening()

    @property
    def pending_le_connection(self) -> Any:
        return self._pending

    @pending_le_connection.setter
    def pending_le_connection(self, value: Any) -> None:
        self._pending = value
        self._update_listening()

    def _update_listening(self) -> None:
        link = self.__dict__.get("link")
        if isinstance(link, RadioLink):
            link.set_listening(self, self._scan_on or self._pending is not None)

    def _peer_controller(self, address: hci.Address) -> Controller | None:
        link: LocalLink = self.link
        return link.find_le_controller(address)

    def on_advertising_pdu(self, pdu: Any) -> None:
        if not isinstance(pdu, ll.AdvInd):
            super().on_advertising_pdu(pdu)
            return
        if self.le_scan_enable:
            rssi = pair_rssi(pdu.advertiser_address, self.random_address)
            reports = [
                hci.HCI_LE_Advertising_Report_Event.Report(
                    event_type=hci.HCI_LE_Advertising_Report_Event.EventType.ADV_IND,
                    address_type=pdu.advertiser_address.address_type,
                    address=pdu.advertiser_address,
                    data=pdu.data,
                    rssi=rssi,
                )
            ]
            if self.le_scan_type == _ACTIVE_SCAN:
                advertiser = self._peer_controller(pdu.advertiser_address)
                scan_rsp = advertiser.le_legacy_advertiser.scan_response_data if advertiser else b""
                reports.append(
                    hci.HCI_LE_Advertising_Report_Event.Report(
                        event_type=hci.HCI_LE_Advertising_Report_Event.EventType.SCAN_RSP,
                        address_type=pdu.advertiser_address.address_type,
                        address=pdu.advertiser_address,
                        data=bytes(scan_rsp),
                        rssi=rssi,
                    )
                )
            for report in reports:
                self.send_hci_packet(hci.HCI_LE_Advertising_Report_Event([report]))
        pending = self.pending_le_connection
        if pending is not None and pending.peer_address == pdu.advertiser_address:
            self.create_le_connection(pdu.advertiser_address)

    def on_hci_le_create_connection_cancel_command(self, command: Any) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None

        def report_cancelled() -> None:
            # Core spec: after the Command Complete, a Connection Complete with status
            # "Unknown Connection Identifier" reports the cancelled attempt.
            self.send_hci_packet(
                hci.HCI_LE_Connection_Complete_Event(
                    status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                    connection_handle=0,
                    role=hci.Role.CENTRAL,
                    peer_address_type=pending.peer_address.address_type,
                    peer_address=pending.peer_address,
                    connection_interval=0,
                    peripheral_latency=0,
                    supervision_timeout=0,
                    central_clock_accuracy=0,
                )
            )

        asyncio.get_running_loop().call_soon(report_cancelled)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def vanish(self) -> None:
        """Leave the radio: stop advertising and drop every link at the peers (timeout)."""
        self.le_legacy_advertiser.stop()
        self.le_scan_enable = False
        self.pending_le_connection = None
        for connection in list(self.le_connections.values()):
            peer = self._peer_controller(connection.peer_address)
            if peer is None:
                continue
            peer_connection = peer.le_connections.get(connection.self_address)
            if peer_connection is not None:
                peer.on_le_disconnected(peer_connection, hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
        self.le_connections.clear()
        link: LocalLink = self.link
        if self in link.controllers:
            link.remove_controller(self)
