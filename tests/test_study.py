"""The human study: its design, refusals, statistics, report, and the participants' page in Chromium.
(Concurrency, PostgreSQL and SIGKILL are in tests/test_study_load.py.)"""

import csv
import datetime as dt
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import sqlalchemy as sa

from colorlab.study import db
from colorlab.study.__main__ import main as study_main
from colorlab.study.create import create_study
from colorlab.study.design import judged_real, settings_from, trial_list
from colorlab.study.report import bootstrap_rate, report
from colorlab.study.server import StudyService, make_app
from colorlab.web import start
from tests.browser import chromium_path, launch

SMALL = {"practice": "2", "trials": "6", "control_trials": "2", "catch_trials": "0", "display_ms": "300"}


@pytest.fixture(scope="module")
def study(study_checkpoints, tmp_path_factory):
    """A 2AFC study of the two checkpoints: (directory, name, engine)."""
    root = tmp_path_factory.mktemp("studies")
    directory = create_study("pilot", study_checkpoints, settings_from(SMALL), root=root)
    return directory, "pilot", db.connect(f"sqlite:///{directory / 'study.db'}")


def request(url, body=None, content_type="application/json", headers=None):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if response.headers["content-type"] == "application/json" else raw
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class FakeClock:
    """The service's clock in tests: advanced by hand, or by ``step_ms`` at every reading."""

    def __init__(self, step_ms: float = 0.0):
        self.now, self.step_ms = db.now(), step_ms

    def __call__(self):
        self.advance(self.step_ms)
        return self.now

    def advance(self, ms: float) -> None:
        self.now += dt.timedelta(milliseconds=ms)


def count_answers(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(db.answers)).scalar_one()


# -- design ------------------------------------------------------------------------------------
def test_trial_lists_are_seeded_balanced_and_never_repeat_an_image():
    settings = settings_from({"practice": "10", "trials": "40", "control_trials": "4", "catch_trials": "0",
                              "n_images": "80"})
    first = trial_list(settings, method_id=1, control_id=9, participant_number=3)
    assert first == trial_list(settings, 1, 9, 3) and first != trial_list(settings, 1, 9, 4)
    assert [t["position"] for t in first] == list(range(54))
    assert [t["practice"] for t in first] == [True] * 10 + [False] * 44
    assert len({t["image_idx"] for t in first}) == 54 and max(t["image_idx"] for t in first) < 80
    assert sum(t["method_id"] == 9 for t in first) == 4 and not any(t["method_id"] == 9 for t in first[:10])
    sides = [t["fake_slot"] for n in range(50) for t in trial_list(settings, 1, 9, n)]
    assert 0.45 < np.mean(sides) < 0.55  # the fake is on either side as often
    single = settings_from({"protocol": "single", "practice": "4", "trials": "6", "catch_trials": "0"})
    assert single["control_trials"] == 6  # as many real photos as fakes
    test = trial_list(single, 1, 9, 0)[4:]
    assert all(t["fake_slot"] == (t["method_id"] == 1) for t in test)
    assert judged_real("2afc", 1, 1) and not judged_real("2afc", 0, 1) and judged_real("single", 1, 0)


@pytest.mark.parametrize("options, words", [
    ({"protocol": "3afc"}, "protocol must be one of 2afc, single"),
    ({"display_ms": "5"}, "display_ms must be in 50..60000"),
    ({"trials": "ten"}, "trials must be a whole number"),
    ({"n_images": "20"}, "n_images=20 is fewer than one participant's trials"),
])
def test_settings_refusals(options, words):
    with pytest.raises(ValueError, match=words):
        settings_from(options)


