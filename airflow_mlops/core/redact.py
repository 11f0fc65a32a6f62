"""Keep credentials out of every message, log line, tag and XCom value.

URLs may carry credentials in their userinfo (``https://ci:TOKEN@github.com/org/repo``); anything this
package prints, logs, tags or returns goes through :func:`redact` first.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user[:password]@host  (userinfo ends at the last '@' before the host part)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@'\"]+)@")


def redact(text: object) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``.

    :param text: a message, URL, path or anything printable.
    """
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", str(text))


def url_secrets(text: object) -> list[str]:
    """The secrets found in the userinfo of URLs in ``text`` (the password, or a lone token), to register
    with a secrets masker.

    :param text: a URL or any text holding URLs.
    """
    found: list[str] = []
    for m in _USERINFO.finditer(str(text)):
        user, _, password = m.group("userinfo").partition(":")
        found.append(password or user)
    return [s for s in found if s]


def without_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (a probe that needs no credentials; urllib would read the
    userinfo as part of the host name).

    :param url: any URL; one without userinfo comes back unchanged.
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
