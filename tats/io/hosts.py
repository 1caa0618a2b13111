"""Share links of file hosts turned into the file itself: Google Drive and Dropbox.

The release publishes its checkpoints as share links, which answer a preview page; :func:`open_drive`
follows Drive's confirmation flow (docs/models.md) and returns the file's response, and Dropbox links
get ``dl=1``; :func:`tats.io.download.download` streams the result. ``$TATS_GDRIVE_URL`` /
``$TATS_DROPBOX_URL`` (or :data:`GDRIVE_URL` / :data:`DROPBOX_URL`) redirect the hosts, which is how
the tests serve them from 127.0.0.1.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from typing import Any, Callable

from tats.io.download import USER_AGENT, DownloadError

GDRIVE_URL = "https://drive.google.com"
DROPBOX_URL = "https://www.dropbox.com"
MAX_PAGE = 1 << 20  # bytes of an HTML page read to look for the confirm step
MAX_CONFIRM_STEPS = 3  # pages followed before giving up (Drive needs one)


def gdrive_base() -> str:
    """Google Drive's address: ``$TATS_GDRIVE_URL`` or :data:`GDRIVE_URL`."""
    return (os.environ.get("TATS_GDRIVE_URL") or GDRIVE_URL).rstrip("/")


def dropbox_base() -> str:
    """Dropbox's address: ``$TATS_DROPBOX_URL`` or :data:`DROPBOX_URL`."""
    return (os.environ.get("TATS_DROPBOX_URL") or DROPBOX_URL).rstrip("/")


def drive_id(url: str) -> str | None:
    """The file id of a Google Drive link (``/file/d/ID/...`` or ``?id=ID``), else None."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or not parts.hostname.endswith("google.com"):
        return None
    m = re.match(r"/file/d/([^/]+)", parts.path)
    if m:
        return m.group(1)
    ids = urllib.parse.parse_qs(parts.query).get("id")
    return ids[0] if ids else None


def is_dropbox(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host == "dropbox.com" or host.endswith(".dropbox.com")


def drive_download_url(file_id: str) -> str:
    """The first address asked for a Drive file (answers the file or the confirm page)."""
    return f"{gdrive_base()}/uc?" + urllib.parse.urlencode({"export": "download", "id": file_id})


def dropbox_download_url(share_url: str) -> str:
    """A Dropbox share link with ``dl=1`` (the file, not the preview page) on :func:`dropbox_base`."""
    parts = urllib.parse.urlsplit(share_url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "dl"]
    query.append(("dl", "1"))
    return f"{dropbox_base()}{parts.path}?{urllib.parse.urlencode(query)}"


def download_url(share_url: str) -> str:
    """Where the file of ``share_url`` is asked for: Drive's download address, Dropbox's ``dl=1`` link,
    any other address unchanged."""
    file_id = drive_id(share_url)
    if file_id is not None:
        return drive_download_url(file_id)
    if is_dropbox(share_url):
        return dropbox_download_url(share_url)
    return share_url


# ------------------------------------------------------------------------------------ Google Drive
class _PageParser(HTMLParser):
    """Collects a page's title, forms (action, method, id, inputs) and link targets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.forms: list[dict[str, Any]] = []
        self.links: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "title":
            self._in_title = True
        elif tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                               "id": a.get("id", ""), "inputs": []})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["inputs"].append((a.get("type", "text").lower(), a["name"], a.get("value", "")))
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _form_target(page: _PageParser, page_url: str) -> str | None:
    """The GET address of the page's download form (today's Drive), or None."""
    forms = [f for f in page.forms if f["id"] == "download-form"] or [
        f for f in page.forms
        if "download" in f["action"] and any(n in ("id", "confirm") for _, n, _ in f["inputs"])
    ]
    if not forms or forms[0]["method"] != "get":
        return None
    form = forms[0]
    action = urllib.parse.urljoin(page_url, form["action"] or page_url)
    if urllib.parse.urlsplit(action).scheme not in ("http", "https"):
        return None
    fields = [(name, value) for kind, name, value in form["inputs"] if kind == "hidden"]
    return f"{action}{'&' if '?' in action else '?'}{urllib.parse.urlencode(fields)}"


