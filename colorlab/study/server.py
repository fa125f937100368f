"""The participants' page and its JSON API (Starlette; run by ``python -m colorlab.study serve``).

API (every request carries the access token, when the study has one, as ``X-Study-Token`` or ``?token=``):
  POST /api/session {[pid]}               a new participant: {session, ...state}; with a platform's
                                          participant id (the page passes ?PROLIFIC_PID= or ?pid=), that
                                          id's session, new or existing (one session per id)
  GET  /api/session/{session}             the state: protocol, display_ms, total, practice, answered,
                                          done, closed, completion_code (once done), and the next trial
                                          {id, position, practice, images}
  POST /api/answer {session, trial, choice, response_ms, shown_ms}
                                          stores the answer (one transaction) with the server's own time
                                          since the trial's first image byte, and returns the new state,
                                          with {correct, truth} after a practice trial (truth: the
                                          right choice)
  GET  /api/image/{session}/{trial}/{slot}  a trial's image (only the participant's own trials, up to
                                          the next one); the URL names no method and no side

What the images tell a browser: nothing but their pixels. Every image of a study is an uncompressed
PNG written the same way (so the byte length depends on its size only: real and fake are as long),
with an imperceptible dither of +-1 level per channel drawn from the study's secret and the
(session, trial, slot), so that no two sessions receive the same bytes for the same photo; and
``Cache-Control: no-store`` with no validator (ETag, Last-Modified) on all of them.

Refusals (nothing stored): 400 malformed, 403 wrong token or a trial that is not the participant's,
404 unknown session or page, 409 a trial answered already or out of turn, or the study closed (the
state says ``closed`` too), 429 too many new sessions from one address within an hour; 413/415 from
colorlab.web. Stored about a participant: the answers and times, the platform's id when the link gave
one, and a keyed hash of the client address (for the cap); no address, user agent or name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import struct
import zlib
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from colorlab.study import db
from colorlab.study.design import correct, shown_images, trial_list
from colorlab.web import (
    DEFAULT_HOSTS,
    AllowedHosts,
    HTTPError,
    RequestLimit,
    error_response,
    json_error_handlers,
    read_json,
)

MAX_JSON_BYTES = 4096  # an answer is ~150 bytes
MAX_REQUESTS = 256  # requests in progress at once (503 beyond); connections are capped by colorlab.web
SESSIONS_PER_HOUR = 4  # new sessions per client address and hour (a reload resumes; a new browser starts anew)
SESSION_PATTERN = re.compile(r"[0-9a-f]{32}")
ID_PATTERN = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit accepts '²' and Arabic-Indic digits)
PID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a platform's participant id (Prolific: 24 hex digits)
MAX_ID = 2**62  # trial ids beyond any database's integer


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> an uncompressed PNG (filter 0 on every row, deflate's stored blocks, no optional
    chunk): its length is a function of H and W alone, whatever the pixels."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 0))
            + chunk(b"IEND", b""))


def dithered(rgb: np.ndarray, key: bytes) -> np.ndarray:
    """uint8 (H, W, 3) with -1, 0 or +1 added to every value (clipped to 0..255), drawn from ``key``."""
    rng = np.random.default_rng(np.frombuffer(hashlib.sha256(key).digest(), np.uint32))
    return np.clip(rgb.astype(np.int16) + rng.integers(-1, 2, rgb.shape, dtype=np.int16), 0, 255).astype(np.uint8)


@lru_cache(maxsize=4096)
def stored_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class StudyService:
    """Everything the page does, independent of HTTP; errors are HTTPErrors (status, message).
    ``sessions_per_hour``: new sessions per client address and hour (None: no cap); ``clock``: the time,
    replaceable in tests."""

    def __init__(self, engine: sa.Engine, name: str, directory: Path, sessions_per_hour: int | None = None,
                 clock=db.now):
        self.engine, self.name, self.directory = engine, name, Path(directory)
        self.sessions_per_hour, self.clock = sessions_per_hour, clock
        with engine.connect() as conn:
            study = db.study_row(conn, name)
            if study is None:
                raise ValueError(f"no study named {name!r} in {db.redacted(str(engine.url))}")
            self.study_id, self.protocol, self.settings = study.id, study.protocol, db.settings_of(study)
            self.secret = study.secret.encode()
            rows = conn.execute(sa.select(db.methods).where(db.methods.c.study_id == study.id)).all()
            self.methods = {m.id: m for m in rows}
            self.control_id = next(m.id for m in rows if m.is_control)
            self.stems = dict(conn.execute(sa.select(db.images.c.id, db.images.c.stem)
                                           .where(db.images.c.study_id == study.id)).all())
            self.image_ids = dict(conn.execute(sa.select(db.images.c.idx, db.images.c.id)
                                               .where(db.images.c.study_id == study.id)).all())

    # -- helpers ------------------------------------------------------------------------------
    def _closed(self, conn) -> dt.datetime | None:
        return conn.execute(sa.select(db.studies.c.closed_at).where(db.studies.c.id == self.study_id)).scalar()

    def _check_open(self, conn) -> None:
        closed = self._closed(conn)
        if closed is not None:
            raise HTTPError(409, f"the study {self.name!r} was closed on {closed:%Y-%m-%d %H:%M} UTC; it takes "
                            "no more answers. Thank you!")

    def _participant(self, conn, session, lock: bool = False):
        if not isinstance(session, str) or not SESSION_PATTERN.fullmatch(session):
            raise HTTPError(400, "session must be the 32-character id this server gave you")
        query = sa.select(db.participants).where(db.participants.c.session == session,
                                                 db.participants.c.study_id == self.study_id)
        participant = conn.execute(query.with_for_update() if lock else query).one_or_none()
        if participant is None:
            raise HTTPError(404, "unknown session: start again from the study's page")
        return participant

    def _answered(self, conn, participant_id: int) -> int:
        return conn.execute(sa.select(sa.func.count()).select_from(db.answers)
                            .where(db.answers.c.participant_id == participant_id)).scalar_one()

    def _state(self, conn, participant) -> dict:
        answered = self._answered(conn, participant.id)
        closed = self._closed(conn) is not None
        state = {"session": participant.session, "protocol": self.protocol,
                 "display_ms": self.settings["display_ms"], "total": participant.n_trials,
                 "practice": self.settings["practice"], "answered": answered,
                 "done": answered >= participant.n_trials, "closed": closed, "trial": None}
        if state["done"]:
            state["completion_code"] = self.settings.get("completion_code")
        elif not closed:
            trial = conn.execute(sa.select(db.trials).where(db.trials.c.participant_id == participant.id,
                                                            db.trials.c.position == answered)).one()
            slots = 2 if self.protocol == "2afc" else 1
            state["trial"] = {"id": trial.id, "position": trial.position, "practice": trial.practice,
                              "images": [f"/api/image/{participant.session}/{trial.id}/{s}" for s in range(slots)]}
        return state

    def _client_key(self, address: str) -> str:
        return hmac.new(self.secret, address.encode(), hashlib.sha256).hexdigest()[:32]

    # -- the API ------------------------------------------------------------------------------
    def new_session(self, pid: str | None = None, address: str | None = None) -> dict:
        """A new session, or the existing one of the platform id ``pid``; ``address``: the client's, for the cap."""
        if pid is not None and (not isinstance(pid, str) or not PID_PATTERN.fullmatch(pid)):
            raise HTTPError(400, f"pid must be 1-64 letters, digits, '-' or '_'. Got {pid!r}"[:200])
        with self.engine.begin() as conn:
            self._check_open(conn)
            if pid is not None:
                existing = conn.execute(sa.select(db.participants.c.session).where(
                    db.participants.c.study_id == self.study_id, db.participants.c.external_id == pid)).scalar()
                if existing is not None:  # one session per participant id: the same one again
                    return self._state(conn, self._participant(conn, existing))
            client = None if address is None else self._client_key(address)
            if client is not None and self.sessions_per_hour is not None:
                recent = conn.execute(sa.select(sa.func.count()).select_from(db.participants).where(
                    db.participants.c.study_id == self.study_id, db.participants.c.client == client,
                    db.participants.c.started_at > self.clock() - dt.timedelta(hours=1))).scalar_one()
                if recent >= self.sessions_per_hour:
                    raise HTTPError(429, f"this address started {recent} sessions of this study within the hour, "
                                    f"the most it may ({self.sessions_per_hour}); continue the one you have "
                                    "(reload its page) or try again later")
            counts = dict(conn.execute(
                sa.select(db.participants.c.method_id, sa.func.count())
                .where(db.participants.c.study_id == self.study_id).group_by(db.participants.c.method_id)).all())
            candidates = sorted(m for m in self.methods if m != self.control_id)
            method_id = min(candidates, key=lambda m: (counts.get(m, 0), m))  # balanced assignment
            session = secrets.token_hex(16)
            try:
                with conn.begin_nested():
                    participant_id = conn.execute(db.participants.insert().values(
                        study_id=self.study_id, session=session, method_id=method_id, n_trials=0,
                        started_at=self.clock(), external_id=pid, client=client)).inserted_primary_key[0]
            except sa.exc.IntegrityError:  # the same pid started a session at the same moment: that one
                existing = conn.execute(sa.select(db.participants.c.session).where(
                    db.participants.c.study_id == self.study_id, db.participants.c.external_id == pid)).scalar()
                return self._state(conn, self._participant(conn, existing))
            rows = trial_list(self.settings, method_id, self.control_id, participant_id)
            conn.execute(db.trials.insert(), [
                {"participant_id": participant_id, "position": r["position"], "practice": r["practice"],
                 "catch": r["catch"], "image_id": self.image_ids[r["image_idx"]], "method_id": r["method_id"],
                 "fake_slot": r["fake_slot"]} for r in rows])
            conn.execute(db.participants.update().where(db.participants.c.id == participant_id)
                         .values(n_trials=len(rows)))
            return self._state(conn, self._participant(conn, session))

    def state(self, session: str) -> dict:
        with self.engine.connect() as conn:
            return self._state(conn, self._participant(conn, session))

    def answer(self, request: dict) -> dict:
        unknown = sorted(set(request) - {"session", "trial", "choice", "response_ms", "shown_ms"})
        if unknown:
            raise HTTPError(400, f"unknown field(s) {unknown}; an answer has session, trial, choice, response_ms, "
                            "shown_ms")
        choice, trial_id = request.get("choice"), request.get("trial")
        if type(choice) is not int or choice not in (0, 1):
            what = "the side picked as real: 0 left, 1 right" if self.protocol == "2afc" else "1 real, 0 fake"
            raise HTTPError(400, f"choice must be 0 or 1 ({what}). Got {choice!r}"[:200])
        if type(trial_id) is not int or not 0 < trial_id < MAX_ID:
            raise HTTPError(400, f"trial must be the trial's id (a whole number). Got {trial_id!r}"[:200])
        times = {}
        for key, required in (("response_ms", True), ("shown_ms", False)):
            value = request.get(key)
            if value is None and not required:
                times[key] = None
                continue
            if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= 3_600_000:
                raise HTTPError(400, f"{key} must be a number of milliseconds in 0..3600000. Got {value!r}"[:200])
            times[key] = float(value)
        arrived = self.clock()
        with self.engine.begin() as conn:
            participant = self._participant(conn, request.get("session"), lock=True)
            self._check_open(conn)
            trial = conn.execute(sa.select(db.trials).where(db.trials.c.id == trial_id)).one_or_none()
            if trial is None or trial.participant_id != participant.id:
                raise HTTPError(403, f"trial {trial_id} is not one of this session's trials")
            answered = self._answered(conn, participant.id)
            if trial.position != answered:
                status = "was answered already" if trial.position < answered else "is not the next trial"
                raise HTTPError(409, f"trial {trial_id} (position {trial.position}) {status}; the next is "
                                f"position {answered}")
            served = trial.served_at
            if served is not None and served.tzinfo is None:  # SQLite returns naive datetimes (stored as UTC)
                served = served.replace(tzinfo=dt.timezone.utc)
            server_ms = None if served is None else (arrived - served).total_seconds() * 1000
            try:
                conn.execute(db.answers.insert().values(
                    participant_id=participant.id, trial_id=trial.id, position=trial.position, choice=choice,
                    response_ms=times["response_ms"], shown_ms=times["shown_ms"], server_ms=server_ms,
                    answered_at=arrived))
            except sa.exc.IntegrityError:  # a concurrent request stored this position first
                raise HTTPError(409, f"trial {trial_id} was answered already") from None
            if answered + 1 == participant.n_trials:
                conn.execute(db.participants.update().where(db.participants.c.id == participant.id)
                             .values(finished_at=arrived))
            state = self._state(conn, participant)
        if trial.practice:  # feedback: the right answer (the same encoding as choice) and whether it was given
            state["correct"] = correct(self.protocol, choice, trial.fake_slot)
            state["truth"] = choice if state["correct"] else 1 - choice
        return state

    def image(self, session: str, trial_id: str, slot: str) -> bytes:
        """The PNG of one slot of a trial, dithered for this session (see the module docstring). The first
        request for the current trial's images starts the server's clock for its answer."""
        if not ID_PATTERN.fullmatch(trial_id) or not ID_PATTERN.fullmatch(slot):
            raise HTTPError(400, "an image URL is /api/image/SESSION/TRIAL/SLOT with whole numbers (digits 0-9)")
        with self.engine.begin() as conn:
            participant = self._participant(conn, session)
            trial = conn.execute(sa.select(db.trials).where(db.trials.c.id == int(trial_id))).one_or_none()
            if trial is None or trial.participant_id != participant.id:
                raise HTTPError(403, f"trial {trial_id} is not one of this session's trials")
            answered = self._answered(conn, participant.id)
            if trial.position > answered:
                raise HTTPError(403, "that trial's images are served when it is the next trial")
            method = self.methods[trial.method_id]
            shown = shown_images(self.protocol, trial.fake_slot, method.is_control, trial.catch)
            if int(slot) >= len(shown):
                raise HTTPError(400, f"slot must be below {len(shown)} in a {self.protocol} study")
            if trial.position == answered and trial.served_at is None:
                conn.execute(db.trials.update().where(db.trials.c.id == trial.id, db.trials.c.served_at.is_(None))
                             .values(served_at=self.clock()))
        folder = {"fake": method.directory, "real": "real", "catch": "catch"}[shown[int(slot)]]
        rgb = stored_image(self.directory / "images" / folder / f"{self.stems[trial.image_id]}.png")
        # the key names the trial and slot as numbers: /007/ and /7/ are one image, dithered once
        return png_bytes(dithered(rgb, self.secret + f"/{session}/{trial.id}/{int(slot)}".encode()))


