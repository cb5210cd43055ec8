"""Response headers every answer carries: no framing, no sniffing, no leaking referrers."""

from __future__ import annotations

# Pages load only our own stylesheet and scripts (WebAuthn needs one); nothing inline runs.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
# No form-action: browsers apply it to the redirects after a form post, and sign-in forms
# end with a redirect to the client's registered redirect_uri on another origin.


HSTS = "max-age=31536000; includeSubDomains"


def every_answer_headers(https: bool) -> list[tuple[str, str]]:
    """What any answer carries, a page or not (also the token fast path's: oauth/fast_path.py)."""
    headers = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]
    return headers + [("Strict-Transport-Security", HSTS)] if https else headers


def register_security_headers(app, https: bool) -> None:
    common = every_answer_headers(https)
    page = common + [("Content-Security-Policy", PAGE_CSP),
                     ("X-Frame-Options", "DENY"),  # for browsers without frame-ancestors
                     ("Cache-Control", "no-store")]

    @app.after_request
    def add_headers(response):
        """Each header the view did not set itself; the names read once (Werkzeug's setdefault
        scans the whole list three times per header)."""
        headers = response.headers
        present = {name.lower() for name in headers.keys()}
        for name, value in page if response.mimetype == "text/html" else common:
            if name.lower() not in present:
                headers.add(name, value)
        return response
