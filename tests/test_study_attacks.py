"""The study as an attacker and a crowdsourcing platform take it: what the images give away, who is excluded,
participant ids, the cap on sessions, malformed URLs and a closed study; and the server under 1000 idle and
200 trickling connections."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from scipy import stats

from colorlab.study import db
from colorlab.study.__main__ import main as study_main
from colorlab.study.create import create_study
from colorlab.study.design import settings_from
from colorlab.study.report import report
from colorlab.study.server import StudyService, make_app
from colorlab.web import start
from tests.slow_clients import SlowClients

# 40 test trials of the method per session: 5 scored sessions give the 200 trials of the chance test
ATTACKED = {"practice": "4", "trials": "40", "control_trials": "4", "catch_trials": "4"}


def request(url, body=None, headers=None):
    """(status, JSON or bytes, response headers) of one request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            raw = response.read()
            is_json = response.headers["content-type"] == "application/json"
            return response.status, json.loads(raw) if is_json else raw, response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


@pytest.fixture(scope="module")
def attacked(study_checkpoints, tmp_path_factory):
    """A 2AFC study of the short regression_l2 run: (directory, engine)."""
    root = tmp_path_factory.mktemp("attacked")
    directory = create_study("attacked", study_checkpoints[:1], settings_from(ATTACKED), root=root)
    return directory, db.connect(f"sqlite:///{directory / 'study.db'}")


def trials_of(engine, session: str) -> dict[int, sa.Row]:
    with engine.connect() as conn:
        t = db.trials
        query = (sa.select(t, db.methods.c.is_control, db.images.c.stem)
                 .select_from(t.join(db.participants, db.participants.c.id == t.c.participant_id)
                              .join(db.methods, db.methods.c.id == t.c.method_id)
                              .join(db.images, db.images.c.id == t.c.image_id))
                 .where(db.participants.c.session == session))
        return {row.id: row for row in conn.execute(query)}


def attack(url: str, rng, common_hashes: set[str]) -> tuple[str, list[tuple[int, int, list[bytes]]]]:
    """One session played without looking: (a) the smaller file is taken for the real photo, (b) a file whose hash
    was seen in earlier sessions is the real photo, else a coin flip; every answer claims a human's 600 ms.
    Returns (session, [(trial id, choice, [image bytes])])."""
    _, state, _ = request(url + "/api/session", {})
    played = []
    while not state["done"]:
        trial = state["trial"]
        images = [request(url + path)[1] for path in trial["images"]]
        hashes = [hashlib.sha256(png).hexdigest() for png in images]
        known = [h in common_hashes for h in hashes]
        if known[0] != known[1]:
            choice = known.index(True)
        elif len(images[0]) != len(images[1]):
            choice = int(len(images[1]) < len(images[0]))
        else:
            choice = int(rng.integers(2))
        _, state, _ = request(url + "/api/answer", {"session": state["session"], "trial": trial["id"],
                                                    "choice": choice, "response_ms": 600.0, "shown_ms": 1000.0})
        played.append((trial["id"], choice, images))
    return state["session"], played


