"""Request bodies: the checks every path makes on a body's headers, and the reading and decoding of the
admin endpoints' JSON bodies.

aiohttp is told not to decode bodies itself (``auto_decompress=False`` in the app's ``handler_args``):
its parser refused a ``br`` or ``zstd`` body (no decoder installed) with a plain-text 400 before any
gateway code ran, so the API's JSON error, and the admin token check before it, never happened. Here
every body failure is a :class:`~gateway.web.errors.WebError` answered as JSON:

* ``Content-Length`` above ``max_body_bytes``: 413 ``body_too_large``, before a byte is read;
* a ``Content-Encoding`` other than ``gzip``, ``deflate`` or ``identity``: 415 ``unsupported_encoding``;
* a body that does not arrive in time: 408 ``body_timeout``;
* more than ``max_body_bytes`` received, or decoded: 413 ``body_too_large``;
* bytes that do not decode, or chunked framing aiohttp cannot read: 400 ``bad_parameter`` (param ``body``).
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.web.context import ctx_of
from gateway.web.errors import BadParameter, BodyTooLarge, RequestTimeout, WebError

BODY_ENCODINGS = ("gzip", "deflate")
"""``Content-Encoding`` values of a request body the API decodes."""
_GZIP_MAGIC = b"\x1f\x8b"


class UnsupportedEncoding(WebError):
    """The request body is sent in a ``Content-Encoding`` the API does not decode (415, RFC 9110 15.5.16)."""

    status = 415
    default_code = "unsupported_encoding"

    def headers(self) -> dict[str, str]:
        """``Accept-Encoding`` naming the codings a body may use, as RFC 9110 asks of this answer."""
        return {"Accept-Encoding": ", ".join(BODY_ENCODINGS)}


class _UndecodableBody(BadParameter):
    """A body, received whole, whose bytes do not decode from its ``Content-Encoding`` (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="body")


