"""Google Drive and Dropbox as the release's links meet them, imitated on a :class:`LocalServer`.

:class:`FakeDrive` answers ``/uc?export=download&id=ID`` the ways Drive does (``flow``):

- ``"direct"``: the file itself (small files);
- ``"form"``: today's "can't scan this file for viruses" page, whose ``download-form`` (action on the
  user-content host, here ``/download`` on the same server) carries hidden ``id``, ``export``,
  ``confirm`` and ``uuid`` inputs; only that exact GET answers the file;
- ``"cookie"``: older Drive: the page sets a ``download_warning_*`` cookie whose value is the token;
  only ``/uc?...&confirm=TOKEN`` with that cookie answers the file;
- ``"link"``: older pages carrying the token in a ``confirm=`` link (no cookie);
- ``"quota"``: a "too many users" page with no form and no token;
- ``"denied"``: HTTP 403 with an HTML page (a file that is not shared).

:class:`FakeDropbox` answers a share path with an HTML preview for ``dl=0`` and, for ``dl=1``, a 302
to a content path that serves the file (``Range`` honoured). Both count the file's responses
(``file_responses``) and can cut the first one off after N bytes (``cut_after``).
"""

from __future__ import annotations

import urllib.parse

from tests.local_http import LocalServer, Request, Route

TOKEN = "Zx9_q-T0k3n"
UUID = "5f1b0c2e-0000-4000-8000-123456789abc"


def html(title: str, body: str = "") -> Route:
    """A page as the hosts answer it: whole whatever the ``Range`` (as gdown's resume relies on)."""
    page = f"<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"
    return Route(page.encode(), "text/html; charset=utf-8", ranges=False)


class _Host:
    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.file_responses: list[tuple[str, str | None]] = []  # (key, Range header or None)

    def _file(self, key: str, req: Request, name: str) -> Route:
        cut = self.cut.pop(key, None)  # only the first response is cut off
        self.file_responses.append((key, req.headers.get("Range")))
        return Route(self.files[key], cut_after=cut,
                     headers={"Content-Disposition": f'attachment; filename="{name}"'})


class FakeDrive(_Host):
    def __init__(self, server: LocalServer, flow: str = "form") -> None:
        super().__init__(server)
        self.flow = flow
        server.add("/uc", self._uc)
        server.add("/download", self._usercontent)

    @property
    def base(self) -> str:
        """What ``$TATS_GDRIVE_URL`` is set to."""
        return self.server.url("")

    def add(self, file_id: str, body: bytes, cut_after: int | None = None) -> None:
        self.files[file_id] = body
        if cut_after is not None:
            self.cut[file_id] = cut_after

    def _uc(self, req: Request) -> Route:
        file_id = req.query.get("id", "")
        if file_id not in self.files or req.query.get("export") != "download":
            return Route(b"<html><title>Google Drive - 404</title></html>", "text/html", status=404)
        cookie = f"download_warning_13058876669334088843_{file_id}"
        if self.flow == "direct":
            return self._file(file_id, req, "file.ckpt")
        if self.flow == "cookie":
            if req.query.get("confirm") == TOKEN and req.cookies.get(cookie) == TOKEN:
                return self._file(file_id, req, "file.ckpt")
            page = html("Google Drive - Virus scan warning", "<p>file.ckpt is too large for Google Drive to "
                        "scan for viruses. Would you still like to download this file?</p>")
            page.headers["Set-Cookie"] = f"{cookie}={TOKEN}; Path=/; HttpOnly"
            return page
        if self.flow == "link":
            if req.query.get("confirm") == TOKEN:
                return self._file(file_id, req, "file.ckpt")
            link = "/uc?" + urllib.parse.urlencode({"export": "download", "confirm": TOKEN, "id": file_id})
            return html("Google Drive - Virus scan warning",
                        f'<a id="uc-download-link" href="{link.replace("&", "&amp;")}">Download anyway</a>')
        if self.flow == "form":
            fields = {"id": file_id, "export": "download", "confirm": "t", "uuid": UUID}
            inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
            return html("Google Drive - Virus scan warning",
                        "<p>Google Drive can't scan this file for viruses.</p>"
                        f'<form id="download-form" action="{self.server.url("/download")}" method="get">'
                        '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                        f"{inputs}</form>")
        if self.flow == "quota":
            return html("Google Drive - Quota exceeded",
                        "<p>Too many users have viewed or downloaded this file recently. Please try "
                        "accessing the file again later.</p>")
        if self.flow == "denied":
            page = html("Google Drive - Access denied", "<p>You need access</p>")
            page.status = 403
            return page
        raise ValueError(f"unknown flow {self.flow!r}")

    def _usercontent(self, req: Request) -> Route:
        q = req.query
        file_id = q.get("id", "")
        if (file_id in self.files and q.get("export") == "download" and q.get("confirm") == "t"
                and q.get("uuid") == UUID):
            return self._file(file_id, req, "file.ckpt")
        return Route(b"<html><title>Error 400 (Bad Request)</title></html>", "text/html", status=400)


class FakeDropbox(_Host):
    def __init__(self, server: LocalServer) -> None:
        super().__init__(server)
        self.pages: dict[str, Route] = {}

    @property
    def base(self) -> str:
        """What ``$TATS_DROPBOX_URL`` is set to."""
        return self.server.url("")

    def add(
        self, share_url: str, body: bytes, cut_after: int | None = None, page: Route | None = None
    ) -> None:
        """Serve ``body`` for the share link ``share_url`` (its path, as sent); ``page``: answer ``dl=1``
        with that page instead (an expired link)."""
        path = urllib.parse.urlsplit(share_url).path
        self.files[path] = body
        if cut_after is not None:
            self.cut[path] = cut_after
        if page is not None:
            self.pages[path] = page
        self.server.add(path, lambda req: self._share(path, req))
        self.server.add("/dl" + path, lambda req: self._file(path, req, path.rsplit("/", 1)[-1]))

    def _share(self, path: str, req: Request) -> Route:
        if req.query.get("dl") != "1":
            return html("Dropbox - preview", "<p>Download</p>")
        if path in self.pages:
            return self.pages[path]
        return Route(b"", status=302, headers={"Location": self.server.url("/dl" + path)})
