# boot.py: runs first on every boot. Kept minimal: decide the boot mode (recovery pin, crash
# counter in RTC memory, safe mode) and leave everything else to main.py. Any error here is
# caught, so a bad /board.json can never lock the REPL out.
try:
    import machine
    from civic.hal import boot as _boot
    from civic.hal import config as _config

    try:
        _cfg = _config.load_board()
    except ValueError:
        _cfg = None
    _mode = _boot.decide(machine, _cfg)
    if _mode == "recovery":
        print("civicedge: recovery pin held: main.py will not start the firmware")
    elif _mode == "safe":
        print("civicedge: safe mode after %d unclean boots: firmware not started" % _boot.CRASHES)
except Exception as _exc:  # noqa: BLE001 - boot must always reach the REPL
    print("civicedge: boot.py error:", repr(_exc))