def test_an_attacker_who_never_looks_is_at_chance_and_excluded(attacked):
    """Two throwaway sessions give the attacker the hashes of what they were shown; five more are scored on the
    method's 200 test trials. With the images as the study stores them (what a server sending its files would
    send), the same rules are right far more often than chance (the check can fail)."""
    directory, engine = attacked
    server, url = start(make_app(StudyService(engine, "attacked", directory)))
    rng = np.random.default_rng(0)
    try:
        seen = []
        for _ in range(2):
            _, played = attack(url, rng, set())
            seen.append({hashlib.sha256(png).hexdigest() for _, _, images in played for png in images})
        common = seen[0] & seen[1]
        scored, stored_right, lengths = [], [], set()
        for _ in range(5):
            session, played = attack(url, rng, common)
            trials = trials_of(engine, session)
            for trial_id, choice, images in played:
                trial = trials[trial_id]
                lengths.update(len(png) for png in images)
                if trial.practice or trial.catch or trial.is_control:
                    continue
                scored.append(choice != trial.fake_slot)  # the real side picked
                files = [(directory / "images" / ("regression_l2" if slot == trial.fake_slot else "real")
                          / f"{trial.stem}.png").read_bytes() for slot in (0, 1)]
                stored_right.append(int(len(files[1]) < len(files[0])) != trial.fake_slot)
    finally:
        server.should_exit = True
    assert common == set()  # no image's bytes repeat across sessions
    assert len(lengths) == 1  # every image the same length (32x32 RGB)
    low, high = stats.binom.interval(0.95, len(scored), 0.5)
    print(f"attacker right in {sum(scored)} of {len(scored)} trials (95% band of chance {low:.0f}-{high:.0f}); "
          f"the smaller stored file is the real one in {np.mean(stored_right):.0%}")
    assert len(scored) >= 200 and low <= sum(scored) <= high
    assert abs(np.mean(stored_right) - 0.5) > 0.2  # the stored files' sizes do tell real from fake

    markdown = report(engine, "attacked", directory).read_text()
    statuses = [r["status"] for r in csv.DictReader(open(directory / "report" / "participants.csv"))]
    assert statuses == ["too fast"] * 7  # the claimed 600 ms does not count: the server's clock does
    flagged = [r["times_disagree"] for r in csv.DictReader(open(directory / "report" / "trials.csv"))]
    assert flagged == ["True"] * 7 * 52  # every answer claims 1600 ms the server did not see pass
    assert "- too fast: 7 session(s)" in markdown and f"{7 * 52} answer(s) of 7 session(s) claim more" in markdown
    assert list(csv.DictReader(open(directory / "report" / "methods.csv"))) == []


def test_images_carry_nothing_but_their_pixels(attacked):
    """Real and fake of one size have one length; the same photo differs in bytes between sessions but by one
    level at most in pixels; no header differs between real and fake."""
    directory, engine = attacked
    server, url = start(make_app(StudyService(engine, "attacked", directory)))
    try:
        sessions = [request(url + "/api/session", {})[1] for _ in range(2)]
        fetched = [[request(url + path) for path in s["trial"]["images"]] for s in sessions]
        first = sessions[0]["trial"]["images"][0]
        zeros = first.replace(f"/{sessions[0]['trial']['id']}/", f"/000{sessions[0]['trial']['id']}/")
        assert request(url + zeros)[1] == fetched[0][0][1]  # one image, one dither: no averaging over spellings
    finally:
        server.should_exit = True
    for code, _, headers in fetched[0]:
        assert code == 200 and headers["Cache-Control"] == "no-store"
        assert headers["ETag"] is None and headers["Last-Modified"] is None
    header_sets = {tuple(sorted((k, v) for k, v in h.items() if k.lower() != "date")) for _, _, h in fetched[0]}
    assert len(header_sets) == 1
    assert len({len(png) for _, png, _ in fetched[0] + fetched[1]}) == 1
    for session, images in zip(sessions, fetched, strict=True):
        trial = trials_of(engine, session["session"])[session["trial"]["id"]]
        stored = np.asarray(Image.open(directory / "images" / "real" / f"{trial.stem}.png"), dtype=int)
        served = np.asarray(Image.open(io.BytesIO(images[1 - trial.fake_slot][1])), dtype=int)
        assert np.abs(served - stored).max() == 1 and (served != stored).mean() > 0.5  # +-1 level on most values


