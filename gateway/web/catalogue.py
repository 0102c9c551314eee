"""The open-data catalogue: what ``/opendata`` says about the data (DCAT-style fields, a data
dictionary) and the same as DCAT-AP JSON-LD (``/opendata/catalog.jsonld``).

Nothing about the fields is written twice: the data dictionary is derived from the privacy policy
through :func:`gateway.web.transparency.build_transparency` (labels, units, periods, noise, the
effective retention), the CSV's aggregate from :mod:`gateway.web.export` and the unit codes from
:mod:`gateway.web.ngsi`. What the city configures comes from ``[opendata]``
(:class:`gateway.config.model.OpenDataConfig`); see docs/open-data.md, "Catalogue".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from aiohttp import web

from gateway.config.licence import NOT_SET as NOT_SET  # re-exported (gateway.web.opendata)
from gateway.config.licence import LICENCE_REF_PREFIX, is_url
from gateway.config.model import OpenDataConfig
from gateway.web import export, ngsi, opendata_budget
from gateway.web.context import WebContext
from gateway.web.liveness import window_of
from gateway.web.transparency import build_transparency, format_duration
from gateway.web.views import DeviceView

LD_JSON = "application/ld+json"
GEO_JSON = "application/geo+json"
CATALOG_PATH = "/opendata/catalog.jsonld"
DAY_S = 86400
# The defaults name the policy's kinds by their titles (a kind the policy gains is named with no code change):
# DEFAULT_TITLE % "streetlight and waste bin", DEFAULT_DESCRIPTION % the same.
DEFAULT_TITLE = "City sensor data: %s devices"
DEFAULT_KEYWORDS = ("sensors", "smart city", "NGSI-LD", "differential privacy")
DEFAULT_DESCRIPTION = ("What the city's %s devices released, per device: people-related signals only as noisy "
                       "counts (noise added on the device, small counts withheld), everything else as coarse "
                       "aggregates. What is collected and why: the transparency page.")
MODELS = {
    "Streetlight": "https://github.com/smart-data-models/dataModel.Streetlighting/tree/master/Streetlight",
    "WasteContainer": "https://github.com/smart-data-models/dataModel.WasteManagement/tree/master/WasteContainer",
}
# The index fields made of the published data (the report store); null while it cannot be read.
STORE_FIELDS = ("modified", "spatial", "temporal")
# Each format: key, path (literal: it answers as is; the query parameters are optional), media type, title,
# and its file type in the EU's vocabulary (DCAT-AP's dct:format). The NGSI-LD entry names the entity
# types the policy's kinds are published as (:func:`formats`).
Format = tuple[str, str, str, str, str]
_OTHER_FORMATS: tuple[Format, ...] = (
    ("csv", "/opendata/readings.csv", "text/csv", "Released values per device, UTC hour, zone and field (CSV)", "CSV"),
    ("geojson", "/opendata/devices.geojson", GEO_JSON, "Devices with their latest values (GeoJSON)", "GEOJSON"),
    ("privacy-budget", opendata_budget.PATH, "text/csv",
     "Privacy budget spent: ε per device, people-related field and UTC day, in milli-ε (CSV)", "CSV"),
)


def formats(entity_types: Sequence[str]) -> tuple[Format, ...]:
    """The formats, the NGSI-LD one listing ``entity_types`` (the published ones, :func:`ngsi.plan`)."""
    models = [t for t in entity_types if t in MODELS]
    others = [t for t in entity_types if t not in MODELS]
    what = ["FIWARE Smart Data Models " + ", ".join(models)] if models else []
    what += [", ".join(others) + ": no Smart Data Model, the released fields as attributes"] if others else []
    title = "Latest values per device as NGSI-LD entities" + (" (%s)" % "; ".join(what) if what else "")
    query = "type=%s&options=keyValues" % ",".join(entity_types) if entity_types else "options=keyValues"
    ngsi_ld: Format = ("ngsi-ld", "/opendata/ngsi-ld/v1/entities?" + query, LD_JSON, title, "JSON_LD")
    return (ngsi_ld, *_OTHER_FORMATS)


# The EU's frequency vocabulary (DCAT-AP dct:accrualPeriodicity) by window length: new values arrive with
# every window.
FREQUENCY_BASE = "http://publications.europa.eu/resource/authority/frequency/"
_FREQUENCY_BY_WINDOW = {60: "1MIN", 300: "5MIN", 600: "10MIN", 900: "15MIN", 1800: "30MIN", 3600: "HOURLY"}
FILE_TYPE_BASE = "http://publications.europa.eu/resource/authority/file-type/"
IANA_MEDIA = "https://www.iana.org/assignments/media-types/"
# DCAT-AP's dct:language is an IRI of the EU's language authority table (its codes are ISO 639-2/T's),
# by the BCP 47 tag's language subtag: the EU's 24 official languages and a few common others. A language
# not here gets no dct:language (DCAT-AP admits only the table's IRIs, a literal fails its validation).
LANGUAGE_BASE = "http://publications.europa.eu/resource/authority/language/"
EU_LANGUAGES = {
    "bg": "BUL", "cs": "CES", "da": "DAN", "de": "DEU", "el": "ELL", "en": "ENG", "es": "SPA", "et": "EST",
    "fi": "FIN", "fr": "FRA", "ga": "GLE", "hr": "HRV", "hu": "HUN", "it": "ITA", "lt": "LIT", "lv": "LAV",
    "mt": "MLT", "nl": "NLD", "pl": "POL", "pt": "POR", "ro": "RON", "sk": "SLK", "sl": "SLV", "sv": "SWE",
    # others common in European cities and beyond
    "ar": "ARA", "bs": "BOS", "ca": "CAT", "eu": "EUS", "gl": "GLG", "he": "HEB", "hi": "HIN", "is": "ISL",
    "ja": "JPN", "ko": "KOR", "lb": "LTZ", "mk": "MKD", "nb": "NOB", "nn": "NNO", "no": "NOR", "ru": "RUS",
    "sq": "SQI", "sr": "SRP", "tr": "TUR", "uk": "UKR", "zh": "ZHO",
}
# The language of the gateway's own texts (default title and description, formats, data dictionary).
GATEWAY_LANGUAGE = "en"


def language_iri(tag: str) -> str | None:
    """The EU language authority IRI of BCP 47 ``tag``'s language (``de-AT`` -> ``.../language/DEU``);
    None for a language not in :data:`EU_LANGUAGES`."""
    code = EU_LANGUAGES.get(tag.split("-", 1)[0].lower())
    return LANGUAGE_BASE + code if code else None


# What each CSV column holds (keys: export.CSV_STATUS_COLUMNS, in that order; a test compares them).
# ``kind``'s %s: the policy's kinds (data_dictionary).
CSV_COLUMN_MEANINGS = {
    "hour": "UTC hour (ISO 8601) the row's period starts",
    "device": "device id",
    "kind": "device kind (%s)",
    "zone": "the zone the device's reports were stored with",
    "field": "field name (see fields)",
    "unit": "unit of value (see fields)",
    "aggregate": "how the row's released values were combined: sum, mean, or last (a level released once per "
                 "period as its value at the end: the level at until; see fields)",
    "value": "the row's value (see the field's value)",
    "values": "how many released values the row combines (fewer than the period's windows when reports are missing)",
    "until": "UTC time (ISO 8601) the row's values end: the row covers [hour, until)",
    "status": "only with withheld=include: released, or withheld (a noisy count below k: value empty, values 0)",
}


@dataclass(frozen=True)
class OpenDataMeta(OpenDataConfig):
    """``[opendata]`` as the web layer publishes it (the fields of :class:`OpenDataConfig`)."""

    @classmethod
    def of(cls, config: OpenDataConfig) -> OpenDataMeta:
        """The published form of a loaded ``[opendata]``."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(OpenDataConfig)})

    def licence_url(self) -> str | None:
        """A URL for the licence: ``[opendata] licence_url``, else the licence given as a URL or the SPDX
        page of an SPDX id; None when not set, and for a ``LicenseRef-`` id without ``licence_url``
        (SPDX has no page for a licence of the city's own: a link there would be dead)."""
        if self.licence == NOT_SET:
            return None
        if self.licence_text_url is not None:
            return self.licence_text_url
        if is_url(self.licence):
            return self.licence
        if self.licence.startswith(LICENCE_REF_PREFIX):
            return None
        return f"https://spdx.org/licenses/{self.licence}.html"

    def as_json(self) -> dict[str, Any]:
        """The ``license``/``publisher`` pair published with GeoJSON and NGSI-LD answers."""
        return {"license": self.licence, "licenseUrl": self.licence_url(), "publisher": self.publisher}


