"""The human study under load, on 127.0.0.1 with every wait bounded:
- 50 participants at once lose and duplicate no answer: SQLite (one in-process server), and PostgreSQL
  (the real ``serve`` command with workers=2: two processes share one database);
- a server SIGKILLed mid-study keeps every acknowledged answer, and its participants resume where they were.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from colorlab.study import db
from colorlab.study.create import create_study
from colorlab.study.design import settings_from
from colorlab.study.server import StudyService, make_app
from colorlab.web import start
from tests import pg

SMALL = {"practice": "2", "trials": "6", "control_trials": "2", "catch_trials": "0", "display_ms": "300"}
N_TRIALS = 10  # practice + trials + control_trials
REQUEST_TIMEOUT = 30  # seconds for one HTTP request
RUN_TIMEOUT = 120  # seconds for all participants to finish
START_TIMEOUT = 90  # seconds for `serve` to answer (it imports torch)
PNG = b"\x89PNG\r\n\x1a\n"
# what a request to a server that is being killed, or is down, raises
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


@pytest.fixture(scope="session")
def postgres_url():
    with pg.postgres_server() as url:
        yield url


def call(base: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """(status, JSON or bytes) of one request on a fresh connection; CONNECTION_ERRORS when there is no answer."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
    try:
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        is_json = (response.getheader("content-type") or "").startswith("application/json")
        return response.status, json.loads(raw) if is_json else raw
    finally:
        conn.close()


def run_all(function, n: int) -> list:
    """function(i) for i < n in n threads at once; the results, or the first exception; bounded by RUN_TIMEOUT."""
    pool = ThreadPoolExecutor(max_workers=n)
    try:
        futures = [pool.submit(function, i) for i in range(n)]
        done, pending = wait(futures, timeout=RUN_TIMEOUT, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                raise future.exception()
        assert not pending, f"{len(pending)} of {n} participants did not finish within {RUN_TIMEOUT} s"
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def stored_answers(engine, name: str) -> dict[str, list[tuple[int, int, int]]]:
    """{session: [(position, trial id, choice)] by position} of every participant of the study ``name``."""
    a, t, p, s = db.answers, db.trials, db.participants, db.studies
    with engine.connect() as conn:
        sessions = conn.execute(sa.select(p.c.session).join(s, s.c.id == p.c.study_id)
                                .where(s.c.name == name)).scalars().all()
        rows = conn.execute(
            sa.select(p.c.session, a.c.position, a.c.trial_id, a.c.choice, t.c.position.label("trial_position"),
                      t.c.participant_id)
            .join(p, p.c.id == a.c.participant_id).join(s, s.c.id == p.c.study_id).join(t, t.c.id == a.c.trial_id)
            .where(s.c.name == name).order_by(p.c.session, a.c.position)).all()
    stored: dict[str, list] = {session: [] for session in sessions}
    for row in rows:
        assert row.trial_position == row.position, f"answer at position {row.position} names another trial"
        stored[row.session].append((row.position, row.trial_id, row.choice))
    return stored


def assert_complete(stored: dict, sent: dict[str, dict[int, tuple[int, int]]]) -> None:
    """Every participant has exactly N_TRIALS answers at positions 0..N-1, each the (trial, choice) it sent."""
    assert set(stored) == set(sent), "participants in the database != participants that took part"
    for session, answers in stored.items():
        assert [position for position, _, _ in answers] == list(range(N_TRIALS)), (session, answers)
        assert {position: (trial, choice) for position, trial, choice in answers} == sent[session], session
    assert sum(map(len, stored.values())) == len(sent) * N_TRIALS


class Served:
    """``python -m colorlab.study serve`` as a subprocess in its own process group (killed at the end)."""

    def __init__(self, name: str, root: Path, port: int, log: Path, *options: str):
        self.command = [sys.executable, "-m", "colorlab.study", "serve", f"name={name}", f"root={root}",
                        f"port={port}", *options]
        self.url, self.log, self.process = f"http://127.0.0.1:{port}", log, None

    def start(self) -> Served:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True, cwd=Path(__file__).parents[1])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if call(self.url, "/")[0] == 200:
                    return self
            except CONNECTION_ERRORS:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"serve did not answer within {START_TIMEOUT} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL to the whole process group (uvicorn's workers included), then reap."""
        if self.process is None or self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