def confirm_url(html: str, page_url: str, cookies: http.cookiejar.CookieJar, file_id: str) -> str | None:
    """Where Drive's confirmation page (``html``, read from ``page_url``) leads to the file, or None when
    the page offers no way on (a quota, permission or missing-file page).

    Tried in order: the download form, a ``download_warning*`` cookie (older Drive), a link carrying
    ``confirm=TOKEN`` (older pages)."""
    page = _PageParser()
    page.feed(html)
    target = _form_target(page, page_url)
    if target is not None:
        return target
    token = next((c.value for c in cookies if c.name.startswith("download_warning")), None)
    if token is None:
        for href in page.links:
            m = re.search(r"[?&]confirm=([0-9A-Za-z_-]+)", href)
            if m:
                token = m.group(1)
                break
    if token is None:
        return None
    query = urllib.parse.urlencode({"export": "download", "confirm": token, "id": file_id})
    return f"{gdrive_base()}/uc?{query}"


def page_title(html: str) -> str:
    """The page's ``<title>`` (or its first words), for error messages."""
    page = _PageParser()
    page.feed(html)
    text = page.title.strip() or re.sub(r"<[^>]+>|\s+", " ", html).strip()
    return text[:160]


def _is_html(resp: Any) -> bool:
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return ctype in ("text/html", "application/xhtml+xml")


def open_drive(file_id: str, start: int = 0, timeout: float = 60.0) -> Any:
    """Open Google Drive file ``file_id`` from byte ``start``; returns the response of the file itself.

    Follows the confirmation page (form, cookie or link token, see docs/models.md) with one
    cookie jar; ``Range: bytes=start-`` goes with every request (Drive answers the page whole and the
    file from ``start``). Raises :class:`DownloadError` with the page's title when Drive answers a page
    with no way on or an HTTP error with a page; other HTTP and network errors pass on as ``urllib``
    raises them (416 included: :func:`tats.io.download.download` decides whether the partial file is
    whole)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = drive_download_url(file_id)
    for _ in range(MAX_CONFIRM_STEPS + 1):
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if start:
            req.add_header("Range", f"bytes={start}-")
        try:
            resp = opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 or not _is_html(err):  # 416: download() decides whether the part is whole
                raise
            with err:
                title = page_title(err.read(MAX_PAGE).decode("utf-8", errors="replace"))
            raise DownloadError(f"Google Drive answered file {file_id} with HTTP {err.code}: {title!r} (a "
                                "file that is not shared publicly, deleted, or moved)") from None
        if not _is_html(resp):
            return resp
        with resp:
            html = resp.read(MAX_PAGE).decode("utf-8", errors="replace")
            page_url = resp.geturl()
        nxt = confirm_url(html, page_url, jar, file_id)
        if nxt is None:
            raise DownloadError(
                f"Google Drive answered file {file_id} with a page instead of the file, with no download "
                f"form or confirm token on it: {page_title(html)!r} (a download quota, a file that is "
                "not shared publicly, or a moved file)")
        url = nxt
    raise DownloadError(f"Google Drive kept answering file {file_id} with confirmation pages "
                        f"({MAX_CONFIRM_STEPS} followed)")


def opener_for(share_url: str, timeout: float = 60.0) -> Callable[[int], Any] | None:
    """A ``start -> response`` opener for :func:`tats.io.download.download` when the host needs more
    than one plain GET (Google Drive), else None (Dropbox's ``dl=1`` link redirects to the file)."""
    file_id = drive_id(share_url)
    if file_id is None:
        return None
    return lambda start: open_drive(file_id, start, timeout)

