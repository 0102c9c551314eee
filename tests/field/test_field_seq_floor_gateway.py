"""``civicedge provision --gateway URL``: a technician at the pole has no store file, only the gateway's
admin API. provision asks the gateway for the highest seq it stored under the id
(``GET /api/admin/devices/{id}/seq``) and starts the board's counter above it; a refused token or a
gateway older than the endpoint stops it before the board is touched. Against a real gateway process
(and the real web app with that route left out for the older one) and the real firmware's seq counter
on a virtual board."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from field_cli import civicedge

from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.web import admin_api
from gateway.web.app import create_app
from hil.field.device import open_board
from hil.field.errors import GatewayRegistrationError
from hil.field.registration import AdminApiRegistrar
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.sim.board import VirtualBoard
from hil.tcp_ports import PortRange

TOKEN = "0fcd430edc7fb448e0c5a966818a0aef"
PORTS = PortRange(18400, 18449)  # this suite's share of the machine's ports
GATEWAY_ID = "gw-hil"
_NEXT_SEQ = "from civic.store.seq import SeqCounter\nprint(repr(SeqCounter('/seq.bin').next()))"


def _record(device: str, seq: int, **change: object) -> ReportRecord:
    rec = ReportRecord(device=device, seq=seq, kind="streetlight", zone="centre", type="win",
                       w=1_790_000_100 + 900 * seq, l=900, m={"lux": 1, "lvl": 60, "lamp": 0}, e={}, a=[],
                       fw="0.1.0", received_at=1_790_000_100.0 + 900 * seq, link="serial:/dev/x",
                       digest="%064x" % seq)
    return rec._replace(**change)  # type: ignore[arg-type]


def _dead_board(data: Path, device: str, seqs: range, *, duplicate: int | None = None) -> None:
    """``device`` registered with the dead board's key, its reports stored under ``seqs``; with
    ``duplicate``, a release of the same period again under that seq (a window duplicate: no row)."""
    reg = Registry(data / "registry")
    try:
        reg.enroll(device, kind="streetlight", zone="centre", lat="52.37", lon="4.89", key=bytes(range(32)),
                   replace=True)
    finally:
        reg.close()
    store = ReportStore(data / "reports.sqlite", gateway_id=GATEWAY_ID)
    try:
        if duplicate is None:
            store.insert_batch([_record(device, s) for s in seqs])
        else:
            # The last stored report releases a 6-hour PIR count; the same release again (its clock was
            # set back) under ``duplicate`` is recorded as a window duplicate, with no report row.
            release = _record(device, seqs[-1], w=1_789_992_000, l=21600, m={"mot": 7}, e={"mot": 500})
            store.insert_batch([_record(device, s) for s in seqs[:-1]] + [release])
            res = store.insert_batch([release._replace(seq=duplicate, digest="%064x" % duplicate)])
            assert [d.seq for d in res.window_duplicates] == [duplicate]
    finally:
        store.close()


def _next_seq(port: str) -> int:
    """The firmware's own next report seq (its counter reserves a block, so this uses one)."""
    dut = open_board(port, timeout_s=10)
    try:
        return int(dut.eval_code(_NEXT_SEQ))
    finally:
        dut.close()


def _older_routes() -> list[web.RouteDef]:
    """The admin routes of a gateway from before ``GET /api/admin/devices/{id}/seq``."""
    return [r for r in admin_api.ROUTES if isinstance(r, web.RouteDef) and not r.path.endswith("/seq")]