def pids_connected_to(port: int, group: int) -> set[int]:
    """The processes of process group ``group`` holding a TCP connection to ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == group and any(os.readlink(fd) in inodes
                                                            for fd in (entry / "fd").iterdir()):
                pids.add(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return pids


# -- 50 participants at once -------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_participants_lose_and_duplicate_nothing(backend, study_checkpoints, tmp_path, request):
    """50 participants answer at once (fetching images now and then, and each re-sending one answered trial,
    with the other choice: 409); the database has each one's N answers, positions 0..N-1, as sent."""
    n_participants = 50
    db_url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    name = f"load-{backend}"
    directory = create_study(name, study_checkpoints, settings_from(SMALL), root=tmp_path, db_url=db_url)
    engine = db.connect(db_url or f"sqlite:///{directory / 'study.db'}")
    served = server = None
    try:
        if backend == "postgresql":  # the real command: two processes share the one database
            served = Served(name, tmp_path, pg.free_port(), tmp_path / "serve.log", "workers=2", f"db={db_url}",
                            "sessions_per_hour=1000").start()  # 50 participants from one address
            url = served.url
        else:
            server, url = start(make_app(StudyService(engine, name, directory)), limit_concurrency=256)
        barrier = threading.Barrier(n_participants, timeout=RUN_TIMEOUT)

        def participant(i: int) -> tuple[str, dict]:
            rng = np.random.default_rng(i)
            barrier.wait()
            status, state = call(url, "/api/session", {})
            assert status == 200, state
            assert state["total"] == N_TRIALS and state["answered"] == 0
            session, sent, repeat = state["session"], {}, int(rng.integers(N_TRIALS))
            while not state["done"]:
                trial = state["trial"]
                assert trial["position"] == len(sent), (trial, len(sent))
                if rng.random() < 0.3:
                    for image in trial["images"]:
                        status, png = call(url, image)
                        assert status == 200 and png[:8] == PNG, (status, png[:100])
                answer = {"session": session, "trial": trial["id"], "choice": int(rng.integers(2)),
                          "response_ms": float(rng.uniform(200, 3000)), "shown_ms": 300.0}
                status, new = call(url, "/api/answer", answer)
                assert status == 200, new
                sent[trial["position"]] = (trial["id"], answer["choice"])
                assert new["answered"] == len(sent)
                if trial["position"] == repeat:  # once: the same trial again, with the other choice
                    status, refused = call(url, "/api/answer", {**answer, "choice": 1 - answer["choice"]})
                    assert status == 409, refused
                state = new
                time.sleep(rng.uniform(0, 0.01))
            assert state["answered"] == N_TRIALS and state["trial"] is None
            status, final = call(url, f"/api/session/{session}")
            assert status == 200 and final["done"] and final["answered"] == N_TRIALS
            return session, sent

        sent = dict(run_all(participant, n_participants))
        assert len(sent) == n_participants
        if served is not None:  # both workers hold connections to the database (the parent process, too)
            workers = pids_connected_to(sa.make_url(db_url).port, served.process.pid)
            assert len(workers - {served.process.pid}) == 2, workers
        assert_complete(stored_answers(engine, name), sent)
        with engine.connect() as conn:
            unfinished = conn.execute(sa.select(sa.func.count()).select_from(db.participants)
                                      .join(db.studies, db.studies.c.id == db.participants.c.study_id)
                                      .where(db.studies.c.name == name, db.participants.c.finished_at.is_(None)))
            assert unfinished.scalar_one() == 0
    finally:
        if server is not None:
            server.should_exit = True
        if served is not None:
            served.kill()
        engine.dispose()