OPEN_DATA_META_KEY = web.AppKey("civicedge_open_data_meta", OpenDataMeta)


def meta_of(request: web.Request) -> OpenDataMeta:
    """The app's :class:`OpenDataMeta` (defaults: licence and publisher not set)."""
    return request.app.get(OPEN_DATA_META_KEY) or OpenDataMeta()


def transparency_of(ctx: WebContext) -> dict[str, Any]:
    """The transparency document now: the policy and the retention in force (the catalogue's source,
    and the transparency page's)."""
    retention = ctx.admin.retention() if ctx.admin is not None else None
    return build_transparency(ctx.policy, retention=retention)


def longest_retention_days(transparency: Mapping[str, Any]) -> int:
    """The longest retention in force of any field (days; 0 for a policy without fields)."""
    return max((int(f["retention_days"]) for k in transparency["kinds"] for f in k["fields"]), default=0)


def coverage_since(transparency: Mapping[str, Any], now: int) -> int:
    """From where the oldest published report is looked for: the UTC day of now less the longest
    retention in force and the longest period a report covers (a week, docs/protocol.md §2), before
    which no report holds a value (retention removed them). A whole day, so the lookup is read again
    once a day only; and a seek in the period index past the older reports."""
    start = now - longest_retention_days(transparency) * DAY_S - 7 * DAY_S
    return max(0, start - start % DAY_S)


