"""``operators.addresses``: which addresses are public, and redirects checked at each
hop: a public URL redirected to the server's own network is refused (server-side
request forgery through a redirect); other redirects are followed, over real local
HTTP servers, by urllib and by fsspec's http filesystem (aiohttp). Literal IPs only,
so no case needs DNS."""

from __future__ import annotations

import ipaddress
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

import pytest

from stageflow.errors import ObjectStorageError
from stageflow.operators import addresses, object_storage
from stageflow.operators.addresses import (
    _CheckedRedirects,
    address_kind,
    host_kind,
    redirect_problem,
    urlopen,
)

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        pytest.param("127.0.0.1", "loopback", id="loopback"),
        pytest.param("::1", "loopback", id="v6-loopback"),
        pytest.param("::ffff:127.0.0.1", "loopback", id="v4-mapped"),
        pytest.param("10.1.2.3", "private", id="private"),
        pytest.param("169.254.169.254", "link-local", id="cloud-metadata"),
        pytest.param("0.0.0.0", "unspecified", id="unspecified"),
        pytest.param("224.0.0.1", "multicast", id="multicast"),
        pytest.param(PUBLIC, None, id="public"),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_a_host_that_does_not_resolve_says_so() -> None:
    assert host_kind("no-such-host.invalid", 80) == ("", "unresolved")


@pytest.mark.parametrize(
    ("start", "target", "refused"),
    [
        pytest.param(f"http://{PUBLIC}/a", "http://127.0.0.1:8080/admin", True, id="to-loopback"),
        pytest.param(f"https://{PUBLIC}/a", "http://169.254.169.254/meta", True, id="to-metadata"),
        pytest.param(f"http://{PUBLIC}/a", "http://10.0.0.7/x", True, id="to-private"),
        pytest.param(f"http://{PUBLIC}/a", "http://1.1.1.1/b", False, id="public-to-public"),
        pytest.param("http://127.0.0.1:1/a", "http://127.0.0.1:2/b", False, id="local-to-local"),
        pytest.param("http://10.0.0.7/a", "http://127.0.0.1/b", False, id="private-to-loopback"),
        pytest.param(f"http://{PUBLIC}/a", "ftp://127.0.0.1/b", False, id="not-http"),
    ],
)
def test_which_redirects_are_refused(start: str, target: str, refused: bool) -> None:
    assert (redirect_problem(start, target) is not None) is refused


def test_the_refusal_names_the_origin_not_its_path_or_query() -> None:
    why = redirect_problem(f"http://user:pw@{PUBLIC}/feed?token=s3cret", "http://127.0.0.1:9/x")
    assert why == (
        f"http://{PUBLIC} redirected to 127.0.0.1, a loopback address: refused (a public "
        "URL may not lead to the server's own network)"
    )


def test_the_handler_raises_the_refusal_and_passes_other_redirects_on() -> None:
    handler = _CheckedRedirects()
    request = urllib.request.Request(f"http://{PUBLIC}/start")
    with pytest.raises(urllib.error.URLError) as caught:
        handler.redirect_request(
            request,
            None,
            302,
            "Found",
            HTTPMessage(),
            "http://127.0.0.1:9/x",  # type: ignore[arg-type]  # no body is read
        )
    assert "a loopback address: refused" in str(caught.value.reason)
    onward = handler.redirect_request(
        request,
        None,
        302,
        "Found",
        HTTPMessage(),
        "http://1.1.1.1/next",  # type: ignore[arg-type]  # no body is read
    )
    assert onward is not None and onward.full_url == "http://1.1.1.1/next"


class Servers(NamedTuple):
    """Two local HTTP servers: ``start`` (on ``port``) redirects every GET to ``target``,
    which answers ``landed`` and notes each path it is asked for in ``landed``."""

    start: str
    port: int
    target: str
    landed: list[str]


@pytest.fixture
def servers() -> Iterator[Servers]:
    landed: list[str] = []

    class Landing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            landed.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"landed")

        def log_message(self, *args: Any) -> None:
            pass

    landing = ThreadingHTTPServer(("127.0.0.1", 0), Landing)
    target = f"http://127.0.0.1:{landing.server_address[1]}/inside"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    redirect = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (landing, redirect):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(redirect.server_address[1])
    try:
        yield Servers(f"http://127.0.0.1:{port}/start", port, target, landed)
    finally:
        for server in (landing, redirect):
            server.shutdown()
            server.server_close()


def test_a_redirect_within_the_local_network_is_followed(servers: Servers) -> None:
    with urlopen(urllib.request.Request(servers.start), timeout=5) as answer:
        assert (answer.status, answer.geturl(), answer.read()) == (200, servers.target, b"landed")
    assert servers.landed == ["/inside"]


# -- fsspec's http filesystem: the same check, by an aiohttp trace ---------------------


def test_fsspec_follows_a_redirect_within_the_local_network(servers: Servers) -> None:
    assert object_storage.read_bytes(servers.start) == b"landed"
    assert servers.landed == ["/inside"]


def test_fsspec_refuses_a_public_hosts_redirect_to_the_local_network(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first server stands in for a public host (no public host can be reached
    here): ``host_kind`` calls its port public; the landing one stays loopback."""
    real = addresses.host_kind

    def kind(host: str, at: int) -> tuple[str, str] | None:
        return None if at == servers.port else real(host, at)

    monkeypatch.setattr(addresses, "host_kind", kind)

    with pytest.raises(ObjectStorageError) as caught:
        object_storage.read_bytes(servers.start)

    assert "redirected to 127.0.0.1, a loopback address: refused" in str(caught.value)
    assert servers.landed == []  # the request never reached the inside


def test_only_http_urls_get_the_trace() -> None:
    options = object_storage.storage_options("https://example.com/data.csv")
    assert options == {"client_kwargs": {"trace_configs": [addresses.checked_redirects()]}}
    assert object_storage.storage_options("HTTP://example.com/x") == options
    assert object_storage.storage_options("memory://bucket/x") == {}