def test_platform_ids_completion_code_and_the_cap_on_new_sessions(study_checkpoints, tmp_path):
    settings = settings_from({"practice": "1", "trials": "2", "control_trials": "0", "catch_trials": "0",
                              "completion_code": "C0DE42"})
    directory = create_study("platform", study_checkpoints[:1], settings, root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    server, url = start(make_app(StudyService(engine, "platform", directory, sessions_per_hour=3)))
    try:
        code, first, _ = request(url + "/api/session", {"pid": "5f3a9c"})
        assert code == 200 and "completion_code" not in first
        assert request(url + "/api/session", {"pid": "5f3a9c"})[1]["session"] == first["session"]  # one per id
        assert request(url + "/api/session", {"pid": "<script>"})[0] == 400
        assert request(url + "/api/session", {"name": "x"})[0] == 400
        code, other, _ = request(url + "/api/session", {})
        assert code == 200
        code, third, _ = request(url + "/api/session", {"pid": "another"})
        assert code == 200
        code, refused, _ = request(url + "/api/session", {})  # a fourth new session from 127.0.0.1 this hour
        assert code == 429 and "the most it may (3)" in refused["error"]
        assert request(url + "/api/session", {"pid": "5f3a9c"})[0] == 200  # resuming is not a new session
        state = first
        while not state["done"]:
            for path in state["trial"]["images"]:
                request(url + path)
            _, state, _ = request(url + "/api/answer", {"session": state["session"], "trial": state["trial"]["id"],
                                                        "choice": 0, "response_ms": 500})
        assert state["completion_code"] == "C0DE42"
    finally:
        server.should_exit = True
    report(engine, "platform", directory)
    pids = {r["pid"] for r in csv.DictReader(open(directory / "report" / "participants.csv"))}
    assert pids == {"5f3a9c", "another", ""}
    with engine.connect() as conn:
        clients = conn.execute(sa.select(db.participants.c.client)).scalars().all()
    assert all(c and "127.0.0.1" not in c for c in clients) and len(set(clients)) == 1  # hashed, not stored


def test_catch_trials_exclude_participants_who_do_not_look(study_checkpoints, tmp_path):
    """The catch image is the real photo with its hues turned; a participant who picks it as real in every catch
    trial is excluded, one who spots it is not; catch trials count for no method."""
    from tests.test_study import FakeClock

    settings = settings_from({"practice": "0", "trials": "4", "control_trials": "0", "catch_trials": "4",
                              "display_ms": "300"})
    directory = create_study("catch", study_checkpoints[:1], settings, root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    service = StudyService(engine, "catch", directory, clock=FakeClock(step_ms=1500))
    from skimage.color import rgb2lab  # an independent Lab

    real = rgb2lab(np.asarray(Image.open(directory / "images/real/0000.png")))
    catch = rgb2lab(np.asarray(Image.open(directory / "images/catch/0000.png")))
    assert np.abs(real[..., 0] - catch[..., 0]).mean() < 2  # the lightness kept (up to rounding and gamut)
    hue_turn = np.abs(np.angle(np.exp(1j * (np.arctan2(real[..., 2], real[..., 1])
                                            - np.arctan2(catch[..., 2], catch[..., 1])))))
    colourful = np.hypot(real[..., 1], real[..., 2]) > 10
    assert np.median(hue_turn[colourful]) > np.radians(150)  # hues turned by about 180 degrees
    for spots in (True, False):
        state = service.new_session()
        while not state["done"]:
            trial = trials_of(engine, state["session"])[state["trial"]["id"]]
            service.image(state["session"], str(trial.id), "0")
            choice = 1 - trial.fake_slot if (trial.catch and spots) else trial.fake_slot
            state = service.answer({"session": state["session"], "trial": trial.id, "choice": choice,
                                    "response_ms": 500})
    markdown = report(engine, "catch", directory).read_text()
    statuses = [r["status"] for r in csv.DictReader(open(directory / "report" / "participants.csv"))]
    assert statuses == ["included", "failed catch trials"]
    assert "- failed catch trials: 1 session(s)" in markdown
    rows = list(csv.DictReader(open(directory / "report" / "methods.csv")))
    assert [(r["method"], r["trials"], r["fooling_rate"]) for r in rows] == [("regression_l2", "4", "1.0")]


# -- smaller defects ---------------------------------------------------------------------------
def test_malformed_ids_are_refused_with_400_not_500(attacked):
    directory, engine = attacked
    server, url = start(make_app(StudyService(engine, "attacked", directory)))
    try:
        _, state, _ = request(url + "/api/session", {})
        session, trial = state["session"], state["trial"]["id"]
        for path in (f"{session}/%C2%B2/0", f"{session}/{'9' * 26}/0", f"{session}/%D9%A3/0",
                     f"{session}/{trial}/%D9%A0", f"{session}/{trial}/{'1' * 30}"):
            code, reply, _ = request(f"{url}/api/image/{path}")
            assert code == 400 and "whole numbers" in reply["error"], (path, code, reply)
        for bad in (10**40, -1, 0, 2**63):
            code, reply, _ = request(url + "/api/answer", {"session": session, "trial": bad, "choice": 0,
                                                           "response_ms": 500})
            assert code == 400 and "trial must be" in reply["error"], (bad, code, reply)
    finally:
        server.should_exit = True


def test_a_closed_study_says_so_in_the_state_and_keeps_saying_it(study_checkpoints, tmp_path):
    settings = settings_from({"practice": "1", "trials": "2", "control_trials": "0", "catch_trials": "0"})
    directory = create_study("closing", study_checkpoints[:1], settings, root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    service = StudyService(engine, "closing", directory)
    state = service.new_session()
    assert state["closed"] is False and state["trial"] is not None
    assert study_main(["close", "name=closing", f"root={tmp_path}"]) == 0
    for _ in range(2):
        again = service.state(state["session"])
        assert again["closed"] is True and again["trial"] is None and not again["done"]


def test_many_throwaway_sessions_make_one_report_line(study_checkpoints, tmp_path):
    settings = settings_from({"practice": "1", "trials": "2", "control_trials": "0", "catch_trials": "0"})
    directory = create_study("throwaway", study_checkpoints[:1], settings, root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    service = StudyService(engine, "throwaway", directory)
    for _ in range(200):
        service.new_session()
    markdown = report(engine, "throwaway", directory).read_text()
    assert "200 participants, 0 included, 200 excluded" in markdown
    assert markdown.count("\n- ") == 1 and "- incomplete: 200 session(s)" in markdown


def test_local_names_stay_allowed_with_allowed_hosts(study_checkpoints, tmp_path, monkeypatch):
    """``serve allowed_hosts=study.example.org`` keeps 127.0.0.1 and localhost (the printed link)."""
    from colorlab import web

    settings = settings_from({"practice": "1", "trials": "2", "control_trials": "0", "catch_trials": "0"})
    create_study("hosts", study_checkpoints[:1], settings, root=tmp_path)
    served = {}
    monkeypatch.setattr(web, "serve", lambda app, host, port, **options: served.update(app=app))
    assert study_main(["serve", "name=hosts", f"root={tmp_path}", "allowed_hosts=study.example.org"]) == 0
    assert served["app"].hosts == {"127.0.0.1", "localhost", "study.example.org"}


# -- slow and idle clients ---------------------------------------------------------------------
def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


@pytest.mark.slow
def test_a_participant_gets_through_1000_idle_and_200_trickling_connections(attacked):
    """The server keeps answering a fresh participant (a session and an answered trial within 5 s) while 1200
    connections hang, closes every one of them once their head is overdue, and its memory stays bounded."""
    directory, engine = attacked
    server, url = start(make_app(StudyService(engine, "attacked", directory)))
    port = int(url.rsplit(":", 1)[1])
    before = rss_bytes()
    try:
        with SlowClients(port, idle=1000, trickling=200, limit_s=40) as slow:
            time.sleep(1.0)  # every connection accepted and holding
            started = time.monotonic()
            _, state, _ = request(url + "/api/session", {})
            for path in state["trial"]["images"]:
                assert request(url + path)[0] == 200
            code, after, _ = request(url + "/api/answer", {"session": state["session"], "trial": state["trial"]["id"],
                                                           "choice": 0, "response_ms": 500})
            took = time.monotonic() - started
            held = rss_bytes() - before
            deadline = time.monotonic() + 20
            while slow.closed_by_server() < 1200 and time.monotonic() < deadline:
                time.sleep(0.5)
            closed = slow.closed_by_server()
    finally:
        server.should_exit = True
    print(f"participant through in {took:.2f} s; {closed} of 1200 slow connections closed by the server; "
          f"RSS +{held / 1e6:.0f} MB while they were held (client and server in this process)")
    assert code == 200 and after["answered"] == 1 and took < 5
    assert closed == 1200  # the head deadline (10 s) applies to silent and trickling connections alike
    assert held < 200e6
