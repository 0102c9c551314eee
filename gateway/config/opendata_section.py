"""The ``[opendata]`` section: metadata of the published data (licence, publisher, catalogue texts).

See docs/open-data.md. Every value ends up in HTTP headers, JSON and HTML, so only what those carry
plainly is accepted; with ``lenient`` a refused key is kept as a problem rather than raised
(:mod:`gateway.config.loader`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from gateway.config.licence import UnknownLicence, canonical_licence_id
from gateway.config.model import OpenDataConfig
from gateway.config.section import Section
from gateway.errors import ConfigError

_OPENDATA_KEYS = ("licence", "licence_url", "publisher", "title", "description", "contact", "keywords", "base_url",
                  "language")


def parse_opendata(data: Any, source: Path | None, *, lenient: bool) -> OpenDataConfig:
    """``[opendata]``: licence and publisher "not set" unless the city says so (the gateway never invents a
    licence, docs/open-data.md); the catalogue's keys None (the gateway's defaults) when absent.

    With ``lenient``, a refused key (an unknown one too) is left at its default and its error kept in
    ``problems``: metadata must not stop data collection. A licence refused so is published as not
    set, and its ``licence_url`` is dropped with it (the licence's error says what to fix)."""
    problems: list[str] = []

    def kept(parse: Any, default: Any) -> Any:
        if not lenient:
            return parse()
        try:
            return parse()
        except ConfigError as exc:
            problems.append("error (%s) [%s]: %s" % (exc.reason, exc.key, exc))
            return default

    if lenient:
        kept(lambda: Section(data, "opendata", source, _OPENDATA_KEYS), None)  # not a table, an unknown key
        data = {k: v for k, v in data.items() if k in _OPENDATA_KEYS} if isinstance(data, dict) else {}
    od = Section(data, "opendata", source, _OPENDATA_KEYS)
    before = len(problems)
    licence = kept(lambda: _opendata_licence(od), "not set")
    licence_refused = len(problems) > before
    licence_url = None if licence_refused else kept(lambda: _opendata_licence_url(od, licence), None)
    return OpenDataConfig(licence=licence, licence_text_url=licence_url,
                          publisher=kept(lambda: _opendata_publisher(od), "not set"),
                          title=kept(lambda: _opendata_text(od, "title", MAX_TITLE_LEN), None),
                          description=kept(lambda: _opendata_text(od, "description", MAX_DESCRIPTION_LEN, lines=True),
                                           None),
                          contact=kept(lambda: _opendata_contact(od), None),
                          keywords=kept(lambda: _opendata_keywords(od), None),
                          base_url=kept(lambda: _opendata_base_url(od), None),
                          # refused at run: unknown (""), never "en", which would declare the city's texts English
                          language=kept(lambda: _opendata_language(od), ""), problems=tuple(problems))


# [opendata] licence: an SPDX-style id (CC-BY-4.0, LicenseRef-city-1.0) or an absolute http(s) URL. Both
# go into a Link header (RFC 8288) and JSON, so nothing a header cannot carry plainly is accepted.
_SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")
_LICENCE_URL = re.compile(r"https?://[\x21-\x7e]+")
_URL_FORBIDDEN = frozenset('<>"')
MAX_LICENCE_URL_LEN = 2048
MAX_PUBLISHER_LEN = 200
MAX_TITLE_LEN = 200
MAX_DESCRIPTION_LEN = 4000
MAX_KEYWORDS = 30
MAX_KEYWORD_LEN = 60
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9]"
                    r"(?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


def _shown(value: str) -> str:
    return value if len(value) <= 80 else value[:80] + "..."


def _http_url(value: str) -> bool:
    """An absolute http(s) URL that a header and JSON carry plainly (see the licence below)."""
    return (len(value) <= MAX_LICENCE_URL_LEN and _LICENCE_URL.fullmatch(value) is not None
            and not _URL_FORBIDDEN & set(value) and bool(urlsplit(value).netloc))


