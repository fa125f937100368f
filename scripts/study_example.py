"""The README's human-study example: a study whose participants are SIMULATED, screenshots of the page.

    python scripts/study_example.py CKPT [CKPT ...] [--out docs/results/study] [--participants 24]
        [--fooled 0.32,0.21] [--seed 0]

Creates a 2AFC study of the checkpoints (in a temporary root), serves it on 127.0.0.1, takes headless
Chromium screenshots of the participant's page (instructions, the pair on screen, the question,
practice feedback), then lets ``--participants`` simulated participants answer over HTTP, concurrently:
each is fooled by their method's fake with a probability drawn around that method's ``--fooled``
value (people differ), answers the control at random, and takes 400-1500 ms to respond; one more
leaves halfway and one clicks through in 60 ms (both must be excluded). Writes the report's files and
the screenshots to ``--out``. Nothing here measures a colourization: it exercises the instrument.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from colorlab.study import db
from colorlab.study.create import create_study
from colorlab.study.design import settings_from
from colorlab.study.report import report
from colorlab.study.server import StudyService, make_app
from colorlab.web import start


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def screenshots(url: str, out: Path) -> None:
    import shutil as sh

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=sh.which("chromium"), headless=True,
                                             args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 860, "height": 620})
        page.goto(url)
        page.screenshot(path=out / "study_welcome.png")
        page.click("#start")
        page.wait_for_selector("#pair[data-state=shown]", timeout=30_000)
        page.screenshot(path=out / "study_pair.png")
        page.wait_for_selector("#question.open", timeout=30_000)
        page.screenshot(path=out / "study_question.png")
        page.click("#choices button >> nth=0")
        page.wait_for_function("document.getElementById('feedback').textContent !== ''", timeout=10_000)
        page.screenshot(path=out / "study_feedback.png")
        browser.close()


def participant(url: str, p_fooled: dict[str, float], methods: dict[int, str], engine, seed: int,
                n_answers: int | None = None, response_ms: float | None = None) -> None:
    """One simulated participant over HTTP. To decide, it looks up its trial's side and method in the
    database (a person would look at the images)."""
    rng = np.random.default_rng(seed)
    state = call(url + "/api/session", {})
    person = None
    while not state["done"] and (n_answers is None or state["answered"] < n_answers):
        with engine.connect() as conn:
            trial = conn.execute(sa.select(db.trials).where(db.trials.c.id == state["trial"]["id"])).one()
        method = methods[trial.method_id]
        if person is None:  # this person's own susceptibility, around the method's rate
            person = float(np.clip(rng.normal(p_fooled.get(method, 0.5), 0.1), 0, 1))
        fooled = rng.random() < (0.5 if method == "real vs real (control)" else person)
        choice = trial.fake_slot if fooled else 1 - trial.fake_slot
        state = call(url + "/api/answer", {"session": state["session"], "trial": trial.id, "choice": choice,
                                           "response_ms": response_ms or float(rng.uniform(400, 1500)),
                                           "shown_ms": 1000.0 + float(rng.normal(8, 4))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results/study"))
    parser.add_argument("--participants", type=int, default=24)
    parser.add_argument("--fooled", default="0.32,0.21",
                        help="per checkpoint in the order given, comma-separated (default: Zhang 2016's published "
                             "rates for the full method and for L2 regression)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fooled = [float(x) for x in args.fooled.split(",")]
    root = Path(tempfile.mkdtemp(prefix="colorlab-study-example-"))
    directory = create_study("example", args.checkpoints, settings_from({}), root=root)
    engine = db.connect(f"sqlite:///{directory / 'study.db'}")
    service = StudyService(engine, "example", directory)
    methods = {m.id: m.name for m in service.methods.values()}
    in_checkpoint_order = sorted((m for m in service.methods.values() if not m.is_control), key=lambda m: m.id)
    p_fooled = dict(zip([m.name for m in in_checkpoint_order], fooled, strict=True))
    server, url = start(make_app(service), limit_concurrency=256)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        screenshots(url, args.out)
        with engine.begin() as conn:  # the screenshots' participant is not part of the example
            conn.execute(sa.delete(db.answers))
            conn.execute(sa.delete(db.trials))
            conn.execute(sa.delete(db.participants))
        threads = [threading.Thread(target=participant, args=(url, p_fooled, methods, engine, args.seed + i))
                   for i in range(args.participants)]
        threads.append(threading.Thread(target=participant, args=(url, p_fooled, methods, engine, 1000, 25)))
        threads.append(threading.Thread(target=participant, args=(url, p_fooled, methods, engine, 1001, None,
                                                                  60.0)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.should_exit = True
    markdown = report(engine, "example", directory)
    for name in ("report.md", "methods.csv", "images.csv", "fooling_rates.png"):
        shutil.copy(markdown.parent / name, args.out / name)
    print(markdown.read_text())
    print(f"wrote {args.out}/ (the study itself: {directory})")


if __name__ == "__main__":
    main()
