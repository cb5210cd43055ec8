"""Extensions created once and bound to the app in create_app()."""

from flask.sessions import SecureCookieSessionInterface
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import BigInteger, Integer, event
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


# Objects keep their loaded values after a commit: a request reads what it loaded or wrote,
# instead of re-SELECTing every row it touches after each commit (sessions are per request).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
csrf = CSRFProtect()
# Row ids of tables that grow with every refresh or sign-in, and Unix times that pass 2^31 in
# January 2038: 64-bit on PostgreSQL. SQLite's INTEGER already is, and only a column declared
# INTEGER PRIMARY KEY numbers its rows itself.
Int64 = BigInteger().with_variant(Integer, "sqlite")
_AT_COMMIT = "op.at_commit"


def write_at_commit(statement, params: dict) -> None:
    """Run a write as part of the session's next commit, not now: a request's records (audit
    rows, a lockout reset, a last login) share one transaction, and rows of one statement one
    INSERT. Nothing is held open meanwhile: SQLite locks the whole file from a transaction's
    first write until its commit, and the SQL store writes on connections of its own."""
    db.session.info.setdefault(_AT_COMMIT, {}).setdefault(statement, []).append(params)


def update_at_commit(table, row_id, **values) -> None:
    """Set columns of one row with the session's next commit (as write_at_commit); what several
    callers set on one row, e.g. a user's lockout reset and last login, is one UPDATE."""
    db.session.info.setdefault(_AT_COMMIT, {}).setdefault((table, row_id), {}).update(values)


def commit_pending() -> None:
    """Commit when there is something to: queued writes or a transaction under way (an empty
    commit still costs the session's bookkeeping, on every request that passes by)."""
    session = db.session()
    if session.info.get(_AT_COMMIT) or session.in_transaction():
        session.commit()


def single_statement_transaction() -> None:
    """The session's next statement, committed by the next commit, is sent autocommitted: one
    round trip where BEGIN, the statement and COMMIT are three. Only when nothing else is under
    way or queued, which then would not be one transaction with it."""
    session = db.session()
    if not session.in_transaction() and not session.info.get(_AT_COMMIT):
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@event.listens_for(db.session, "before_commit")
def _write_queued(session) -> None:
    for key, queued in session.info.pop(_AT_COMMIT, {}).items():  # in the order first queued
        if isinstance(key, tuple):
            table, row_id = key
            session.execute(table.update().where(table.c.id == row_id).values(queued))
        else:
            session.execute(key, queued if len(queued) > 1 else queued[0])


@event.listens_for(db.session, "after_soft_rollback")
def _forget_queued(session, _previous) -> None:
    session.info.pop(_AT_COMMIT, None)


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session (it holds only the CSRF secret), with its serializer built
    once instead of at every request, API calls included."""

    def get_signing_serializer(self, app):
        serializer = app.extensions.get("op.session_serializer")
        if serializer is None:
            serializer = app.extensions["op.session_serializer"] = super().get_signing_serializer(app)
        return serializer
