"""The participants' page and its JSON API (Starlette; run by ``python -m colorlab.study serve``).

API (every request carries the access token, when the study has one, as ``X-Study-Token`` or ``?token=``):
  POST /api/session {}                    a new participant: {session, ...state}
  GET  /api/session/{session}             the state: protocol, display_ms, total, practice, answered,
                                          done, and the next trial {id, position, practice, images}
  POST /api/answer {session, trial, choice, response_ms, shown_ms}
                                          stores the answer (one transaction) and returns the new state,
                                          with {correct, truth} after a practice trial (truth: the
                                          right choice)
  GET  /api/image/{session}/{trial}/{slot}  a trial's image (only the participant's own trials, up to
                                          the next one); the URL names no method and no side

Refusals (nothing stored): 400 malformed, 403 wrong token or a trial that is not the participant's,
404 unknown session, 409 a trial answered already or out of turn, or the study closed; 413/415 from
colorlab.web. Nothing personal is stored: no IP address, no user agent, no name.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
import secrets
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from colorlab.study import db
from colorlab.study.design import correct, shown_images, trial_list
from colorlab.web import DEFAULT_HOSTS, AllowedHosts, HTTPError, error_response, json_error_handlers, read_json

MAX_JSON_BYTES = 4096  # an answer is ~150 bytes
SESSION_PATTERN = re.compile(r"[0-9a-f]{32}")


class StudyService:
    """Everything the page does, independent of HTTP; errors are HTTPErrors (status, message)."""

    def __init__(self, engine: sa.Engine, name: str, directory: Path):
        self.engine, self.name, self.directory = engine, name, Path(directory)
        with engine.connect() as conn:
            study = db.study_row(conn, name)
            if study is None:
                raise ValueError(f"no study named {name!r} in {db.redacted(str(engine.url))}")
            self.study_id, self.protocol, self.settings = study.id, study.protocol, db.settings_of(study)
            rows = conn.execute(sa.select(db.methods).where(db.methods.c.study_id == study.id)).all()
            self.methods = {m.id: m for m in rows}
            self.control_id = next(m.id for m in rows if m.is_control)
            self.stems = dict(conn.execute(sa.select(db.images.c.id, db.images.c.stem)
                                           .where(db.images.c.study_id == study.id)).all())
            self.image_ids = dict(conn.execute(sa.select(db.images.c.idx, db.images.c.id)
                                               .where(db.images.c.study_id == study.id)).all())

    # -- helpers ------------------------------------------------------------------------------
    def _check_open(self, conn) -> None:
        closed = conn.execute(sa.select(db.studies.c.closed_at).where(db.studies.c.id == self.study_id)).scalar()
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
        state = {"session": participant.session, "protocol": self.protocol,
                 "display_ms": self.settings["display_ms"], "total": participant.n_trials,
                 "practice": self.settings["practice"], "answered": answered,
                 "done": answered >= participant.n_trials, "trial": None}
        if not state["done"]:
            trial = conn.execute(sa.select(db.trials).where(db.trials.c.participant_id == participant.id,
                                                            db.trials.c.position == answered)).one()
            slots = 2 if self.protocol == "2afc" else 1
            state["trial"] = {"id": trial.id, "position": trial.position, "practice": trial.practice,
                              "images": [f"/api/image/{participant.session}/{trial.id}/{s}" for s in range(slots)]}
        return state

    # -- the API ------------------------------------------------------------------------------
    def new_session(self) -> dict:
        with self.engine.begin() as conn:
            self._check_open(conn)
            counts = dict(conn.execute(
                sa.select(db.participants.c.method_id, sa.func.count())
                .where(db.participants.c.study_id == self.study_id).group_by(db.participants.c.method_id)).all())
            candidates = sorted(m for m in self.methods if m != self.control_id)
            method_id = min(candidates, key=lambda m: (counts.get(m, 0), m))  # balanced assignment
            session = secrets.token_hex(16)
            participant_id = conn.execute(db.participants.insert().values(
                study_id=self.study_id, session=session, method_id=method_id, n_trials=0,
                started_at=db.now())).inserted_primary_key[0]
            rows = trial_list(self.settings, method_id, self.control_id, participant_id)
            conn.execute(db.trials.insert(), [
                {"participant_id": participant_id, "position": r["position"], "practice": r["practice"],
                 "image_id": self.image_ids[r["image_idx"]], "method_id": r["method_id"],
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
        if type(trial_id) is not int:
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
            try:
                conn.execute(db.answers.insert().values(
                    participant_id=participant.id, trial_id=trial.id, position=trial.position, choice=choice,
                    response_ms=times["response_ms"], shown_ms=times["shown_ms"], answered_at=db.now()))
            except sa.exc.IntegrityError:  # a concurrent request stored this position first
                raise HTTPError(409, f"trial {trial_id} was answered already") from None
            if answered + 1 == participant.n_trials:
                conn.execute(db.participants.update().where(db.participants.c.id == participant.id)
                             .values(finished_at=db.now()))
            state = self._state(conn, participant)
        if trial.practice:  # feedback: the right answer (the same encoding as choice) and whether it was given
            state["correct"] = correct(self.protocol, choice, trial.fake_slot)
            state["truth"] = choice if state["correct"] else 1 - choice
        return state

    def image(self, session: str, trial_id: str, slot: str) -> Path:
        with self.engine.connect() as conn:
            participant = self._participant(conn, session)
            if not trial_id.isdigit() or not slot.isdigit():
                raise HTTPError(400, "an image URL is /api/image/SESSION/TRIAL/SLOT with whole numbers")
            trial = conn.execute(sa.select(db.trials).where(db.trials.c.id == int(trial_id))).one_or_none()
            if trial is None or trial.participant_id != participant.id:
                raise HTTPError(403, f"trial {trial_id} is not one of this session's trials")
            if trial.position > self._answered(conn, participant.id):
                raise HTTPError(403, "that trial's images are served when it is the next trial")
        method = self.methods[trial.method_id]
        shown = shown_images(self.protocol, trial.fake_slot, method.is_control)
        if int(slot) >= len(shown):
            raise HTTPError(400, f"slot must be below {len(shown)} in a {self.protocol} study")
        folder = method.directory if shown[int(slot)] == "fake" else "real"
        return self.directory / "images" / folder / f"{self.stems[trial.image_id]}.png"


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
        await read_json(request, MAX_JSON_BYTES)
        return JSONResponse(await run_in_threadpool(service.new_session))

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
        path = await run_in_threadpool(service.image, p["session"], p["trial"], p["slot"])
        return Response(await run_in_threadpool(path.read_bytes), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    async def not_found(request: Request, exc) -> JSONResponse:
        return error_response(404, f"no page {request.url.path}")

    routes = [Route("/", index), Route("/api/session", new_session, methods=["POST"]),
              Route("/api/session/{session}", state), Route("/api/answer", answer, methods=["POST"]),
              Route("/api/image/{session}/{trial}/{slot}", image)]
    app = Starlette(routes=routes, exception_handlers={**json_error_handlers, 404: not_found})
    return AllowedHosts(app, allowed_hosts)


ENV = "COLORLAB_STUDY_SERVE"  # the serve options, for uvicorn's worker processes (workers=N)


def app_from_env() -> AllowedHosts:
    """uvicorn factory for ``workers=N``: each worker process opens the study from the environment."""
    options = json.loads(os.environ[ENV])
    engine = db.connect(options["db"])
    return make_app(StudyService(engine, options["name"], Path(options["directory"])), options.get("token"),
                    tuple(options["allowed_hosts"]))
