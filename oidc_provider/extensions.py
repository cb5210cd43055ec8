"""Extensions created once and bound to the app in create_app()."""

from flask.sessions import SecureCookieSessionInterface
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


# Objects keep their loaded values after a commit: a request reads what it loaded or wrote,
# instead of re-SELECTing every row it touches after each commit (sessions are per request).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
csrf = CSRFProtect()


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session (it holds only the CSRF secret), with its serializer built
    once instead of at every request, API calls included."""

    def get_signing_serializer(self, app):
        serializer = app.extensions.get("op.session_serializer")
        if serializer is None:
            serializer = app.extensions["op.session_serializer"] = super().get_signing_serializer(app)
        return serializer