# -- create ------------------------------------------------------------------------------------
def test_create_refuses_a_name_in_use_and_checkpoints_of_different_sizes(study, study_checkpoints, tmp_path,
                                                                         capsys):
    directory, name, engine = study
    before = sorted(p.name for p in directory.rglob("*")), (directory / "study.db").stat().st_mtime_ns
    args = ["create", f"name={name}", f"root={directory.parent}", *(f"ckpt={c}" for c in study_checkpoints)]
    assert study_main(args) == 2
    assert f"a study named '{name}' exists already" in capsys.readouterr().err
    assert (sorted(p.name for p in directory.rglob("*")), (directory / "study.db").stat().st_mtime_ns) == before

    import torch  # a copy of a checkpoint that says it works at 48 px

    other = torch.load(study_checkpoints[1], map_location="cpu", weights_only=False)
    other["colorlab_config"]["data"]["size"] = 48
    torch.save(other, tmp_path / "at48.ckpt")
    assert study_main(["create", "name=mixed", f"root={tmp_path}", f"ckpt={study_checkpoints[0]}",
                       f"ckpt={tmp_path / 'at48.ckpt'}"]) == 2
    err = capsys.readouterr().err
    assert "different image sizes" in err and "32 px" in err and "48 px" in err
    assert not (tmp_path / "mixed").exists()
    assert study_main(["create", "name=x", f"root={tmp_path}", f"ckpt={tmp_path / 'nope.ckpt'}"]) == 2
    assert "checkpoint(s) not found" in capsys.readouterr().err
    assert study_main(["create", "name=../up", f"ckpt={study_checkpoints[0]}"]) == 2
    assert "use 1-64 letters" in capsys.readouterr().err
    assert study_main(["serve", "name=pilot", "prot=1"]) == 2
    assert "unknown option 'prot' for serve" in capsys.readouterr().err


def test_created_study_holds_real_and_colourized_held_out_images(study):
    from PIL import Image

    directory, name, engine = study
    folders = sorted(p.name for p in (directory / "images").iterdir())
    assert folders == ["catch", "real", "regression_l2", "unet_bins"]
    real = [np.asarray(Image.open(p)) for p in sorted((directory / "images/real").glob("*.png"))]
    fake = [np.asarray(Image.open(p)) for p in sorted((directory / "images/unet_bins").glob("*.png"))]
    assert len(real) == len(fake) == 10 and real[0].shape == fake[0].shape == (32, 32, 3)
    # same scene: lightness agrees, colour differs (the checkpoint is nearly untrained)
    gray = lambda rgb: rgb.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    assert all(np.abs(gray(r) - gray(f)).mean() < 20 for r, f in zip(real, fake, strict=True))
    assert np.mean([np.abs(r.astype(int) - f).mean() for r, f in zip(real, fake, strict=True)]) > 3
    from colorlab.data.synthetic import SyntheticScenes  # the validation split, not training images

    held_out = SyntheticScenes(length=64, size=32, seed=0, split="val")[0]["rgb"].permute(1, 2, 0).numpy()
    assert np.array_equal(real[0], held_out)


# -- answers over HTTP -------------------------------------------------------------------------
def test_bad_requests_are_refused_and_nothing_is_stored(study):
    directory, name, engine = study
    server, url = start(make_app(StudyService(engine, name, directory)))
    try:
        _, mine = request(url + "/api/session", {})
        _, theirs = request(url + "/api/session", {})
        stored = count_answers(engine)
        good = {"session": mine["session"], "trial": mine["trial"]["id"], "choice": 1, "response_ms": 420.0}
        cases = [
            ({**good, "session": "f" * 32}, 404, "unknown session"),
            ({**good, "session": "../../etc"}, 400, "session must be the 32-character id"),
            ({**good, "trial": theirs["trial"]["id"]}, 403, "is not one of this session's trials"),
            ({**good, "trial": mine["trial"]["id"] + 1}, 409, "is not the next trial"),
            ({**good, "choice": 2}, 400, "choice must be 0 or 1"),
            ({**good, "choice": True}, 400, "choice must be 0 or 1"),
            ({**good, "response_ms": -1}, 400, "response_ms must be a number"),
            ({**good, "extra": 1}, 400, "unknown field(s) ['extra']"),
        ]
        for body, status, words in cases:
            code, reply = request(url + "/api/answer", body)
            assert code == status and words in reply["error"], (body, reply)
        for body, status, words in [(b'{"session": "' + b"a" * 5000 + b'"}', 413, "accepts up to"),
                                    (b"{not json", 400, "not valid JSON"), (b"[1]", 400, "must be a JSON object")]:
            code, reply = request(url + "/api/answer", body)
            assert code == status and words in reply["error"]
        code, reply = request(url + "/api/answer", json.dumps(good).encode(), content_type="text/plain")
        assert code == 415
        future = mine["trial"]["images"][0].replace(f"/{mine['trial']['id']}/", f"/{mine['trial']['id'] + 1}/")
        assert request(url + future)[0] == 403  # the next trial's images only once it is the next
        assert request(url + theirs["trial"]["images"][0].replace(theirs["session"], mine["session"]))[0] == 403
        assert count_answers(engine) == stored

        code, state = request(url + "/api/answer", good)
        assert code == 200 and state["answered"] == 1 and isinstance(state["correct"], bool)
        assert request(url + "/api/answer", good)[0] == 409  # answered already: stored once
        assert count_answers(engine) == stored + 1
        assert study_main(["close", f"name={name}", f"root={directory.parent}"]) == 0
        code, reply = request(url + "/api/answer", {**good, "trial": state["trial"]["id"]})
        assert code == 409 and "was closed" in reply["error"]
        assert request(url + "/api/session", {})[0] == 409
        assert count_answers(engine) == stored + 1
    finally:
        server.should_exit = True
        with engine.begin() as conn:  # reopen for the other tests
            conn.execute(sa.update(db.studies).values(closed_at=None))


