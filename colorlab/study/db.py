"""The study's database: one schema and one code path (SQLAlchemy 2 Core) for SQLite and PostgreSQL.

SQLite (the default, ``studies/NAME/study.db``) runs in write-ahead-log mode with ``synchronous=FULL``
and takes its write lock at BEGIN (``BEGIN IMMEDIATE``), so concurrent answers queue instead of
failing, and a committed answer survives the server being killed. PostgreSQL (``db=postgresql://...``)
lets several server processes share one study; the participant's row is locked (``FOR UPDATE``)
while an answer is checked and stored, and a unique (participant, position) index makes a
duplicated answer impossible whatever the timing.

Tables (one database can hold several studies):
  studies       name, protocol (2afc | single), settings (JSON), created_at, closed_at, secret (random: keys
                the per-session dither of the images and the hashes of client addresses; never shown)
  methods       the checkpoints compared, plus the "real vs real" control (is_control)
  images        held-out image index -> file stem; the method's image is images/<method>/<stem>.png
  participants  an opaque session id (128 random bits), the method assigned, started/finished, the platform's
                participant id when the link carried one (one session per id), a keyed hash of the client
                address (the cap on new sessions per address; the address itself is not stored)
  trials        each participant's trial list, fixed when the session starts: position, practice, catch,
                image, method, fake_slot (2afc: the side of the non-real image, 0 left 1 right), served_at
                (when the server first sent one of the trial's images)
  answers       one per (participant, position): choice, response_ms and shown_ms (measured by the page),
                server_ms (measured by the server: first image byte sent -> answer received), answered_at
"""

from __future__ import annotations

import datetime as dt
import json
import re

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

metadata = sa.MetaData()

studies = sa.Table(
    "studies", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("protocol", sa.String(16), nullable=False),
    sa.Column("settings", sa.Text, nullable=False),  # JSON: display_ms, practice, trials, ...
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("secret", sa.String(64), nullable=False),
)
methods = sa.Table(
    "methods", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("directory", sa.String(128), nullable=False),  # images/<directory>/
    sa.Column("checkpoint", sa.Text),
    sa.Column("is_control", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("study_id", "name"),
)
images = sa.Table(
    "images", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("stem", sa.String(64), nullable=False),
    sa.UniqueConstraint("study_id", "idx"),
)
participants = sa.Table(
    "participants", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("session", sa.String(32), nullable=False, unique=True),
    sa.Column("method_id", sa.ForeignKey("methods.id"), nullable=False),
    sa.Column("n_trials", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("external_id", sa.String(64)),
    sa.Column("client", sa.String(32), index=True),
    sa.UniqueConstraint("study_id", "external_id"),
)
trials = sa.Table(
    "trials", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("participant_id", sa.ForeignKey("participants.id"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("practice", sa.Boolean, nullable=False),
    sa.Column("image_id", sa.ForeignKey("images.id"), nullable=False),
    sa.Column("method_id", sa.ForeignKey("methods.id"), nullable=False),
    sa.Column("fake_slot", sa.Integer, nullable=False),
    sa.Column("catch", sa.Boolean, nullable=False, default=False),
    sa.Column("served_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("participant_id", "position"),
)
answers = sa.Table(
    "answers", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("participant_id", sa.ForeignKey("participants.id"), nullable=False),
    sa.Column("trial_id", sa.ForeignKey("trials.id"), nullable=False, unique=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("choice", sa.Integer, nullable=False),
    sa.Column("response_ms", sa.Float, nullable=False),
    sa.Column("shown_ms", sa.Float),
    sa.Column("server_ms", sa.Float),
    sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("participant_id", "position"),
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def normalise_url(url: str) -> str:
    """postgresql://... means the psycopg 3 driver (the one colorlab installs), not psycopg2."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def redacted(url: str) -> str:
    return make_url(normalise_url(url)).render_as_string(hide_password=True)


def connect(url: str, create: bool = False) -> Engine:
    """An engine for ``url`` (any SQLAlchemy URL), the tables created when ``create``.
    ValueError with the reason when the database cannot be reached."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as e:
        raise ValueError(f"db={url!r} is not a database URL (e.g. sqlite:///study.db or "
                         "postgresql://user:password@host/dbname)") from e
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, record):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=60000"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _write_lock_at_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    try:
        with engine.connect():
            pass
        if create:
            metadata.create_all(engine)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
        raise ValueError(f"cannot open the study database {redacted(url)}: {e.orig}") from e
    return engine


def study_row(conn, name: str):
    return conn.execute(sa.select(studies).where(studies.c.name == name)).one_or_none()


def settings_of(study) -> dict:
    return json.loads(study.settings)
