"""arXiv API (Atom) and OAI-PMH ListRecords responses (``arXiv``, ``arXivRaw``, ``oai_dc``).

Both file ingestion and the live harvester use these parsers, so a saved response and a
fetched one are read by the same code. XML is parsed with entity expansion and network
access off: a response is data, never instructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from papersift.ingest.errors import IngestError
from papersift.ingest.records import PaperRecord, parse_date, split_authors
from papersift.model import clean_text, normalize_arxiv_id

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV_ATOM = "{http://arxiv.org/schemas/atom}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
OAI = "{http://www.openarchives.org/OAI/2.0/}"
ARXIV_OAI = "{http://arxiv.org/OAI/arXiv/}"
ARXIV_RAW = "{http://arxiv.org/OAI/arXivRaw/}"
OAI_DC = "{http://www.openarchives.org/OAI/2.0/oai_dc/}"
DC = "{http://purl.org/dc/elements/1.1/}"


@dataclass
class FeedPage:
    """One response: its records plus what a harvester needs to ask for the next page."""

    records: list[PaperRecord] = field(default_factory=list)
    resumption_token: str | None = None
    total: int | None = None
    start_index: int | None = None
    deleted: int = 0


def _parse_xml(data: bytes) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True
    )
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or (exc.position[0] if exc.position else 0)
        msg = exc.msg or str(exc)
        raise IngestError(f"broken XML ({msg})", location=f"line {line}") from None


def root_kind(data: bytes) -> str:
    """'atom', 'oai' or 'unknown' from the document element, without a full parse."""
    head = data[:4096]
    if b"<OAI-PMH" in head or b":OAI-PMH" in head:
        return "oai"
    if b"<feed" in head or b":feed" in head:
        return "atom"
    return "unknown"


def _text(el: etree._Element | None) -> str:
    return clean_text("".join(el.itertext())) if el is not None else ""


def _line(el: etree._Element) -> str:
    return f"line {el.sourceline}" if el.sourceline else ""


def parse_atom(data: bytes) -> FeedPage:
    """An arXiv API response; an arXiv error entry becomes an IngestError."""
    root = _parse_xml(data)
    if root.tag != f"{ATOM}feed":
        raise IngestError(f"expected an Atom <feed>, found <{etree.QName(root).localname}>")
    page = FeedPage()
    total = root.find(f"{OPENSEARCH}totalResults")
    start = root.find(f"{OPENSEARCH}startIndex")
    page.total = int(total.text) if total is not None and (total.text or "").isdigit() else None
    if start is not None and (start.text or "").isdigit():
        page.start_index = int(start.text)
    for entry in root.iter(f"{ATOM}entry"):
        where = _line(entry)
        raw_id = _text(entry.find(f"{ATOM}id"))
        if "api/errors" in raw_id:
            raise IngestError(
                f"arXiv API error: {_text(entry.find(f'{ATOM}summary'))}", location=where
            )
        links = entry.findall(f"{ATOM}link")
        pdf = next((lk.get("href") for lk in links if lk.get("title") == "pdf"), None)
        abs_url = next((lk.get("href") for lk in links if lk.get("rel") == "alternate"), None)
        try:
            record = PaperRecord(
                title=_text(entry.find(f"{ATOM}title")),
                abstract=_text(entry.find(f"{ATOM}summary")),
                authors=[_text(a.find(f"{ATOM}name")) for a in entry.findall(f"{ATOM}author")],
                published=parse_date(_text(entry.find(f"{ATOM}published")) or None),
                updated=parse_date(
                    _text(entry.find(f"{ATOM}updated")) or None, field_name="updated"
                ),
                categories=[c.get("term", "") for c in entry.findall(f"{ATOM}category")],
                doi=_text(entry.find(f"{ARXIV_ATOM}doi")) or None,
                arxiv_id=normalize_arxiv_id(raw_id),
                abs_url=abs_url,
                pdf_url=pdf,
                location=where,
                comment=_text(entry.find(f"{ARXIV_ATOM}comment")) or None,
                primary_category=_primary(entry),
                extra_text=_text(entry.find(f"{ARXIV_ATOM}comment")),
            ).finalize()
        except IngestError as exc:
            raise exc.at(location=where) from None
        page.records.append(record)
    return page


def _primary(entry: etree._Element) -> str | None:
    """The entry's ``arxiv:primary_category`` term (the API's primary category)."""
    node = entry.find(f"{ARXIV_ATOM}primary_category")
    return (node.get("term") or None) if node is not None else None


def _oai_arxiv(meta: etree._Element, where: str) -> PaperRecord:
    authors = []
    for a in meta.iter(f"{ARXIV_OAI}author"):
        parts = [_text(a.find(f"{ARXIV_OAI}{n}")) for n in ("forenames", "keyname", "suffix")]
        authors.append(" ".join(p for p in parts if p))
    return PaperRecord(
        title=_text(meta.find(f"{ARXIV_OAI}title")),
        abstract=_text(meta.find(f"{ARXIV_OAI}abstract")),
        authors=authors,
        published=parse_date(_text(meta.find(f"{ARXIV_OAI}created")) or None),
        updated=parse_date(_text(meta.find(f"{ARXIV_OAI}updated")) or None, field_name="updated"),
        categories=_text(meta.find(f"{ARXIV_OAI}categories")).split(),
        doi=_text(meta.find(f"{ARXIV_OAI}doi")) or None,
        arxiv_id=_text(meta.find(f"{ARXIV_OAI}id")),
        location=where,
        comment=_text(meta.find(f"{ARXIV_OAI}comments")) or None,
        extra_text=_text(meta.find(f"{ARXIV_OAI}comments")),
    )


def _oai_arxiv_raw(meta: etree._Element, where: str) -> PaperRecord:
    dates = [_text(v.find(f"{ARXIV_RAW}date")) for v in meta.findall(f"{ARXIV_RAW}version")]
    dates = [d for d in dates if d]
    return PaperRecord(
        title=_text(meta.find(f"{ARXIV_RAW}title")),
        abstract=_text(meta.find(f"{ARXIV_RAW}abstract")),
        authors=split_authors(_text(meta.find(f"{ARXIV_RAW}authors"))),
        published=parse_date(dates[0], field_name="version date") if dates else None,
        updated=parse_date(dates[-1], field_name="version date") if dates else None,
        categories=_text(meta.find(f"{ARXIV_RAW}categories")).split(),
        doi=_text(meta.find(f"{ARXIV_RAW}doi")) or None,
        arxiv_id=_text(meta.find(f"{ARXIV_RAW}id")),
        location=where,
        comment=_text(meta.find(f"{ARXIV_RAW}comments")) or None,
        extra_text=_text(meta.find(f"{ARXIV_RAW}comments")),
    )


def _oai_dc(meta: etree._Element, header_id: str, where: str) -> PaperRecord:
    descriptions = [_text(d) for d in meta.findall(f"{DC}description")]
    abstract = next((d for d in descriptions if not d.startswith("Comment:")), "")
    comments = " ".join(d for d in descriptions if d.startswith("Comment:"))
    identifiers = [_text(i) for i in meta.findall(f"{DC}identifier")]
    arxiv_id = next((normalize_arxiv_id(i) for i in identifiers if normalize_arxiv_id(i)), None)
    doi = next((i for i in identifiers if i.lower().startswith(("doi:", "10."))), None)
    dates = sorted(_text(d) for d in meta.findall(f"{DC}date") if _text(d))
    creators = []
    for c in meta.findall(f"{DC}creator"):
        name = _text(c)
        if "," in name:  # OAI-DC writes 'Last, First'
            last, _, first = name.partition(",")
            name = f"{first.strip()} {last.strip()}".strip()
        creators.append(name)
    return PaperRecord(
        title=_text(meta.find(f"{DC}title")),
        abstract=abstract,
        authors=creators,
        published=parse_date(dates[0]) if dates else None,
        updated=parse_date(dates[-1], field_name="updated") if len(dates) > 1 else None,
        categories=[],
        doi=doi,
        arxiv_id=arxiv_id or normalize_arxiv_id(header_id),
        abs_url=next((i for i in identifiers if i.startswith("http")), None),
        location=where,
        extra_text=comments,
    )


def parse_oai(data: bytes) -> FeedPage:
    """An OAI-PMH ListRecords (or GetRecord) response in any of the three arXiv formats."""
    root = _parse_xml(data)
    if root.tag != f"{OAI}OAI-PMH":
        raise IngestError(f"expected <OAI-PMH>, found <{etree.QName(root).localname}>")
    page = FeedPage()
    for err in root.findall(f"{OAI}error"):
        code = err.get("code", "")
        if code == "noRecordsMatch":
            return page
        raise IngestError(f"OAI-PMH error {code}: {_text(err)}", location=_line(err))
    for rec in root.iter(f"{OAI}record"):
        where = _line(rec)
        header = rec.find(f"{OAI}header")
        if header is not None and header.get("status") == "deleted":
            page.deleted += 1
            continue
        header_id = _text(header.find(f"{OAI}identifier")) if header is not None else ""
        metadata = rec.find(f"{OAI}metadata")
        if metadata is None or len(metadata) == 0:
            raise IngestError("record without metadata", location=where)
        meta = metadata[0]
        try:
            if meta.tag == f"{ARXIV_OAI}arXiv":
                record = _oai_arxiv(meta, where)
            elif meta.tag == f"{ARXIV_RAW}arXivRaw":
                record = _oai_arxiv_raw(meta, where)
            elif meta.tag == f"{OAI_DC}dc":
                record = _oai_dc(meta, header_id, where)
            else:
                raise IngestError(f"unsupported metadata format <{etree.QName(meta).localname}>")
            page.records.append(record.finalize())
        except IngestError as exc:
            raise exc.at(location=where) from None
    token = root.find(f".//{OAI}resumptionToken")
    if token is not None:
        page.resumption_token = (token.text or "").strip() or None
        size = token.get("completeListSize")
        page.total = int(size) if size and size.isdigit() else None
    return page
