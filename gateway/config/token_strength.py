"""How guessable an admin token is: zxcvbn's estimate of the guesses an attacker needs.

The admin token guards every registry change over HTTP, and a wrong guess costs an attacker one request
(a security audit measured about 2,700 a second against an unthrottled gateway). Length and the
placeholder rule (:func:`gateway.config.http_section.token_placeholder`) let ``password12345678``
through; zxcvbn (Dropbox's estimator, PyPI ``zxcvbn``) recognises dictionary words, keyboard rows,
dates, sequences and repeats, and prices what is left as brute force (10 guesses a character: it does
not credit a larger alphabet).

A token is refused when zxcvbn estimates fewer than 10^:data:`MIN_TOKEN_GUESSES_LOG10` guesses. Why 16
(docs/api.md, "How strong the token must be"): 10^16 guesses at 2,700 a second take about 117,000
years, so even an estimate 1,000 times too generous leaves over a century at the unthrottled rate, and
the gateway's throttle (gateway.web.admin_throttle) cuts the rate to a few guesses a second. It is what
16 random characters score, the length the token already needs. Every token of the commands the docs
give passes by a wide margin (``openssl rand -hex 16`` scored at least 10^26 in 5,000 random draws,
``-base64 24`` 10^25, ``secrets.token_urlsafe(32)`` 10^35, judged as below;
tests/gateway/test_admin_token_strength.py draws them), while ``password12345678`` scores 10^4.2, a keyboard row 10^4.2,
``correcthorsebatterystaple`` 10^14.4.

zxcvbn prices a separator between two words as brute force, and the factorial it charges per pattern
makes a few such runs cheaper than the words they hold: ``civicedge-admin-token-2026`` scores 10^16.8
where ``civicedgeadmintoken2026`` scores 10^12. So the token is judged with and without its separator
characters (:data:`SEPARATORS`), and the lower estimate counts; a random token loses only the few
characters of its alphabet that are separators.
"""

from __future__ import annotations

import functools

from zxcvbn import zxcvbn

MIN_TOKEN_GUESSES_LOG10 = 16
# zxcvbn refuses a longer input (ValueError), and its matching grows faster than the length: the first
# 72 characters of a longer token are judged (the rest only adds to them).
JUDGED_CHARS = 72
# What people put between the words of a token (and base64's "+" and "/", url-safe base64's "-" and "_").
SEPARATORS = "-_.,:;+/\\|~*=!@#$%&^'\"`"
# Words an attacker aiming at this gateway tries first: zxcvbn ranks them ahead of its dictionaries.
PROJECT_WORDS = ("civicedge", "gateway", "admin", "token", "bearer", "secret", "streetlight", "civic")
# zxcvbn's names of the patterns it finds, in words (what a refusal says when zxcvbn gives no warning).
_PATTERNS = {"dictionary": "a common word or password", "spatial": "a keyboard pattern", "repeat": "a repeat",
             "sequence": "a sequence", "regex": "a recent year", "date": "a date"}
_STRIP = str.maketrans("", "", SEPARATORS)


def token_weakness(token: str) -> str | None:
    """Why ``token`` is too easy to guess to be the admin token, or None when it is strong enough.

    The message says what zxcvbn found (its warning, or the kinds of patterns: a common word, a keyboard
    pattern, a date...), how many guesses it estimates against how many are needed, and how to make a
    good token. It never quotes the token nor any part of it. A random token takes a few milliseconds,
    72 characters of one repeated pattern up to ~200 ms; the last few answers are kept (a token file
    refused is looked at again each second while it stays), so a token is judged once.
    """
    return _weakness(token.strip()[:JUDGED_CHARS])


@functools.lru_cache(maxsize=4)
def _weakness(judged: str) -> str | None:
    # (zxcvbn keeps the user inputs in a module-level table while it runs: every call here passes the same
    # words, so two calls in two threads at once still judge with the same ones.)
    results = [zxcvbn(form, user_inputs=list(PROJECT_WORDS))
               for form in {judged, judged.translate(_STRIP)} if form]
    if not results:
        return "is too easy to guess (it is separators only); make a random one, e.g. openssl rand -hex 32"
    result = min(results, key=lambda r: r["guesses"])
    if result["guesses"] >= 10 ** MIN_TOKEN_GUESSES_LOG10:
        return None
    why = str(result["feedback"]["warning"] or "").strip().rstrip(".")
    if not why:
        kinds = sorted({_PATTERNS[m["pattern"]] for m in result["sequence"] if m["pattern"] in _PATTERNS})
        why = ("it contains %s" % ", ".join(kinds)) if kinds else "it has too few random characters"
    return ("is too easy to guess (%s: about 10^%.1f guesses by zxcvbn's estimate, at least 10^%d needed, as"
            " for %d random characters); make a random one, e.g. openssl rand -hex 32"
            % (why[:1].lower() + why[1:], float(result["guesses_log10"]), MIN_TOKEN_GUESSES_LOG10,
               MIN_TOKEN_GUESSES_LOG10))