def base_of(request: web.Request, meta: OpenDataMeta) -> str:
    """Where the public reaches this gateway: ``[opendata] base_url``, else the scheme and ``Host`` the
    request came with (behind a reverse proxy that is the gateway's own address: set base_url)."""
    return meta.base_url or f"{request.scheme}://{request.host}"


def _unit_code(policy: Mapping[str, Any], kind: str, field: str, unit: str) -> str | None:
    """The field's UN/CEFACT code: the policy field's ``unit_code``, else the table's (:func:`ngsi.unit_code`)."""
    spec = policy.get("kinds", {}).get(kind, {}).get("fields", {}).get(field)
    return ngsi.unit_code(unit, spec if isinstance(spec, Mapping) else None)


def _per(period_s: int) -> str:
    """``hour``, ``day``, or the duration (``6 h``, ``15 min``): what "one per ..." is followed by."""
    return {3600: "hour", DAY_S: "day"}.get(period_s, format_duration(period_s))


def _value_meaning(f: Mapping[str, Any], aggregate: str) -> str:
    """What a CSV value of field ``f`` (a field of the transparency document) means, combined as
    ``aggregate`` (``sum``, ``mean`` or ``last``)."""
    unit, per = str(f["unit"]), _per(int(f["period_s"]))
    rounded = f", rounded to {f['quantum']} {unit} on the device" if "quantum" in f else ""
    if f["release"] == "noisy_count":
        return (f"{f['label']}: the counts released for the row's period [hour, until), one per {per}, summed; "
                f"each has discrete Laplace noise added on the device (see noise), and a noisy count below k was "
                f"withheld, so a missing row may be a small count")
    if aggregate == "sum":
        return f"{f['label']}: the values released for the row's period [hour, until), one per {per}, summed, in {unit}"
    if aggregate == "last":
        # Rows of a store older than this rule hold several values per period (fill from 15-minute
        # windows, before 2026-12-05): export.aggregate_of labels those mean.
        return (f"{f['label']}: the level at the end of the row's period (until), released once per {per}{rounded}, "
                f"in {unit}; a row of values stored before the level was released once per period (e.g. fill "
                f"from 15-minute windows, before 2026-12-05) says aggregate mean and holds the mean of its "
                f"values, one decimal")
    if unit == "state":
        return (f"{f['label']}: the share of the row's released values (one per {per}) that were 1, from 0 to 1, "
                f"one decimal; e.g. 0.25 = 1 in 4 values")
    return (f"{f['label']}: the mean of the row's released values (one per {per}{rounded}), in {unit}, "
            f"one decimal")