def test_access_token_is_required_when_set(study):
    directory, name, engine = study
    server, url = start(make_app(StudyService(engine, name, directory), token="s3cret"))
    try:
        code, reply = request(url + "/api/session", {})
        assert code == 403 and "access token" in reply["error"]
        assert request(url + "/")[0] == 403
        assert request(url + "/api/session", {}, headers={"X-Study-Token": "wrong"})[0] == 403
        code, state = request(url + "/api/session", {}, headers={"X-Study-Token": "s3cret"})
        assert code == 200 and request(url + state["trial"]["images"][0] + "?token=s3cret")[0] == 200
    finally:
        server.should_exit = True


# -- statistics and the report -----------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_interval_covers_the_true_fooling_rate_in_95_percent_of_simulated_studies(p):
    """200 seeded studies of 20 participants x 40 trials; participants differ (p_i ~ p +- 0.15), as people
    do. Trials are not independent then, and a binomial interval over trials is far too narrow."""
    rng = np.random.default_rng(int(p * 100))
    covered = naive = 0
    for study_seed in range(200):
        counts = np.full(20, 40)
        judged = rng.binomial(counts, np.clip(rng.normal(p, 0.15, 20), 0, 1))
        rate, low, high = bootstrap_rate(judged, counts, seed=study_seed)
        covered += low <= p <= high
        half = 1.96 * np.sqrt(rate * (1 - rate) / counts.sum())
        naive += rate - half <= p <= rate + half
    assert 0.91 <= covered / 200 <= 0.985, covered  # binomial sd of 200 draws at 0.95: 0.015
    assert naive / 200 < 0.8  # the check can fail: it tells a trial-level interval from ours


