// Python code run in each interpreter before anything else: the wasm port's filesystem calls raise
// OSError with Emscripten's errno numbers (ENOENT 44, EISDIR 31, EIO 29, ...); this wraps open() and
// the os namespace calls so they raise MicroPython's numbers instead, as on a board (errno.ENOENT == 2:
// mpremote and the firmware's "file absent" checks rely on it). Used by board.mjs and mprun.mjs.
export const ERRNO_PRELUDE = `
import builtins, os
_EMAP = {44: 2, 20: 17, 54: 20, 31: 21, 55: 39, 28: 22, 2: 13, 63: 1, 29: 5, 51: 28, 8: 9, 10: 16, 37: 36}
def _fix(fn, _m=_EMAP):
    def call(*a, **k):
        try:
            return fn(*a, **k)
        except OSError as e:
            n = e.errno
            if n in _m:
                raise OSError(_m[n])
            raise
    return call
builtins.open = _fix(open)
for _n in ('stat', 'listdir', 'ilistdir', 'mkdir', 'rmdir', 'remove', 'unlink', 'rename', 'chdir', 'statvfs'):
    if hasattr(os, _n):
        setattr(os, _n, _fix(getattr(os, _n)))
del _fix, _n, _EMAP
`;
