"""Keep credentials out of what is shown or logged: the user info of a URL (``http://user:password@host``).

``MLFLOW_TRACKING_URI`` (or any service URL) may carry a password (a server
behind basic auth). The UI shows those URLs, the inference service reports the
tracking URI in /health and its log, and MLflow's errors quote the URL they
failed on in full: both services pass them through here.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# ``scheme://user:password@`` (or ``scheme://user@``) of any URL in a text, up to the *last* ``@`` before the
# path: a password may hold a raw ``@`` (``http://user:p@ss@host``), which HTTP clients accept.
_URL_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#]*@")
MASK = "***"


def public_url(url: str) -> str:
    """``url`` without its user info: what a page may show or link to."""
    return _URL_USER_INFO.sub(r"\g<scheme>", url)


def redact(text: str, url: str | None = None) -> str:
    """``text`` without the user info of any URL in it, nor ``url``'s ``user:password`` anywhere else.

    An error may quote the credentials outside a URL, or percent-decoded (a
    password with ``@`` or ``/`` is written ``%40``, ``%2F`` in the URI): those
    are masked. A user name alone is not: it is no secret, and a short one would
    mask ordinary words.
    """
    if url is not None:
        user_info = urlsplit(url).netloc.rpartition("@")[0]
        if ":" in user_info:
            # Longest first: a user info that contains the other one is masked whole.
            for secret in sorted({user_info, unquote(user_info)}, key=len, reverse=True):
                text = text.replace(f"{secret}@", "").replace(secret, MASK)
    return public_url(text)