def test_report_counts_simulated_participants_and_excludes_incomplete_and_hasty_ones(study):
    """Participants who judge the fake real with a known per-method probability; the report's rates equal
    the rates computed here from what they answered; an incomplete and a too-fast session are excluded."""
    directory, name, engine = study
    clock = FakeClock()
    service = StudyService(engine, name, directory, clock=clock)
    rng = np.random.default_rng(0)
    p_fooled = {"regression_l2": 0.1, "unet_bins": 0.6, "real vs real (control)": 0.5}
    expected = {m: [0, 0] for m in p_fooled}
    with engine.connect() as conn:
        methods = {m.id: m.name for m in conn.execute(sa.select(db.methods))}
        before = {r.id for r in conn.execute(sa.select(db.participants.c.id))}

    def play(n_answers, response_ms, record):
        state = service.new_session()
        for _ in range(n_answers):
            with engine.connect() as conn:
                trial = conn.execute(sa.select(db.trials).where(db.trials.c.id == state["trial"]["id"])).one()
            fooled = rng.random() < p_fooled[methods[trial.method_id]]
            choice = trial.fake_slot if fooled else 1 - trial.fake_slot
            if record and not trial.practice:
                expected[methods[trial.method_id]][0] += fooled
                expected[methods[trial.method_id]][1] += 1
            service.image(state["session"], str(trial.id), "0")  # the server's clock starts
            clock.advance(response_ms)
            state = service.answer({"session": state["session"], "trial": trial.id, "choice": choice,
                                    "response_ms": response_ms, "shown_ms": 300.0})
        return state

    for _ in range(12):
        assert play(10, 1400.0, record=True)["done"]  # 500 ms fixation + 300 ms display + 600 ms to answer
    play(4, 1400.0, record=False)  # left after 4 trials
    play(10, 340.0, record=False)  # clicked through, answering 40 ms after the images were hidden
    with engine.begin() as conn:  # keep only this test's participants (the others ran other tests)
        conn.execute(sa.delete(db.answers).where(db.answers.c.participant_id.in_(before)))
        conn.execute(sa.delete(db.trials).where(db.trials.c.participant_id.in_(before)))
        conn.execute(sa.delete(db.participants).where(db.participants.c.id.in_(before)))
    markdown = report(engine, name, directory).read_text()
    rows = {r["method"]: r for r in csv.DictReader(open(directory / "report" / "methods.csv"))}
    for method, (judged, shown) in expected.items():
        assert int(rows[method]["trials"]) == shown
        assert float(rows[method]["fooling_rate"]) == pytest.approx(judged / shown)
        assert float(rows[method]["ci_low"]) <= judged / shown <= float(rows[method]["ci_high"])
    assert int(rows["unet_bins"]["participants"]) == int(rows["regression_l2"]["participants"]) == 6
    assert "14 participants, 12 included, 2 excluded" in markdown
    assert "- incomplete: 1 session(s)" in markdown and "- too fast: 1 session(s)" in markdown
    statuses = {r["status"]: r["detail"] for r in csv.DictReader(open(directory / "report" / "participants.csv"))}
    assert statuses["incomplete"] == "4 of 10 answered" and statuses["too fast"].startswith("median 340 ms")
    images = list(csv.DictReader(open(directory / "report" / "images.csv")))
    assert sum(int(r["trials"]) for r in images) == sum(shown for _, shown in expected.values())
    assert (directory / "report" / "fooling_rates.png").stat().st_size > 5000


# -- the page in Chromium ----------------------------------------------------------------------
def test_participant_page_in_headless_chromium(study_checkpoints, tmp_path):
    """Practice with feedback, a reload mid-study resumes at the next trial, the pair is hidden after the
    display time (measured in the page), answers land in the database and in the report."""
    chromium_path()  # or skip (fail in .ci/run)
    from playwright.sync_api import sync_playwright

    directory = create_study("browser", study_checkpoints, settings_from(SMALL), root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    server, url = start(make_app(StudyService(engine, "browser", directory)))
    shown, feedback = [], []
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page()
            page.goto(url)
            assert "Click the one you think is real" in page.inner_text("#instructions")
            page.click("#start")
            for answered in range(10):
                if answered == 3:  # the participant reloads: same session, next trial
                    page.reload()
                    page.wait_for_selector("#start:enabled", timeout=30_000)  # the stored session is looked up
                    assert page.inner_text("#start") == "Continue (trial 4 of 10)"
                    page.click("#start")
                if answered == 2:  # practice over: the break screen
                    page.wait_for_selector("body[data-screen=break]", timeout=30_000)
                    page.click("#continue")
                page.wait_for_selector("#question.open", timeout=30_000)
                assert page.get_attribute("#pair", "data-state") == "hidden"
                assert not page.locator("#pair img").first.is_visible()
                shown.append(float(page.get_attribute("#pair", "data-shown-ms")))
                page.click("#choices button >> nth=0")  # "Left"
                if answered < 2:
                    page.wait_for_function("document.getElementById('feedback').textContent !== ''", timeout=10_000)
                    feedback.append(page.inner_text("#feedback"))
                    assert page.inner_text("#counter") == f"trial {answered + 1} of 10"  # the trial judged
            page.wait_for_selector("body[data-screen=thanks]", timeout=30_000)
            code = page.inner_text("#code")
            browser.close()
    finally:
        server.should_exit = True
    assert all(300 - 20 <= s <= 300 + 250 for s in shown), shown  # display_ms=300; slack for a busy 2-core CI
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.answers).order_by(db.answers.c.position)).all()
        sides = [t.fake_slot for t in conn.execute(sa.select(db.trials).order_by(db.trials.c.position))]
    assert [r.position for r in rows] == list(range(10)) and all(r.choice == 0 for r in rows)
    truths = ["left" if side == 1 else "right" for side in sides[:2]]  # the real side of each practice trial
    assert feedback == [("Right: " if t == "left" else "No: ") + f"the {t} one was real." for t in truths]
    assert [r.shown_ms for r in rows] == pytest.approx(shown, abs=0.1)
    with engine.connect() as conn:
        assert code == db.settings_of(db.study_row(conn, "browser"))["completion_code"]
    markdown = report(engine, "browser", directory).read_text()
    assert "1 participants, 1 included" in markdown
    fooled = sum(side == 0 for side in sides[2:])  # "Left" picked as real: fooled when the fake was left
    method = next(r for r in csv.DictReader(open(directory / "report" / "methods.csv"))
                  if not r["method"].startswith("real vs"))
    control = next(r for r in csv.DictReader(open(directory / "report" / "methods.csv"))
                   if r["method"].startswith("real vs"))
    assert int(method["trials"]) + int(control["trials"]) == 8
    assert round(float(method["fooling_rate"]) * 6 + float(control["fooling_rate"]) * 2) == fooled