class _UnreadableBody(BadParameter):
    """A body whose chunked framing aiohttp cannot read (400); its connection is closed after the answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="body")

    def headers(self) -> dict[str, str]:
        """``Connection: close``: aiohttp stopped reading the connection at the bad bytes."""
        return {"Connection": "close"}


class _BodyCutOff(BodyTooLarge):
    """A chunked body above the limit (413): aiohttp stopped reading it, so the connection is closed."""

    def headers(self) -> dict[str, str]:
        """``Connection: close``: the rest of the body is never read, so no request can follow it."""
        return {"Connection": "close"}


def _shown(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def body_encoding(request: web.BaseRequest) -> str | None:
    """The body's one content coding (``gzip``/``deflate``), None for none (``identity``).

    Raises:
        UnsupportedEncoding: any other coding (``br``, ``zstd``, ``bogus``), a list (``gzip, gzip``)
            or two ``Content-Encoding`` headers (415).
    """
    values = request.headers.getall("Content-Encoding", [])
    if not values:
        return None
    coding = values[0].strip().lower() if len(values) == 1 else ""
    if coding == "identity":
        return None
    if coding not in BODY_ENCODINGS:
        raise UnsupportedEncoding(f"request body Content-Encoding '{_shown(', '.join(values))}' is not supported; "
                                  f"send the body plain or in one of: {', '.join(BODY_ENCODINGS)}",
                                  param="Content-Encoding")
    return coding


def check_body_headers(request: web.BaseRequest, max_body_bytes: int) -> None:
    """Refuse, from the headers alone, a body the API would not take: 413 for a ``Content-Length``
    above ``max_body_bytes``, 415 for a ``Content-Encoding`` it does not decode (only when a body is
    sent: a header on an empty request harms nothing). Nothing of the body is read.

    Every path makes this check (gateway.web.app's middleware); the admin endpoints make it after
    the token check, so a caller without the token learns nothing of the body handling.
    """
    length = request.content_length
    if length is not None and length > max_body_bytes:
        raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {max_body_bytes}")
    if request.body_exists:
        body_encoding(request)


def _decoded(raw: bytes, coding: str, limit: int) -> bytes:
    """``raw`` decoded from ``coding``, at most ``limit`` bytes of output (a small body may unpack to
    gigabytes); gzip members one after another are one body (RFC 1952 2.2), as aiohttp read them."""
    out = bytearray()
    rest = raw
    while True:
        if coding == "gzip":
            wbits = 16 + zlib.MAX_WBITS
        else:  # RFC 9110's deflate is the zlib format; bare deflate data, sent by some clients, is read too
            wbits = zlib.MAX_WBITS if rest[0] & 0x0F == 8 else -zlib.MAX_WBITS
        decoder = zlib.decompressobj(wbits=wbits)
        try:
            out += decoder.decompress(rest, limit + 1 - len(out))
        except zlib.error:
            raise _UndecodableBody(f"request body is not valid {coding} (Content-Encoding: {coding})") from None
        if len(out) > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes once decoded from {coding}")
        if not decoder.eof:
            raise _UndecodableBody(f"request body is not valid {coding} (Content-Encoding: {coding}): "
                                   "it ends before the compressed data does")
        rest = decoder.unused_data
        if not rest:
            return bytes(out)
        if coding != "gzip" or not rest.startswith(_GZIP_MAGIC):
            raise _UndecodableBody(f"request body is not valid {coding} (Content-Encoding: {coding}): "
                                   f"{len(rest)} bytes follow the compressed data")


async def read_body(request: web.Request) -> bytes:
    """The whole body, decoded, within the app's size and time limits.

    Raises:
        BodyTooLarge: above ``max_body_bytes`` by ``Content-Length``, as received or once decoded (413).
        UnsupportedEncoding: a ``Content-Encoding`` the API does not decode (415).
        RequestTimeout: the body did not arrive within ``body_timeout_s`` (408).
        BadParameter: bytes that do not decode, or chunked framing that cannot be read (400).
    """
    ctx = ctx_of(request)
    check_body_headers(request, ctx.max_body_bytes)
    coding = body_encoding(request)
    try:
        async with asyncio.timeout(ctx.body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {ctx.body_timeout_s} s") from None
    except web.HTTPRequestEntityTooLarge:
        # Chunked (no Content-Length): aiohttp stopped reading at the limit; the rest is not read.
        request.protocol.close()
        raise _BodyCutOff(f"request body exceeds the limit of {ctx.max_body_bytes} bytes") from None
    except RequestPayloadError as exc:
        # aiohttp's parser stopped at the bad bytes: the stream is done (else aiohttp reads it again after
        # the answer and logs the error at ERROR with three tracebacks) and the connection carries no
        # further request, so it is closed after the answer.
        request.content.feed_eof()
        request.protocol.close()
        raise _UnreadableBody(f"request body could not be read: {exc}".strip()) from None
    if coding is None or not raw:
        return raw
    # Received whole, so the connection can carry the next request whatever the bytes decode to.
    return _decoded(raw, coding, ctx.max_body_bytes)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict, refusing a key given twice: which copy would apply is not
    obvious (Python's parser keeps the last), so ``{"kind": "bin", "kind": "streetlight"}`` is 400."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            shown = _shown(key)
            raise BadParameter(f"request body gives key '{shown}' more than once; give it once", param=shown)
        seen[key] = value
    return seen


async def read_json_body(request: web.Request) -> Any:
    """Read (:func:`read_body`) and parse a JSON request body.

    Raises:
        BadParameter: empty body, not JSON, a key given twice in an object, or a gzip/deflate body
            that does not decode (400).
        BodyTooLarge, UnsupportedEncoding, RequestTimeout: see :func:`read_body` (413, 415, 408).
    """
    raw = await read_body(request)
    if not raw:
        raise BadParameter("request body is empty; JSON expected", param="body")
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadParameter(f"request body is not valid JSON: {exc}", param="body") from None
    except RecursionError:
        # Deep nesting ("[" * 20000) fits under the size cap but exhausts the parser's recursion limit.
        raise BadParameter("request body is nested too deeply to be a valid request", param="body") from None


# JSON's whitespace (RFC 8259) around an empty object or null: what generic clients send as "no data"
_EMPTY_JSON = re.compile(rb"[ \t\n\r]*(?:\{[ \t\n\r]*\}|null)[ \t\n\r]*")


async def require_no_body(request: web.Request) -> None:
    """Refuse (400) a body sent to an endpoint that takes none, before it acts.

    A caller sending ``{"dry_run": true}`` to ``/revoke`` meant something the endpoint does not do;
    acting anyway could be irreversible. No body is fine: an empty one (``Content-Length: 0``), and the
    empty JSON object ``{}`` or ``null`` (whitespace around them too), which generic clients send for
    "no data" (``requests.post(url, json={})``, axios).
    """
    if not request.body_exists:
        return
    raw = await read_body(request)
    if raw and _EMPTY_JSON.fullmatch(raw) is None:
        raise BadParameter(f"{request.method} {request.path} takes no request body; got {len(raw)} bytes "
                           "(nothing was changed; send none, {} or null)", param="body")
