# main.py: start the civicedge firmware. Reads /board.json, /identity.json and /policy.json,
# builds the hardware objects, the app and its links, and runs them as asyncio tasks.
# An unprovisioned board (no /identity.json) prints how to provision it and stays idle at the
# REPL. `main()` is importable so a host that drives the event loop itself (the simulator)
# can start it.
import asyncio

SAFE_REPL_S = 120
SAFE_SLEEP_S = 3600
SAFE_RETRY_S = 900


def _say(msg):
    print("civicedge: " + msg)


async def main():
    """Boot the firmware; returns (leaving the REPL free) when it must not or cannot run."""
    from civic.hal import boot as bootstate
    from civic.hal import config

    if bootstate.MODE == "recovery":
        _say("recovery mode: firmware not started")
        return
    import machine

    # `civicedge check`'s one-shot request for a boot report: taken (removed) before anything
    # that can fail, so it is answered at this start or never. It runs before the watchdog, so
    # nothing it raises may stop the boot: a partly copied firmware (an older civic or hal/boot:
    # ImportError, AttributeError) or a MemoryError means no link test, not a board at the REPL.
    try:
        link_test = bootstate.take_link_test(machine)
    except Exception as exc:
        _say("link test skipped: %s: %s" % (type(exc).__name__, exc))
        link_test = False
    problem = ""
    try:
        cfg = config.load_board()
    except ValueError as exc:
        cfg = None
        problem = str(exc)
    if bootstate.MODE == "safe":
        _say("safe mode after %d unclean boots; fix, then: import civic.hal.boot as b, machine; "
             "b.mark_stable(machine); machine.reset()" % bootstate.CRASHES)
        if cfg is not None and cfg["sleep"]["mode"] == "deep":
            # a battery board must not sit awake at the REPL until its cell is flat: leave a
            # window for a technician (or hold the recovery pin at boot), then sleep long
            _say("battery board: REPL for %d s, then deep sleep for %d s" % (SAFE_REPL_S, SAFE_SLEEP_S))
            await asyncio.sleep(SAFE_REPL_S)
            # wake with a fresh crash count, as a mains board retries (below): a firmware that
            # really crash-loops is back here after CRASH_LIMIT boots, one try per SAFE_SLEEP_S
            bootstate.mark_stable(machine)
            machine.deepsleep(SAFE_SLEEP_S * 1000)
            return
        # A mains board (a streetlight) must not stay dark for good after a brownout storm: try
        # again with a fresh count after a while. A firmware that really crash-loops comes back
        # here after CRASH_LIMIT boots, so that costs one retry per SAFE_RETRY_S.
        _say("retrying in %d s with a fresh crash count (Ctrl-C stays in safe mode)" % SAFE_RETRY_S)
        await asyncio.sleep(SAFE_RETRY_S)
        bootstate.mark_stable(machine)
        machine.reset()
        return
    if cfg is None:
        _say("cannot start: %s" % problem)
        return
    try:
        identity = config.load_identity_doc()
    except ValueError as exc:
        _say("cannot start: /identity.json: %s" % exc)
        return
    if identity is None:
        _say("not provisioned: /identity.json is missing. Provision this %s board with "
             "`civicedge provision`; idling." % cfg["kind"])
        return
    try:
        import bluetooth
    except ImportError:
        bluetooth = None
    from civic.apps import runtime

    try:
        # named only when asked: an older runtime (partial firmware) has no such argument
        if link_test:
            rt = runtime.build(cfg, identity, machine, bluetooth, link_test=True)
        else:
            rt = runtime.build(cfg, identity, machine, bluetooth)
    except ValueError as exc:
        _say("cannot start: %s" % exc)
        return
    except Exception as exc:
        # a bug in the wiring or an app's constructor: said like the above (the task would
        # otherwise die as "Task exception wasn't retrieved"), with the traceback to fix it
        import sys

        _say("cannot start: %s: %s" % (type(exc).__name__, exc))
        sys.print_exception(exc)
        return
    _say("%s %s running (%s)" % (cfg["kind"], identity["id"], ", ".join(cfg.get("caps", []))))
    await rt.run()


if hasattr(asyncio, "run"):
    asyncio.run(main())
else:
    asyncio.create_task(main())
