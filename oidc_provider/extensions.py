"""Extensions created once and bound to the app in create_app()."""

import json

from flask.sessions import SecureCookieSessionInterface
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import BigInteger, Integer, bindparam, event
from sqlalchemy.exc import DBAPIError
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
    queued = session.info.pop(_AT_COMMIT, None)
    if not queued:
        return
    writes = [(_update_by_id(key[0]), [{**rows, "row_id": key[1]}]) if isinstance(key, tuple) else (key, rows)
              for key, rows in queued.items()]  # in the order first queued
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        write_pipelined(connection, writes)
        return
    for statement, rows in writes:
        session.execute(statement, rows if len(rows) > 1 else rows[0])


def write_pipelined(connection, writes: list) -> None:
    """PostgreSQL: the writes sent in one pipeline on the transaction's psycopg connection, one
    round trip for all of them where each would be one, and without SQLAlchemy's work per
    statement (a sign-in's last login, lockout reset, device and audit rows: about 0.5 ms less
    CPU per sign-in). A failure is SQLAlchemy's error, as if it had sent them."""
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    try:
        with driver.pipeline():
            cursor = driver.cursor()
            for statement, rows in writes:
                cursor.executemany(driver_sql(statement, tuple(rows[0]), dialect), [driver_params(row) for row in rows])
    except dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(None, None, error, dialect.loaded_dbapi.Error, dialect=dialect) from error


_UPDATES_BY_ID: dict = {}


def _update_by_id(table):
    """UPDATE of one row by id, its columns set from the parameters (built once per table)."""
    if table not in _UPDATES_BY_ID:
        _UPDATES_BY_ID[table] = table.update().where(table.c.id == bindparam("row_id"))
    return _UPDATES_BY_ID[table]


_DRIVER_SQL: dict = {}


def driver_sql(statement, names: tuple[str, ...], dialect) -> str:
    """The statement as the driver's SQL, compiled once per statement, parameter names and
    dialect; as on SQLAlchemy's Connection, the columns an INSERT...VALUES or an UPDATE writes
    can be given as parameters."""
    key = (statement, names, dialect.name)
    if key not in _DRIVER_SQL:
        columns = list(names) if statement.is_update or statement.is_insert and statement.select is None else None
        _DRIVER_SQL[key] = str(statement.compile(dialect=dialect, column_keys=columns))
    return _DRIVER_SQL[key]


def driver_params(params: dict) -> dict:
    """Parameters as the driver takes them: a dict or a list, a JSON column's value, as JSON text."""
    return {name: json.dumps(value) if isinstance(value, (dict, list)) else value for name, value in params.items()}


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