@pytest.fixture
async def older_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Path]]:
    """The real web app over a real registry and store, without the seq route (an older gateway)."""
    data = tmp_path / "old-gw"
    _dead_board(data, "sl-0099", range(1, 30))
    monkeypatch.setattr(admin_api, "ROUTES", _older_routes())
    registry = Registry(data / "registry")
    queries = ReportQueries(data / "reports.sqlite")
    app = create_app(store=queries, registry=registry, policy=load_policy(), metrics_registry=None,
                     admin_token=TOKEN)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    token = tmp_path / "old-admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    try:
        yield f"http://127.0.0.1:{server.port}", token
    finally:
        await server.close()
        queries.close()
        registry.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_provision_through_the_gateway_starts_above_its_stored_seqs(
        tmp_path: Path, sim_available: None, older_gateway: tuple[str, Path]) -> None:
    gw = GatewayProcess(workdir=tmp_path / "gw", serial_ports=[], http=True, admin_token=TOKEN, port_range=PORTS,
                        gateway_id=GATEWAY_ID)
    # The dead board's reports 1..40, and a release recorded as a window duplicate under seq 45.
    _dead_board(gw.workdir, "sl-0031", range(1, 41), duplicate=45)
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", speed=100)
    await board.start()
    try:
        port = board.console_path
        await board.wait_console("not provisioned", timeout_s=60)  # booted: the port is free
        assert board.data_path is not None
        gw.serial_ports.append(board.data_path)
        gw.start()
        url = f"http://127.0.0.1:{gw.http_port}"
        take_over = ["provision", "--port", port, "--id", "sl-0031", "--zone", "centre", "--location", "52.37,4.89",
                     "--board", "streetlight-esp32", "--force", "--take-over", "--gateway", url]

        # A wrong token: refused before the board is touched (no identity, no seq file written).
        wrong = tmp_path / "wrong.token"
        wrong.write_text("not-the-admin-token-000000\n")
        wrong.chmod(0o600)
        rc, out = await civicedge(*take_over, "--token-file", str(wrong))
        out = " ".join(out.split())
        assert rc == 2 and "refused the admin token" in out and "--token-file" in out, out
        assert not (tmp_path / "flash" / "identity.json").exists() and not (tmp_path / "flash" / "seq.bin").exists()

        # The right one: the board starts above 45 (the window duplicate, above the stored rows' 40).
        before = len(board.console_log)
        rc, out = await civicedge(*take_over, "--token-file", str(gw.admin_token_path))
        out = " ".join(out.split())
        assert rc == 0 and "registry: replaced" in out, out
        assert f"report seqs: start above 45 (the highest stored under sl-0031, from the gateway at {url}" in out, out
        assert "not known here" not in out  # no take-over warning: the floor was known

        # The firmware runs and the gateway stores its next report: new to it, not refused as seq_reused.
        await board.wait_console("streetlight sl-0031 running", since=before, timeout_s=60)
        queries = ReportQueries(gw.db_path)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            while not [r for r in queries.reports(device="sl-0031") if r.seq > 45]:
                assert loop.time() < deadline, "no report of the new board was stored\n" + gw.output[-3000:]
                await asyncio.sleep(0.5)
            assert queries.highest_seq("sl-0031") > 45
        finally:
            queries.close()
        assert "seq_reused" not in gw.output, gw.output[-3000:]

        # An older gateway (no seq endpoint): stopped before the board, with what to pass instead ...
        old_url, old_token = older_gateway
        again = ["provision", "--port", port, "--id", "sl-0099", "--zone", "centre", "--location", "52.37,4.89",
                 "--force", "--take-over", "--discard-unsent", "--stay-at-repl", "--gateway", old_url,
                 "--token-file", str(old_token)]
        identity = (tmp_path / "flash" / "identity.json").read_text()
        rc, out = await civicedge(*again)
        out = " ".join(out.split())
        assert rc == 2 and "gateway too old; pass --seq-start N" in out, out
        assert "no device enrollment endpoint" not in out and "sl-0099" in out, out
        assert (tmp_path / "flash" / "identity.json").read_text() == identity
        # ... and with --seq-start it goes on, the enrollment through that same gateway.
        rc, out = await civicedge(*again, "--seq-start", "5000")
        out = " ".join(out.split())
        assert rc == 0 and "registry: replaced" in out and "an older version" in out, out
        assert "start above 4999" in out, out
        assert await asyncio.to_thread(_next_seq, port) == 5000
    finally:
        gw.stop()
        await board.stop()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The real web app over a registry and store holding sl-0031's reports 1..40 (in-process)."""
    data = tmp_path / "gw"
    _dead_board(data, "sl-0031", range(1, 41))
    registry = Registry(data / "registry")
    queries = ReportQueries(data / "reports.sqlite")
    server = TestServer(create_app(store=queries, registry=registry, policy=load_policy(), metrics_registry=None,
                                   admin_token=TOKEN), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", data
    finally:
        await server.close()
        queries.close()
        registry.close()


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


async def test_the_admin_client_reads_the_seq_and_tells_each_refusal(
        gateway: tuple[str, Path], tmp_path: Path) -> None:
    url, data = gateway
    registrar = AdminApiRegistrar(url, TOKEN)
    assert await asyncio.to_thread(registrar.highest_seq, "sl-0031") == 40
    # Retention removed rows up to 70 (only their highest seq is kept): counted, as provision --db does.
    conn = sqlite3.connect(data / "reports.sqlite")
    try:
        conn.execute("INSERT INTO retired_seqs (device, seq) VALUES ('sl-0031', 70)")
        conn.commit()
    finally:
        conn.close()
    assert await asyncio.to_thread(registrar.highest_seq, "sl-0031") == 70
    # An id the gateway has not registered stores nothing: None, not an error (a new pole).
    assert await asyncio.to_thread(registrar.highest_seq, "sl-0777") is None

    with pytest.raises(GatewayRegistrationError, match="refused the admin token") as refused:
        await asyncio.to_thread(AdminApiRegistrar(url, "wrong-token-000000000000").highest_seq, "sl-0031")
    assert refused.value.details["reason"] == "wrong_token"

    async def forbidden(request: web.Request) -> web.Response:
        return web.Response(status=403, text="<html>Forbidden</html>", content_type="text/html")

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", forbidden)
    off = create_app(store=None, registry=None, policy=load_policy(), metrics_registry=None, admin_token=None)
    servers = [await _serve(proxy), await _serve(off), await _serve(web.Application())]
    try:
        with pytest.raises(GatewayRegistrationError, match=r"refused the admin call \(HTTP 403; a proxy"):
            await asyncio.to_thread(AdminApiRegistrar(f"http://127.0.0.1:{servers[0].port}", TOKEN).highest_seq,
                                    "sl-0031")
        with pytest.raises(GatewayRegistrationError, match="has its admin API switched off"):
            await asyncio.to_thread(AdminApiRegistrar(f"http://127.0.0.1:{servers[1].port}", TOKEN).highest_seq,
                                    "sl-0031")
        # Another web server's bare 404 is not an older gateway.
        with pytest.raises(GatewayRegistrationError, match="does not look like a civicedge gateway") as other:
            await asyncio.to_thread(AdminApiRegistrar(f"http://127.0.0.1:{servers[2].port}", TOKEN).highest_seq,
                                    "sl-0031")
        assert "too old" not in str(other.value)
    finally:
        for server in servers:
            await server.close()


async def test_an_older_gateway_is_told_from_an_unknown_device(
        older_gateway: tuple[str, Path]) -> None:
    url, _ = older_gateway
    with pytest.raises(GatewayRegistrationError, match="gateway too old; pass --seq-start") as old:
        await asyncio.to_thread(AdminApiRegistrar(url, TOKEN).highest_seq, "sl-0099")
    assert old.value.details["reason"] == "no_seq_endpoint"
    # The same gateway still enrolls: only the seq is missing (the route, not the device, is unknown).
    with pytest.raises(GatewayRegistrationError, match="gateway too old"):
        await asyncio.to_thread(AdminApiRegistrar(url, TOKEN).highest_seq, "sl-0777")
