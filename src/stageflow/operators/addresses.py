"""Which network addresses are public, and HTTP requests that no redirect takes from a
public address to a non-public one.

Server-side request forgery: a spec accepted over the API may make the workers open
URLs. ``operations.access`` refuses, when a non-admin's spec or run is accepted, a URL
whose host is not public (loopback, private, link-local, reserved, multicast,
unspecified: the server's own services, cloud metadata at 169.254.169.254). A public
URL could still answer with a redirect to such an address, and urllib follows
redirects. ``urlopen`` here is ``urllib.request.urlopen`` whose redirects are checked
at each hop: one from a public host to a non-public one is refused (``URLError``
saying so). Every http(s) request stageflow makes for a task (the http sensor,
``data_ingestion``'s sources, webhooks) goes through it, and fsspec's ``http(s)://``
filesystem (a file sensor, an object's version for freshness and cache keys, an
object schedule on an http URL) gets ``checked_redirects``, an aiohttp trace that
makes the same check before each redirect is followed. A redirect between two
non-public hosts (a service on a private network sending to another) is followed, as
is any redirect of an admin's or the CLI's URL that stays where it started.

State: none (each hop resolves the hosts it compares).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

__all__ = ["address_kind", "checked_redirects", "host_kind", "redirect_problem", "urlopen"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_kind(address: Address) -> str | None:
    """What kind of non-public address ``address`` is (``None``: a public one)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        address = mapped
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


def host_kind(host: str, port: int) -> tuple[str, str] | None:
    """``(address, kind)`` of the first non-public address ``host`` resolves to (a
    literal IP is read as it is), ``("", "unresolved")`` when it does not resolve,
    ``None`` when every address is public."""
    try:
        addresses: list[Address] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return "", "unresolved"
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    for address in addresses:
        kind = address_kind(address)
        if kind is not None:
            return str(address), kind
    return None


def redirect_problem(from_url: str, to_url: str) -> str | None:
    """Why a redirect from ``from_url`` to ``to_url`` is refused (from a public host to
    a non-public one), else ``None``."""
    to = _host_port(to_url)
    if to is None:
        return None  # not http(s): urllib refuses it itself
    landing = host_kind(*to)
    if landing is None or landing[1] == "unresolved":
        return None  # public (or nothing to reach)
    start = _host_port(from_url)
    if start is None or host_kind(*start) is not None:
        return None  # it started at a non-public host: not a way in
    address, kind = landing
    shown = to[0] if address == to[0] else f"{to[0]} ({address})"
    article = "an" if kind[0] in "aeiou" else "a"
    return (
        f"{_origin(from_url)} redirected to {shown}, {article} {kind} address: refused (a "
        "public URL may not lead to the server's own network)"
    )


def urlopen(request: urllib.request.Request, timeout: float) -> Any:
    """``urllib.request.urlopen(request, timeout=timeout)``, each redirect checked
    (``redirect_problem``): a refused one is a ``URLError`` saying why."""
    return _OPENER.open(request, timeout=timeout)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        why = redirect_problem(req.full_url, newurl)
        if why is not None:
            raise urllib.error.URLError(why)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirects)

_trace: Any = None  # the one aiohttp.TraceConfig (checked_redirects), made on first use
_trace_lock = threading.Lock()


def checked_redirects() -> Any:
    """An ``aiohttp.TraceConfig`` (for a session's ``trace_configs``) that raises
    ``aiohttp.ClientError`` saying why before a refused redirect is followed
    (``redirect_problem``). One per process: fsspec keys its cached filesystems by
    their options, so the same object keeps one filesystem per protocol."""
    global _trace
    with _trace_lock:
        if _trace is None:
            import aiohttp  # fsspec's http filesystem needs it: only for http URLs

            async def on_redirect(session: Any, context: Any, params: Any) -> None:
                location = params.response.headers.get("Location")
                if location:
                    target = urljoin(str(params.url), location)
                    why = redirect_problem(str(params.url), target)
                    if why is not None:
                        raise aiohttp.ClientError(why)

            trace = aiohttp.TraceConfig()
            trace.on_request_redirect.append(on_redirect)
            _trace = trace
        return _trace


def _host_port(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: never its path or query (credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
