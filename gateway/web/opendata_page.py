"""The open-data catalogue as a page for people: what ``/opendata`` answers a browser (``Accept: text/html``).

Machine clients get the JSON catalogue at the same URL (``gateway.web.opendata.index``); this page
says the same in words, with a download link per format and the data dictionary as a table. Like the
transparency page it links only public paths, relatively (``opendata/readings.csv``), so the links work
wherever a reverse proxy publishes it, and it inlines its stylesheet (no other path needed).

The page is English (``<html lang="en">``, its own texts); what the city wrote in ``[opendata]``
(title, description, publisher, keywords) is marked with ``[opendata] language`` on the element that
holds it, so a screen reader reads each text in its language (WCAG 3.1.2, Language of Parts).
"""

from __future__ import annotations

import html
from typing import Any, Mapping

from gateway.web.catalogue import GATEWAY_LANGUAGE, NOT_SET, Catalogue

# What each format is for a reader who is not a developer, by format key (catalogue.formats).
FORMAT_USE = {
    "csv": "a spreadsheet file of the last complete 24 hours, one row per device, hour and field; add "
           "?from=…&amp;to=… (dates such as 2026-12-01T00:00:00Z) for another range of up to 31 days",
    "geojson": "the devices on a map, with their latest values (opens in GIS tools such as QGIS)",
    "ngsi-ld": "the latest values per device for developers (FIWARE NGSI-LD)",
    "privacy-budget": "how much privacy budget (ε, in thousandths) each device spent per people count and UTC "
                      "day, repeat releases included: the last complete day; add ?from=…&amp;to=… for up to 31 days",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _href(path: str) -> str:
    """A path of this gateway (``/opendata/...``) as a link relative to the page at ``/opendata``."""
    return _e(path.removeprefix("/"))


def _lang(cat: Catalogue, city: object) -> str:
    """A ``lang`` attribute for an element holding a text the city wrote (``city`` truthy: the
    ``[opendata]`` value) in a language other than the page's; else nothing (the page's English)."""
    language = cat.meta.language
    # lang="" is HTML's "unknown language": a tag refused at run is not taken for English
    return f' lang="{_e(language)}"' if city and language != GATEWAY_LANGUAGE else ""


def _in_lang(cat: Catalogue, text: str, city: object) -> str:
    """``text`` escaped, in a ``<span>`` with its ``lang`` when :func:`_lang` gives one."""
    lang = _lang(cat, city)
    return f"<span{lang}>{_e(text)}</span>" if lang else _e(text)


def _licence(cat: Catalogue) -> str:
    url = cat.meta.licence_url()
    if cat.meta.licence == NOT_SET:
        return "No licence is set yet: ask the publisher before reusing the data."
    name = _e(cat.meta.licence)
    return f'Licence: <a rel="license" href="{_e(url)}">{name}</a>.' if url else f"Licence: {name}."


def _field_row(f: Mapping[str, Any]) -> str:
    return (f'<tr data-field="{_e(f["kind"])}.{_e(f["field"])}"><td>{_e(f["kind"])}</td>'
            f'<th scope="row"><code>{_e(f["field"])}</code></th><td>{_e(f["label"])}</td><td>{_e(f["unit"])}</td>'
            f'<td>{_e(f["period"])}</td><td>{"yes" if f["aboutPeople"] else "no"}</td><td>{_e(f["release"])}</td>'
            f'<td>{_e(f["retentionDays"])} days</td></tr>')


def render_opendata_html(cat: Catalogue, dictionary: Mapping[str, Any], *, stylesheet: str = "") -> str:
    """The catalogue ``cat`` as a standalone HTML page: title, description, publisher and licence, a
    download link per format, and the fields of ``dictionary`` (:func:`gateway.web.catalogue.data_dictionary`).

    Args:
        cat: the catalogue of the request.
        dictionary: its data dictionary.
        stylesheet: CSS text inlined in a ``<style>`` element (the server allows it by its hash).

    Raises:
        ValueError: ``stylesheet`` contains ``</`` (it would end the ``<style>`` element).
    """
    if "</" in stylesheet:
        raise ValueError("an inlined stylesheet must not contain '</' (it would end the <style> element)")
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{_e(cat.title())}: open data</title>",
        "<link rel=\"icon\" href=\"data:,\">" + (f"<style>{stylesheet}</style>" if stylesheet else "") + "</head><body>",
        f"<header><h1{_lang(cat, cat.meta.title)}>{_e(cat.title())}</h1>",
        "<nav><a href=\"transparency\">What is collected and why</a> · "
        f"<a href=\"{_href('/opendata/catalog.jsonld')}\">catalogue for open-data portals (DCAT-AP)</a></nav>"
        "</header><main>",
        f"<p class=\"description\"{_lang(cat, cat.meta.description)}>{_e(cat.description())}</p>",
    ]
    publisher = cat.meta.publisher if cat.meta.publisher != NOT_SET else None
    contact = cat.contact_point()
    who = [f"Published by {_in_lang(cat, publisher, publisher)}." if publisher else ""]
    if contact is not None:
        link = contact.get("url") or "mailto:" + contact.get("email", "")
        who.append(f'Contact: <a href="{_e(link)}">{_e(contact.get("url") or contact.get("email"))}</a>.')
    who.append(_licence(cat))
    parts.append("<p class=\"publisher\">" + " ".join(w for w in who if w) + "</p>")
    keywords = cat.keywords()
    if keywords:
        parts.append(f"<p class=\"keywords\">Keywords: {_in_lang(cat, ', '.join(keywords), cat.meta.keywords)}.</p>")
    note = cat.unavailable_note()
    if note is not None:
        parts.append("<p class=\"unavailable\" role=\"status\"><strong>The data cannot be read at the moment.</strong> "
                     "The downloads below answer with an error until it can; please try again later. "
                     "This page's descriptions are unaffected.</p>")
    parts.append("<section id=\"downloads\"><h2>Downloads</h2><ul>")
    for key, path, media, title, _file_type in cat.formats():
        use = FORMAT_USE.get(key, "")
        parts.append(f"<li data-format=\"{_e(key)}\"><a href=\"{_href(path)}\" type=\"{_e(media)}\">{_e(title)}</a>"
                     + (f": {use}" if use else "") + "</li>")
    parts.append("</ul>")
    head = cat.index_head()
    often = str(head["updateFrequency"])
    parts.append(f"<p class=\"frequency\">{_e(often[:1].upper() + often[1:])}.</p>")
    if head["modified"] is not None:
        parts.append(f"<p>Last changed: {_e(head['modified'])} (UTC).</p>")
    parts.append("</section>")
    parts.append("<section id=\"fields\"><h2 id=\"h-fields\">What each field means</h2>"
                 # A scroll box a keyboard can reach and a screen reader names (WCAG 2.1.1).
                 "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-labelledby=\"h-fields\">"
                 "<table><thead><tr>"
                 + "".join("<th scope=\"col\">%s</th>" % h for h in (
                     "kind", "field", "what", "unit", "period", "about people", "how it is released", "kept for"))
                 + "</tr></thead><tbody>")
    parts.extend(_field_row(f) for f in dictionary["fields"])
    parts.append("</tbody></table></div></section>")
    parts.append("<p class=\"machines\">Programs reading this address get the catalogue as JSON (an "
                 "<code>Accept</code> that rates a JSON type at least as high as <code>text/html</code>, or none)."
                 "</p>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
