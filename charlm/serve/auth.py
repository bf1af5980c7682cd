"""The API key: `Authorization: Bearer KEY` on every API route, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from charlm.serve.errors import APIError

ENV_KEY = "CHARLM_API_KEY"


class KeyCheck:
    """Checks a request's Authorization header against the key (none: every request passes)."""

    def __init__(self, key: str | None) -> None:
        # Digests of equal length: compare_digest's time then depends on neither the key's length nor its content.
        self._digest = _digest(key) if key else None

    @property
    def required(self) -> bool:
        return self._digest is not None

    def check(self, header: str | None) -> None:
        """Raise a 401 `APIError` unless `header` is `Bearer <the key>`."""
        if self._digest is None:
            return
        scheme, _, given = (header or "").partition(" ")
        ok = hmac.compare_digest(_digest(given.strip()), self._digest)
        if scheme.lower() != "bearer" or not ok:
            what = "no API key was given" if not header else "the API key is not this server's"
            raise APIError(
                401,
                f"{what}; send the header 'Authorization: Bearer KEY' with the key the server was started with",
                code="invalid_api_key",
            )


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
