"""A resource server that asks for step-up (RFC 9470) when a request needs more.

GET /orders needs the scope orders:read and any login; POST /payments needs a login
with acr mfa no older than five minutes. A token that falls short gets
401 insufficient_user_authentication naming acr_values and max_age; the client sends
the user back to the provider with those, and the provider asks only for what is missing.

    ISSUER=http://127.0.0.1:5000 AUDIENCE=https://api.example.com python -m examples.resource_server
"""

from __future__ import annotations

import os

from flask import Flask, g, jsonify, request

from oidc_provider.resource_server import ResourceServer

PAYMENT_MAX_AGE = 300  # seconds since the user last proved who they are


def create_app(issuer: str, audience: str, jwks_uri: str | None = None) -> Flask:
    app = Flask(__name__)
    rs = ResourceServer(issuer, audience, jwks_uri=jwks_uri)
    app.extensions["resource_server"] = rs

    @app.get("/orders")
    @rs.require("orders:read")
    def orders():
        return jsonify({"sub": g.access_token["sub"], "orders": []})

    @app.post("/payments")
    @rs.require(acr_values=["mfa"], max_age=PAYMENT_MAX_AGE)
    def payments():
        payment = request.get_json(silent=True) or {}
        return jsonify({"sub": g.access_token["sub"], "status": "accepted", "amount": payment.get("amount")})

    return app


if __name__ == "__main__":
    app = create_app(os.environ.get("ISSUER", "http://127.0.0.1:5000"),
                     os.environ.get("AUDIENCE", "https://api.example.com"))
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5001")))