def make_app(service: StudyService, token: str | None = None, allowed_hosts=DEFAULT_HOSTS) -> AllowedHosts:
    page = resources.files("colorlab").joinpath("static/study.html").read_text("utf-8")
    shown = {"protocol": service.protocol, "display_ms": service.settings["display_ms"],
             "practice": service.settings["practice"]}
    page = page.replace("{{title}}", service.name).replace("{{settings}}", json.dumps(shown)).encode()

    def check_token(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("x-study-token") or request.query_params.get("token") or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPError(403, "this study needs its access token: open the link you were given "
                            "(…/?token=...)")

    async def index(request: Request) -> Response:
        check_token(request)
        return Response(page, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    async def new_session(request: Request) -> JSONResponse:
        check_token(request)
        payload = await read_json(request, MAX_JSON_BYTES)
        if set(payload) - {"pid"}:
            raise HTTPError(400, f"unknown field(s) {sorted(set(payload) - {'pid'})}; a new session takes pid"[:200])
        address = request.client.host if request.client else None
        return JSONResponse(await run_in_threadpool(service.new_session, payload.get("pid"), address))

    async def state(request: Request) -> JSONResponse:
        check_token(request)
        return JSONResponse(await run_in_threadpool(service.state, request.path_params["session"]))

    async def answer(request: Request) -> JSONResponse:
        check_token(request)
        payload = await read_json(request, MAX_JSON_BYTES)
        return JSONResponse(await run_in_threadpool(service.answer, payload))

    async def image(request: Request) -> Response:
        check_token(request)
        p = request.path_params
        png = await run_in_threadpool(service.image, p["session"], p["trial"], p["slot"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def not_found(request: Request, exc) -> JSONResponse:
        return error_response(404, f"no page {request.url.path}")

    routes = [Route("/", index), Route("/api/session", new_session, methods=["POST"]),
              Route("/api/session/{session}", state), Route("/api/answer", answer, methods=["POST"]),
              Route("/api/image/{session}/{trial}/{slot}", image)]
    app = Starlette(routes=routes, exception_handlers={**json_error_handlers, 404: not_found})
    return AllowedHosts(app, allowed_hosts)


ENV = "COLORLAB_STUDY_SERVE"  # the serve options, for uvicorn's worker processes (workers=N)


def app_from_env() -> RequestLimit:
    """uvicorn factory for ``workers=N``: each worker process opens the study from the environment."""
    options = json.loads(os.environ[ENV])
    engine = db.connect(options["db"])
    service = StudyService(engine, options["name"], Path(options["directory"]), options.get("sessions_per_hour"))
    return RequestLimit(make_app(service, options.get("token"), tuple(options["allowed_hosts"])), MAX_REQUESTS)
