"""Send one webhook POST safely: http(s) only, no redirects, no private targets by default.

The host is resolved once and the connection goes to the address that was checked, so a
name that resolves to a public address for the check and a private one for the connection
(DNS rebinding) cannot reach the inside.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 10.0
MAX_ERROR = 500


class Refused(Exception):
    """The target may not be called."""


def post(url: str, headers: dict[str, str], body: bytes, allow_private: bool) -> str | None:
    """POST the body; return None on a 2xx answer, otherwise what went wrong."""
    try:
        status, reason, location = _post(url, headers, body, allow_private)
    except Refused as error:
        return f"refused: {error}"[:MAX_ERROR]
    except (OSError, http.client.HTTPException, ssl.SSLError) as error:
        return f"{type(error).__name__}: {error}"[:MAX_ERROR]
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed (to {location})"[:MAX_ERROR]
    return f"HTTP {status} {reason}"[:MAX_ERROR]


def resolve(url: str, allow_private: bool) -> tuple[str, int, str]:
    """The checked address, port and host name to connect to for this URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("only http:// and https:// URLs with a host are called")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise Refused(f"{parts.hostname} has no address")
    if not allow_private:
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise Refused(f"{parts.hostname} resolves to a non-public address ({private[0]})")
    return addresses[0], port, parts.hostname


def is_public(address: str) -> bool:
    """True for a globally routable unicast address (not loopback, private, link-local...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _post(
    url: str, headers: dict[str, str], body: bytes, allow_private: bool
) -> tuple[int, str, str]:
    address, port, host = resolve(url, allow_private)
    parts = urlsplit(url)
    sock = socket.create_connection((address, port), timeout=TIMEOUT_SECONDS)
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
        connection.sock = sock  # already connected to the checked address
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = 443 if parts.scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host
        netloc = name if port == default else f"{name}:{port}"
        connection.request("POST", path, body=body, headers={**headers, "Host": netloc})
        response = connection.getresponse()
        response.read(64 * 1024)
        return response.status, response.reason, response.getheader("Location", "")
    finally:
        sock.close()