def csv_aggregate(kind: str, f: Mapping[str, Any], level_periods: Mapping[tuple[str, str], int]) -> str:
    """The CSV's ``aggregate`` of field ``f`` (of the transparency document) of ``kind``: the CSV's own
    rule, :func:`gateway.web.export.aggregate_of`."""
    return export.aggregate_of(kind, str(f["field"]), str(f["unit"]), level_periods)


def data_dictionary(transparency: Mapping[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
    """The CSV's columns and every field's meaning, unit, period, noise and retention, derived from the
    transparency document (:func:`gateway.web.transparency.build_transparency`, so from the policy and
    the retention in force) and the CSV's rules."""
    level_periods = export.level_release_periods(policy)
    fields = []
    for kind in transparency["kinds"]:
        for f in kind["fields"]:
            aggregate = csv_aggregate(str(kind["kind"]), f, level_periods)
            entry: dict[str, Any] = {
                "kind": kind["kind"], "field": f["field"], "label": f["label"], "unit": f["unit"],
                "unitCode": _unit_code(policy, str(kind["kind"]), str(f["field"]), str(f["unit"])),
                "aggregate": aggregate,
                "value": _value_meaning(f, aggregate), "period": format_duration(int(f["period_s"])),
                "periodSeconds": f["period_s"], "aboutPeople": f["personal"], "release": f["release_text"],
                "quantum": f.get("quantum"), "validRange": f.get("valid_range"), "noise": None,
                "retentionDays": f["retention_days"],
                "source": f["source"], "purpose": f["purpose"],
            }
            if f["release"] == "noisy_count":
                entry["noise"] = {"mechanism": "discrete Laplace, added on the device", "epsilonPerRelease":
                                  f["eps_per_release"], "epsilonPerDayMax": f["eps_per_day_max"], "k": f["k"]}
            fields.append(entry)
    columns = dict(CSV_COLUMN_MEANINGS)
    columns["kind"] = columns["kind"] % ", ".join(str(k["kind"]) for k in transparency["kinds"])
    return {"csvColumns": columns, "privacyBudgetColumns": dict(opendata_budget.COLUMN_MEANINGS), "fields": fields}


def _iso(ts: float | None) -> str | None:
    return ngsi.iso_utc(int(ts)) if ts is not None else None


@dataclass(frozen=True)
class Catalogue:
    """What the catalogue says at one request.

    Attributes:
        meta: ``[opendata]``.
        base: the public base URL (:func:`base_of`).
        policy: the privacy policy.
        transparency: the transparency document (policy and retention in force).
        devices: the published devices.
        modified: the newest time the published data shows (as ``Last-Modified``), or None.
        now: the gateway's time.
        oldest: the earliest period start of the published reports (None: none is published yet).
        unavailable: the report store's failure (the :class:`gateway.errors.StorageError` reason, e.g.
            ``corrupt``) when it could not be read for this answer: ``devices`` is then empty and
            ``modified``/``oldest`` None, and the answer says what is unknown (:meth:`unavailable_note`);
            None when it was read.
    """

    meta: OpenDataMeta
    base: str
    policy: Mapping[str, Any]
    transparency: Mapping[str, Any]
    devices: Sequence[DeviceView]
    modified: float | None
    now: int
    oldest: int | None = None
    unavailable: str | None = None

    def url(self, path: str) -> str:
        """The absolute URL of a path of this gateway."""
        return self.base + path

    def entity_types(self) -> list[str]:
        """The entity types the policy's kinds are published as (:func:`ngsi.plan`)."""
        return ngsi.plan(self.policy).entity_types()

    def formats(self) -> tuple[Format, ...]:
        """The formats (:func:`formats` of the published entity types)."""
        return formats(self.entity_types())

    def models(self) -> dict[str, str]:
        """The Smart Data Models the published entity types follow, by type (a generic type follows none)."""
        return {t: MODELS[t] for t in self.entity_types() if t in MODELS}

    def kind_names(self) -> list[str]:
        """The policy's kinds as a text names them: each kind's ``title`` (``Waste bin``), its first letter
        lowered unless the title starts with an acronym (``CO2 sensor`` stays), in the policy's order."""
        names = []
        for k in self.transparency["kinds"]:
            title = str(k.get("title") or k["kind"])
            names.append(title[:1].lower() + title[1:] if title[1:2].islower() else title)
        return names

    def _kinds_text(self) -> str:
        """:meth:`kind_names` as a list in prose: ``a``, ``a and b``, ``a, b and c``."""
        names = self.kind_names()
        return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]

    def title(self) -> str:
        """``[opendata] title``, else :data:`DEFAULT_TITLE` naming the policy's kinds."""
        return self.meta.title or DEFAULT_TITLE % self._kinds_text()

    def description(self) -> str:
        """``[opendata] description``, else :data:`DEFAULT_DESCRIPTION` (naming the policy's kinds) and the
        privacy policy's statement."""
        if self.meta.description:
            return self.meta.description
        statement = str(self.transparency.get("statement") or "")
        return DEFAULT_DESCRIPTION % self._kinds_text() + (" " + statement if statement else "")

    def keywords(self) -> list[str]:
        """``[opendata] keywords``, else the policy's kinds (:meth:`kind_names`) and :data:`DEFAULT_KEYWORDS`."""
        if self.meta.keywords is not None:
            return list(self.meta.keywords)
        return [*dict.fromkeys(self.kind_names()), *DEFAULT_KEYWORDS]

    def city_texts(self) -> bool:
        """Whether the city wrote any of the texts shown (title, description, publisher, keywords) in
        ``[opendata] language``; the others are the gateway's own, in English."""
        m = self.meta
        return bool(m.title or m.description or m.keywords or m.publisher != NOT_SET)

    def languages(self) -> list[str]:
        """The BCP 47 tags of the catalogue's texts: ``[opendata] language`` when the city wrote any of
        them (:meth:`city_texts`), and English, the gateway's own texts' (format titles, data dictionary)."""
        # an unknown language ("": refused at run) is left out rather than guessed
        city = [self.meta.language] if self.city_texts() and self.meta.language else []
        return list(dict.fromkeys([*city, GATEWAY_LANGUAGE]))

    def content_language(self) -> str:
        """:meth:`languages` as a ``Content-Language`` value (RFC 9110 8.5): ``de, en``."""
        return ", ".join(self.languages())

    def dcat_languages(self) -> list[dict[str, str]] | None:
        """:meth:`languages` as ``dct:language`` IRIs (:func:`language_iri`); None when one has none:
        a list without the city's language would declare its texts English."""
        iris = [language_iri(tag) for tag in self.languages()]
        if None in iris or (self.city_texts() and not self.meta.language):
            return None
        return [{"@id": iri} for iri in dict.fromkeys(i for i in iris if i is not None)]

    def bbox(self) -> list[float] | None:
        """``[west, south, east, north]`` of the published devices with a location (GeoJSON's bbox order),
        None for none. A device at 0,0 has none: without a registry every device is listed at 0,0, which
        would stretch a city's box to the Gulf of Guinea."""
        located = [d for d in self.devices
                   if d.lat is not None and d.lon is not None and (d.lat, d.lon) != (0.0, 0.0)]
        if not located:
            return None
        lons, lats = [d.lon for d in located], [d.lat for d in located]
        return [min(lons), min(lats), max(lons), max(lats)]

    def temporal_start(self) -> int | None:
        """The UTC day from which published values may be held: the day of the oldest published report's
        period, or the day now less the longest retention in force when that is later (retention removes
        values, not reports; each field's own retention is in the data dictionary); None while nothing
        is published (DCAT-AP's temporal coverage is optional: left out rather than a start no value has).
        """
        if self.oldest is None:
            return None
        start = max(self.oldest, self.now - longest_retention_days(self.transparency) * DAY_S)
        return start - start % DAY_S

    def window_s(self) -> int:
        """The shortest window of the published kinds: how often new values arrive."""
        kinds = [str(k["kind"]) for k in self.transparency["kinds"]]
        return min((window_of(self.policy, k) for k in kinds), default=window_of(self.policy, ""))

    def accrual_periodicity(self) -> str | None:
        """The EU frequency URI of :meth:`window_s` (``.../frequency/15MIN``); None for a window it has none for."""
        code = _FREQUENCY_BY_WINDOW.get(self.window_s())
        return FREQUENCY_BASE + code if code else None

    def contact_point(self) -> dict[str, str] | None:
        """``{"name", "email" or "url"}`` from ``[opendata] contact`` (named after the publisher), or None."""
        contact = self.meta.contact
        if contact is None:
            return None
        name = self.meta.publisher if self.meta.publisher != NOT_SET else self.title()
        return {"name": name, ("url" if is_url(contact) else "email"): contact}

    def unavailable_note(self) -> dict[str, Any] | None:
        """What the catalogue cannot say while the report store cannot be read (None when it can): the
        fields made of the published data (null meanwhile) and the formats whose data answers 503, with
        the store's failure. Everything else (descriptions, licence, publisher, formats, data dictionary,
        mapping) comes from the configuration and the policy, and stands."""
        if self.unavailable is None:
            return None
        return {
            "code": "store_unavailable",
            "reason": self.unavailable,
            "message": (f"the gateway's report store cannot be read now ({self.unavailable}): "
                        f"{', '.join(STORE_FIELDS)} are unknown (null) and the formats' data answers 503 until "
                        "it can; the rest of this catalogue does not depend on it"),
            "fields": list(STORE_FIELDS),
            "formats": [key for key, *_rest in self.formats()],
        }

    def index_head(self) -> dict[str, Any]:
        """The descriptive fields of the ``/opendata`` index (DCAT-style names)."""
        bbox = self.bbox()
        start = self.temporal_start()
        return {
            "title": self.title(),
            "description": self.description(),
            "publisher": self.meta.publisher,
            "contactPoint": self.contact_point(),
            "keywords": self.keywords(),
            "language": self.meta.language or None,
            "license": self.meta.licence,
            "licenseUrl": self.meta.licence_url(),
            "modified": _iso(self.modified),
            "spatial": {"bbox": bbox} if bbox is not None else None,
            "temporal": {"start": _iso(start), "end": None} if start is not None else None,
            "accrualPeriodicity": self.accrual_periodicity(),
            "unavailable": self.unavailable_note(),
            "updateFrequency": (f"new values with every {format_duration(self.window_s())} window; the CSV has a row "
                                "per device, field and UTC hour once the hour has ended (longer releases, e.g. 6-hour "
                                "counts, once their period has ended)"),
        }

    def dcat(self) -> dict[str, Any]:
        """The catalogue as DCAT-AP JSON-LD: one ``dcat:Catalog`` with one ``dcat:Dataset`` and a
        ``dcat:Distribution`` per format."""
        licence = self.meta.licence_url()
        publisher = ({"@type": "foaf:Agent", "foaf:name": self.meta.publisher}
                     if self.meta.publisher != NOT_SET else None)
        dataset: dict[str, Any] = {
            "@id": self.url("/opendata#dataset"),
            "@type": "dcat:Dataset",
            "dct:title": self.title(),
            "dct:description": self.description(),
            "dcat:keyword": self.keywords(),
            "dcat:landingPage": {"@id": self.url("/opendata")},
            "foaf:page": {"@id": self.url("/transparency")},
            "dct:conformsTo": [{"@id": url} for url in self.models().values()],
            "dcat:distribution": [self._distribution(path, media, title, file_type, licence)
                                  for _key, path, media, title, file_type in self.formats()],
        }
        if publisher is not None:
            dataset["dct:publisher"] = publisher
        languages = self.dcat_languages()
        if languages is not None:
            dataset["dct:language"] = languages
        contact = self.contact_point()
        if contact is not None:
            card: dict[str, Any] = {"@type": "vcard:Kind", "vcard:fn": contact["name"]}
            if "email" in contact:
                card["vcard:hasEmail"] = {"@id": "mailto:" + contact["email"]}
            else:
                card["vcard:hasURL"] = {"@id": contact["url"]}
            dataset["dcat:contactPoint"] = card
        start = self.temporal_start()
        if start is not None:
            dataset["dct:temporal"] = {"@type": "dct:PeriodOfTime",
                                       "dcat:startDate": {"@value": _iso(start), "@type": "xsd:dateTime"}}
        bbox = self.bbox()
        if bbox is not None:
            dataset["dct:spatial"] = {"@type": "dct:Location",
                                      "dcat:bbox": {"@value": _wkt(bbox), "@type": "gsp:wktLiteral"}}
        if self.accrual_periodicity() is not None:
            dataset["dct:accrualPeriodicity"] = {"@id": self.accrual_periodicity()}
        if self.modified is not None:
            dataset["dct:modified"] = {"@value": _iso(self.modified), "@type": "xsd:dateTime"}
        catalog: dict[str, Any] = {
            "@context": {"dcat": "http://www.w3.org/ns/dcat#", "dct": "http://purl.org/dc/terms/",
                         "foaf": "http://xmlns.com/foaf/0.1/", "vcard": "http://www.w3.org/2006/vcard/ns#",
                         "xsd": "http://www.w3.org/2001/XMLSchema#", "gsp": "http://www.opengis.net/ont/geosparql#"},
            "@id": self.url(CATALOG_PATH),
            "@type": "dcat:Catalog",
            "dct:title": self.title(),
            "dct:description": self.description(),
            "foaf:homepage": {"@id": self.url("/opendata")},
            "dcat:dataset": [dataset],
        }
        if publisher is not None:
            catalog["dct:publisher"] = publisher
        if languages is not None:
            catalog["dct:language"] = languages  # the language of its metadata (DCAT-AP)
        if licence is not None:
            catalog["dct:license"] = {"@id": licence}
        return catalog

    def _distribution(self, path: str, media: str, title: str, file_type: str, licence: str | None) -> dict[str, Any]:
        dist: dict[str, Any] = {
            "@id": self.url(path), "@type": "dcat:Distribution", "dct:title": title,
            "dcat:accessURL": {"@id": self.url(path)},
            "dcat:mediaType": {"@id": IANA_MEDIA + media},
            "dct:format": {"@id": FILE_TYPE_BASE + file_type},
        }
        if media != LD_JSON:  # one file each; the entities are an API answer, not a download
            dist["dcat:downloadURL"] = {"@id": self.url(path)}
        if licence is not None:
            dist["dct:license"] = {"@id": licence}
        return dist


def _wkt(bbox: Sequence[float]) -> str:
    """A bounding box as a WKT literal (a point when it has no extent)."""
    w, s, e, n = bbox
    if (w, s) == (e, n):
        return f"POINT({w} {s})"
    return f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"
