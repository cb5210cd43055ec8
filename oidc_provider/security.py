"""Response headers every answer carries: no framing, no sniffing, no leaking referrers."""

from __future__ import annotations

# Pages load only our stylesheet: no scripts at all, so no inline script can run either.
PAGE_CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"


def register_security_headers(app, https: bool) -> None:
    @app.after_request
    def add_headers(response):
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html":
            headers.setdefault("Content-Security-Policy", PAGE_CSP)
            headers.setdefault("X-Frame-Options", "DENY")  # for browsers without frame-ancestors
            headers.setdefault("Cache-Control", "no-store")
        if https:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response