def _opendata_licence(od: Section) -> str:
    """``[opendata] licence``: "not set" when absent or empty; else an id of the SPDX License List (in its
    exact case), a ``LicenseRef-`` id or an http(s) URL (:mod:`gateway.config.licence`)."""
    value: str = od.get("licence", str, "not set").strip() or "not set"
    if value == "not set":
        return value
    if _SPDX_ID.fullmatch(value):
        try:
            return canonical_licence_id(value)
        except UnknownLicence as exc:
            near = "did you mean %r? " % exc.suggestion if exc.suggestion else ""
            if exc.or_later:
                # SPDX's "or any later version": no SPDX page, and a portal's licence field names one licence.
                raise od.error("opendata.licence", "opendata.licence %r ends in '+' (\"or any later version\"), which "
                               "has no SPDX page and no open-data portal's licence field takes: %swrite the one "
                               "licence the data is published under" % (value, near), "bad_value") from None
            # Published as https://spdx.org/licenses/<id>.html: a typo would be a dead link and no licence.
            raise od.error("opendata.licence", "opendata.licence %r is not a licence id of the SPDX License List "
                           "(%sit would be published as a dead link, the data under no licence); write the exact id "
                           "from https://spdx.org/licenses/ (e.g. \"CC-BY-4.0\", \"ODbL-1.0\"), \"LicenseRef-...\" "
                           "for a licence of the city's own, or the licence's URL" % (value, near), "bad_value") from None
    if _http_url(value):
        return value
    raise od.error("opendata.licence", "opendata.licence %r must be an SPDX licence id (ASCII letters, digits, '.', '+',"
                   " '-', at most 64 characters, e.g. \"CC-BY-4.0\" or \"LicenseRef-city-1.0\") or an absolute"
                   " http:// or https:// URL (ASCII, at most %d characters, no spaces, control characters, '<', '>'"
                   " or '\"')" % (_shown(value), MAX_LICENCE_URL_LEN), "bad_value")


def _opendata_licence_url(od: Section, licence: str) -> str | None:
    """``[opendata] licence_url``: None when absent or empty; else an https URL (as a licence URL is
    checked), given with a licence: the link of a ``LicenseRef-`` id, or in place of the SPDX page."""
    value: str = od.get("licence_url", str, "").strip()
    if not value:
        return None
    if not (value.startswith("https://") and _http_url(value)):
        raise od.error("opendata.licence_url", "opendata.licence_url %r must be the https:// URL of the licence's text "
                       "(ASCII, at most %d characters, no spaces, control characters, '<', '>' or '\"')"
                       % (_shown(value), MAX_LICENCE_URL_LEN), "bad_value")
    if licence == "not set":
        raise od.error("opendata.licence_url", "opendata.licence_url is given but opendata.licence is not: name the "
                       "licence too (e.g. licence = \"LicenseRef-city-1.0\" with its text at licence_url)", "bad_value")
    return value


def _opendata_publisher(od: Section) -> str:
    """``[opendata] publisher``: "not set" when absent or empty; else printable text of at most 200 characters."""
    value: str = od.get("publisher", str, "not set").strip() or "not set"
    # str.isprintable() is False for control characters (NUL, ESC, DEL, C1) and for the line and
    # paragraph separators U+2028/U+2029; a plain space is printable.
    if len(value) <= MAX_PUBLISHER_LEN and value.isprintable():
        return value
    raise od.error("opendata.publisher", "opendata.publisher %r must be printable text of at most %d characters"
                   " (no control characters, tabs or line breaks)" % (_shown(value), MAX_PUBLISHER_LEN), "bad_value")


def _opendata_text(od: Section, key: str, limit: int, *, lines: bool = False) -> str | None:
    """``[opendata] title`` / ``description``: None when absent or empty; else printable text of at most
    ``limit`` characters (with ``lines``, line breaks too: a description may have paragraphs)."""
    raw: str = od.get(key, str, "")
    value = raw.strip()
    if not value:
        return None
    body = value.replace("\r\n", "\n").replace("\n", "") if lines else value
    if len(value) <= limit and body.isprintable():
        return value
    raise od.error("opendata.%s" % key, "opendata.%s %r must be printable text of at most %d characters (no control "
                   "characters or tabs%s)" % (key, _shown(value), limit, "" if lines else ", no line breaks"),
                   "bad_value")