# -- SIGKILL mid-study -------------------------------------------------------------------------
def test_answers_survive_sigkill_and_participants_resume(study_checkpoints, tmp_path):
    """20 participants answer at once; the server is SIGKILLed once half the answers are acknowledged: every
    acknowledged answer is stored, positions contiguous; restarted on the same port and database, each
    participant's state resumes at its next trial and the study completes, nothing lost or duplicated."""
    n_participants, name = 20, "killed"
    directory = create_study(name, study_checkpoints, settings_from(SMALL), root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    served = Served(name, tmp_path, pg.free_port(), tmp_path / "serve.log", "sessions_per_hour=1000").start()
    down, up, half = threading.Event(), threading.Event(), threading.Event()
    lock, acknowledged = threading.Lock(), {}  # session -> {position: (trial, choice)} that got a 200
    interrupted = []  # (session, path) of requests cut off by the kill
    stored_unacknowledged = []  # sessions whose cut-off answer had been stored (409 when sent again)

    def send(session: str, path: str, body: dict | None = None) -> tuple[int, object, bool]:
        """(status, body, whether it was cut off and sent again): while the server is down, wait for the restart."""
        cut = False
        for _ in range(3):
            if down.is_set():
                assert up.wait(RUN_TIMEOUT), "the server was not restarted"
            try:
                return *call(served.url, path, body), cut
            except CONNECTION_ERRORS:
                assert down.is_set() and not up.is_set(), f"{path}: no answer while the server was up"
                cut = True
                with lock:
                    interrupted.append((session, path))
        raise AssertionError(f"{path}: no answer after the restart")

    def participant(i: int) -> tuple[str, dict]:
        rng = np.random.default_rng(100 + i)
        status, state = call(served.url, "/api/session", {})
        assert status == 200, state
        session, sent = state["session"], {}
        with lock:
            acknowledged[session] = {}
        barrier.wait()  # every session exists before the first answer (and so before the kill)
        while not state["done"]:
            trial = state["trial"]
            assert trial["position"] == len(sent), (trial, len(sent))
            if rng.random() < 0.2:
                status, png, _ = send(session, trial["images"][0])
                assert status == 200 and png[:8] == PNG, (status, png[:100])
            answer = {"session": session, "trial": trial["id"], "choice": int(rng.integers(2)),
                      "response_ms": float(rng.uniform(200, 3000)), "shown_ms": 300.0}
            status, new, cut = send(session, "/api/answer", answer)
            if status == 409 and cut:  # the first attempt was stored, its answer lost in the kill
                with lock:
                    stored_unacknowledged.append(session)
                status, new, _ = send(session, f"/api/session/{session}")
                assert status == 200 and new["answered"] == trial["position"] + 1, new
            else:
                assert status == 200, new
                with lock:
                    acknowledged[session][trial["position"]] = (trial["id"], answer["choice"])
                    if sum(map(len, acknowledged.values())) >= n_participants * N_TRIALS // 2:
                        half.set()
            sent[trial["position"]] = (trial["id"], answer["choice"])
            state = new
            time.sleep(rng.uniform(0, 0.02))
        return session, sent

    barrier = threading.Barrier(n_participants, timeout=RUN_TIMEOUT)
    pool = ThreadPoolExecutor(max_workers=n_participants)
    try:
        futures = [pool.submit(participant, i) for i in range(n_participants)]
        assert half.wait(RUN_TIMEOUT), "half of the answers were not acknowledged in time"
        down.set()
        served.kill()
        with lock:
            acked = {session: dict(answers) for session, answers in acknowledged.items()}
        # the database as the kill left it: every acknowledged answer, positions contiguous from 0
        stored = stored_answers(engine, name)
        assert set(stored) == set(acked)
        total = sum(map(len, stored.values()))
        assert n_participants * N_TRIALS // 2 <= total < n_participants * N_TRIALS, f"not mid-study: {total}"
        for session, answers in stored.items():
            assert [position for position, _, _ in answers] == list(range(len(answers))), (session, answers)
            by_position = {position: (trial, choice) for position, trial, choice in answers}
            assert acked[session].items() <= by_position.items(), (session, acked[session], by_position)

        served.start()  # the same port and database
        for session, answers in stored.items():
            status, state = call(served.url, f"/api/session/{session}")
            assert status == 200 and state["answered"] == len(answers), (state, answers)
            if len(answers) < N_TRIALS:
                assert state["trial"]["position"] == len(answers) and not state["done"]
        up.set()

        done, pending = wait(futures, timeout=RUN_TIMEOUT, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                raise future.exception()
        assert not pending, f"{len(pending)} participants did not finish within {RUN_TIMEOUT} s"
        sent = dict(f.result() for f in futures)
        assert_complete(stored_answers(engine, name), sent)
        print(f"{total} answers stored at the kill; {len(interrupted)} request(s) cut off and sent again, "
              f"{len(stored_unacknowledged)} of them answers stored before the kill")
    finally:
        down.set()
        up.set()  # participants still waiting stop at their next assertion
        pool.shutdown(wait=False, cancel_futures=True)
        served.kill()
        engine.dispose()