def test_page_of_a_study_closed_mid_session_says_so_and_stays(study_checkpoints, tmp_path):
    """A participant from a platform (?PROLIFIC_PID=) answers once; the study is closed; the next answer shows the
    closed screen, which stays (the page fetches no trial again); the platform id is stored."""
    chromium_path()
    from playwright.sync_api import sync_playwright

    directory = create_study("closed", study_checkpoints[:1], settings_from(SMALL), root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    server, url = start(make_app(StudyService(engine, "closed", directory)))
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page()
            page.goto(url + "/?PROLIFIC_PID=60a1b2c3d4e5f6a7b8c9d0e1")
            page.click("#start")
            page.wait_for_selector("#question.open", timeout=30_000)
            page.click("#choices button >> nth=0")
            page.wait_for_selector("#question.open", timeout=30_000)
            assert study_main(["close", "name=closed", f"root={tmp_path}"]) == 0
            page.click("#choices button >> nth=0")
            page.wait_for_selector("body[data-screen=closed]", timeout=10_000)
            page.wait_for_timeout(1500)
            assert page.get_attribute("body", "data-screen") == "closed"
            assert "The study is closed" in page.inner_text("#closed")
            browser.close()
    finally:
        server.should_exit = True
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.participants.c.external_id)).scalars().all() == ["60a1b2c3d4e5f6a7b8c9d0e1"]
    assert count_answers(engine) == 1


def test_single_image_protocol_serves_one_image_and_scores_real_and_fake(study_checkpoints, tmp_path):
    """A participant who always recognises the image (by comparing its pixels with the real photo's) gets every
    practice trial right, a fooling rate of 0 for the method and 100% 'real' for the control photos."""
    from PIL import Image

    settings = settings_from({"protocol": "single", "practice": "2", "trials": "4", "catch_trials": "0"})
    directory = create_study("single", study_checkpoints[:1], settings, root=tmp_path)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    server, url = start(make_app(StudyService(engine, "single", directory, clock=FakeClock(step_ms=2000))))
    real = [np.asarray(Image.open(p), dtype=int) for p in sorted((directory / "images" / "real").glob("*.png"))]
    try:
        for _ in range(2):
            _, state = request(url + "/api/session", {})
            while not state["done"]:
                trial = state["trial"]
                assert len(trial["images"]) == 1
                code, png = request(url + trial["images"][0])
                assert code == 200 and png.startswith(b"\x89PNG")
                assert request(url + trial["images"][0][:-1] + "1")[0] == 400  # one slot only
                pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=int)
                is_real = any(np.abs(pixels - r).max() <= 1 for r in real)  # the dither moves a level at most
                code, state = request(url + "/api/answer", {"session": state["session"], "trial": trial["id"],
                                                            "choice": int(is_real), "response_ms": 500})
                assert code == 200 and state.get("correct", True)
    finally:
        server.should_exit = True
    report(engine, "single", directory)
    rows = {r["method"]: r for r in csv.DictReader(open(directory / "report" / "methods.csv"))}
    assert float(rows["regression_l2"]["fooling_rate"]) == 0 and int(rows["regression_l2"]["trials"]) == 8
    control = rows["real photos (control)"]
    assert float(control["fooling_rate"]) == 1 and int(control["trials"]) == 8