def _opendata_contact(od: Section) -> str | None:
    """``[opendata] contact``: None when absent or empty; else an e-mail address or an http(s) URL.

    An internationalised domain (``opendata@stadt-köln.de``) is kept in its ASCII (``xn--``) form and
    other non-ASCII characters of a URL percent-encoded (RFC 3987 §3.1): the catalogue publishes the
    contact as a ``mailto:`` or ``https:`` URI (DCAT ``contactPoint``), which portals take as ASCII.
    """
    value: str = od.get("contact", str, "").strip()
    if not value:
        return None
    try:
        ascii_value = _ascii_contact(value)
    except _DeviatingDomain as exc:
        raise od.error("opendata.contact", "opendata.contact %r: the domain %r has %s, which the two IDNA standards"
                       " encode as different domains; write the domain in its xn-- form (as the registrar shows it)"
                       % (_shown(value), exc.domain, exc.chars), "bad_value") from None
    if ascii_value is not None and ((len(ascii_value) <= 254 and _EMAIL.fullmatch(ascii_value))
                                    or _http_url(ascii_value)):
        return ascii_value
    raise od.error("opendata.contact", "opendata.contact %r must be an e-mail address (opendata@city.example) or an "
                   "absolute http:// or https:// URL of a contact page, in ASCII but for the domain (an "
                   "internationalised domain such as stadt-köln.de is published in its xn-- form)" % _shown(value),
                   "bad_value")


# Characters IDNA 2003 (Python's "idna" codec) maps away but IDNA 2008 (registries, DENIC) keeps, so the two
# name different domains: straße.de is strasse.de in one and xn--strae-oqa.de in the other (UTS #46 deviations).
_IDNA_DEVIATIONS = frozenset("ßςẞ\u200c\u200d")


class _DeviatingDomain(ValueError):
    def __init__(self, domain: str, chars: str) -> None:
        super().__init__(domain)
        self.domain, self.chars = domain, chars


def _ascii_domain(domain: str) -> str | None:
    """``domain`` with its non-ASCII labels IDNA-encoded (``xn--``), or None when it cannot be.

    Raises:
        _DeviatingDomain: it has a character IDNA 2003 and 2008 encode differently.
    """
    if domain.isascii():
        return domain
    deviating = sorted(_IDNA_DEVIATIONS & set(domain))
    if deviating:
        raise _DeviatingDomain(domain, ", ".join("%r (U+%04X)" % (c, ord(c)) for c in deviating))
    try:
        encoded = domain.encode("idna").decode("ascii")
    except UnicodeError:  # an empty or too long label, a prohibited character
        return None
    # IDNA 2003 maps fullwidth '＠' '／' '：' to '@' '/' ':' (NFKC) without STD3's host-name rules: a host
    # that became another host's userinfo or path is refused, not published
    labels = encoded.split(".")
    if labels[-1] == "":  # a trailing dot
        labels.pop()
    return encoded if labels and all(re.fullmatch(r"[A-Za-z0-9-]+", label) for label in labels) else None


def _ascii_contact(value: str) -> str | None:
    """``value`` (an e-mail address or URL, unchecked) with an internationalised domain in its ``xn--`` form and,
    in a URL, other non-ASCII characters percent-encoded as UTF-8; None when the domain cannot be encoded.

    Raises:
        _DeviatingDomain: see :func:`_ascii_domain`.
    """
    if value.isascii():
        return value
    scheme, sep, rest = value.partition("://")
    if not sep:  # an e-mail address: only its domain may be internationalised (the local part stays ASCII)
        local, at, domain = value.rpartition("@")
        encoded = _ascii_domain(domain) if at else None
        return None if encoded is None else local + at + encoded
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    host, colon, port = hostport.rpartition(":") if re.fullmatch(r".*:\d*", hostport) else (hostport, "", "")
    encoded = _ascii_domain(host)
    if encoded is None:
        return None
    tail = re.sub(r"[^\x00-\x7f]+", lambda m: quote(m.group(0), safe=""), tail)
    return scheme + sep + userinfo + at + encoded + colon + port + tail


