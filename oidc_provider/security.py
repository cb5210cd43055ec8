"""Response headers every answer carries: no framing, no sniffing, no leaking referrers."""

from __future__ import annotations

# Pages load only our own stylesheet and scripts (WebAuthn needs one); nothing inline runs.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
# No form-action: browsers apply it to the redirects after a form post, and sign-in forms
# end with a redirect to the client's registered redirect_uri on another origin.


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