def _opendata_keywords(od: Section) -> tuple[str, ...] | None:
    """``[opendata] keywords``: None when absent; else an array of distinct short printable strings."""
    raw = od.get("keywords", list, None)
    if raw is None:
        return None
    words: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise od.error("opendata.keywords", "opendata.keywords must be an array of strings; item %d is %r"
                           % (i, item), "wrong_type")
        word = item.strip()
        if not word or len(word) > MAX_KEYWORD_LEN or not word.isprintable():
            raise od.error("opendata.keywords", "opendata.keywords item %d (%r) must be printable text of 1 to %d "
                           "characters" % (i, _shown(item), MAX_KEYWORD_LEN), "bad_value")
        if word.lower() in (w.lower() for w in words):
            raise od.error("opendata.keywords", "opendata.keywords lists %r twice" % word, "bad_value")
        words.append(word)
    if len(words) > MAX_KEYWORDS:
        raise od.error("opendata.keywords", "opendata.keywords has %d items; at most %d" % (len(words), MAX_KEYWORDS),
                       "bad_value")
    return tuple(words)


# [opendata] language: a BCP 47 (RFC 5646) language tag: a language subtag (ISO 639, 2 or 3 letters, with up
# to three 3-letter extlangs: zh-yue), an optional script (ISO 15924, 4 letters), an optional region (ISO 3166
# 2 letters, or UN M.49 3 digits), variants (ca-ES-valencia, de-CH-1996), extensions (de-DE-u-co-phonebk) and a
# private use part (x-...). Its form only: whether the subtags are registered (IANA Language Subtag
# Registry) is not checked (no registry offline).
_LANGUAGE_TAG = re.compile(
    r"([A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?"
    r"((?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
    r"((?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*)"
    r"(-[xX](?:-[A-Za-z0-9]{1,8})+)?")


def _opendata_language(od: Section) -> str:
    """``[opendata] language``: "en" when absent or empty; else a BCP 47 tag ``language[-Script][-REGION][-variant...]``
    in its conventional case (``de-DE``, ``zh-Hant-TW``): the page's ``lang`` and the catalogue's language."""
    value: str = od.get("language", str, "").strip()
    if not value:
        return "en"
    match = _LANGUAGE_TAG.fullmatch(value)
    if match is None:
        raise od.error("opendata.language", "opendata.language %r must be a BCP 47 language tag: a 2- or 3-letter "
                       "language code, optionally a 4-letter script, a 2-letter or 3-digit region and variants, joined by '-' "
                       "(e.g. \"de\", \"de-DE\", \"pl\", \"ja\", \"zh-Hant-TW\")" % _shown(value), "bad_value")
    language, script, region, variants, extensions, private = match.groups()
    return ("-".join([language.lower()] + ([script.title()] if script else []) + ([region.upper()] if region else []))
            + (variants + extensions + (private or "")).lower())


def _opendata_base_url(od: Section) -> str | None:
    """``[opendata] base_url``: None when absent or empty; else an absolute http(s) URL without query or
    fragment, kept without its trailing slash (``/opendata`` is appended to it)."""
    value: str = od.get("base_url", str, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if (_http_url(value) and "?" not in value and "#" not in value
            and not parts.path.rstrip("/").endswith("/opendata")):
        return value.rstrip("/")
    raise od.error("opendata.base_url", "opendata.base_url %r must be the absolute http:// or https:// address the "
                   "public reaches the gateway's /opendata at, without /opendata, query or fragment (e.g. "
                   "\"https://data.city.example\")" % _shown(value), "bad_value")
