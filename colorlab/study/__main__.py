"""A human study of realism: real-vs-fake trials, stored in a database, reported with 95% intervals.

    python -m colorlab.study create name=NAME ckpt=A.ckpt [ckpt=B.ckpt ...] [protocol=2afc|single]
        [display_ms=1000] [practice=10] [trials=40] [control_trials=4] [catch_trials=4] [min_catch_percent=75]
        [completion_code=CODE] [n_images=...] [seed=0] [min_response_ms=150] [data=GROUP] [data.KEY=VALUE ...]
        [root=studies] [db=URL]
    python -m colorlab.study serve name=NAME [host=127.0.0.1] [port=8770] [token=SECRET] [workers=1]
        [allowed_hosts=NAME,...] [sessions_per_hour=4] [root=studies] [db=URL]
    python -m colorlab.study report name=NAME [root=studies] [db=URL]
    python -m colorlab.study close name=NAME [root=studies] [db=URL]

``create`` colourizes held-out images with every checkpoint and stores the design in ``root/NAME``
(SQLite ``study.db`` there, or the database ``db=`` names, e.g. postgresql://user:pw@host/db; the
password is never written to disk, so give db= again to serve/report/close). ``serve`` runs the
participants' page (share http://HOST:PORT/?token=SECRET when a token is set, with
``&PROLIFIC_PID={{%PROLIFIC_PID%}}`` or ``&pid=ID`` from a crowdsourcing platform; with PostgreSQL,
``workers=N`` processes share the study; ``allowed_hosts`` adds names to 127.0.0.1 and localhost;
``sessions_per_hour`` caps the new sessions of one client address, see docs/study.md). ``report`` writes
``root/NAME/report/``. ``close`` ends the study: later answers are refused.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from colorlab.cli import error
from colorlab.config import usage_exit_code

COMMON = ("name", "root", "db")
OPTIONS = {
    "create": COMMON + ("ckpt", "protocol", "display_ms", "practice", "trials", "control_trials", "catch_trials",
                        "min_catch_percent", "completion_code", "n_images", "seed", "min_response_ms", "data"),
    "serve": COMMON + ("host", "port", "token", "workers", "allowed_hosts", "sessions_per_hour"),
    "report": COMMON,
    "close": COMMON,
}


def parse(argv: list[str]) -> tuple[str, dict[str, str], list[str], list[str]]:
    """(command, options, checkpoints, data overrides); ValueError naming what is wrong and what is valid."""
    if not argv or argv[0] not in OPTIONS:
        raise ValueError(f"the first argument is the command: {', '.join(OPTIONS)}. Got {argv[:1]}")
    command, options, checkpoints, data_overrides = argv[0], {}, [], []
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"arguments are key=value. Got {arg!r}")
        if key == "ckpt" and command == "create":
            checkpoints.append(value)
        elif (key == "data" or key.startswith("data.")) and command == "create":
            data_overrides.append(arg)
        elif key not in OPTIONS[command]:
            raise ValueError(f"unknown option {key!r} for {command}; options: "
                             + ", ".join(f"{k}=..." for k in OPTIONS[command]))
        elif key in options:
            raise ValueError(f"{key}= is given twice")
        else:
            options[key] = value
    if "name" not in options:
        raise ValueError(f"{command} needs name=NAME")
    return command, options, checkpoints, data_overrides


def open_study(options: dict[str, str]):
    """(engine, directory) of an existing study; the database from db= or from study.json."""
    from colorlab.study import db
    from colorlab.study.create import study_directory

    directory = study_directory(Path(options.get("root", "studies")), options["name"])
    described = directory / "study.json"
    if not described.is_file():
        raise ValueError(f"no study {options['name']!r} in {directory.parent}/ (no {described}); create it first, "
                         "or give root=")
    url = options.get("db") or json.loads(described.read_text())["db"] or f"sqlite:///{directory / 'study.db'}"
    if "***" in url:
        raise ValueError(f"this study's database is {url}: give db=URL with its password")
    return db.connect(url), directory, url


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        command, options, checkpoints, data_overrides = parse(argv)
        if command == "create":
            from colorlab.study.create import create_study
            from colorlab.study.design import settings_from

            settings = settings_from(options)
            directory = create_study(options["name"], [Path(c) for c in checkpoints], settings,
                                     Path(options.get("root", "studies")), options.get("db"), data_overrides)
            print(f"colorlab.study: created {directory} ({settings['protocol']}, {len(checkpoints)} method(s) + "
                  f"control, {settings['n_images']} images); serve it with: python -m colorlab.study serve "
                  f"name={options['name']}")
            return 0
        engine, directory, url = open_study(options)
        if command == "report":
            from colorlab.study.report import report

            path = report(engine, options["name"], directory)
            print(path.read_text(), end="")
            print(f"colorlab.study: wrote {path.parent}/")
            return 0
        if command == "close":
            import sqlalchemy as sa

            from colorlab.study import db

            with engine.begin() as conn:
                done = conn.execute(sa.update(db.studies).where(db.studies.c.name == options["name"],
                                                                db.studies.c.closed_at.is_(None))
                                    .values(closed_at=db.now())).rowcount
            print(f"colorlab.study: {options['name']} " + ("closed; answers are no longer taken" if done
                                                           else "was closed already"))
            return 0
        return serve(options, engine, directory, url)
    except ValueError as e:
        return error("study", e)


def serve(options: dict[str, str], engine, directory: Path, url: str) -> int:
    from colorlab import web
    from colorlab.study.server import ENV, MAX_REQUESTS, SESSIONS_PER_HOUR, StudyService, make_app

    host = options.get("host", "127.0.0.1")
    port, workers = int(options.get("port", 8770)), int(options.get("workers", 1))
    if not 0 <= port <= 65535 or not 1 <= workers <= 64:
        raise ValueError(f"port must be in 0..65535 and workers in 1..64. Got port={port}, workers={workers}")
    if host in ("0.0.0.0", "::") and "allowed_hosts" not in options:
        raise ValueError(f"host={host} listens on every interface: say which host names participants will type "
                         "with allowed_hosts=study.example.org,192.0.2.7 (other Host headers get 403)")
    allowed = list(web.local_hosts(options.get("allowed_hosts", ""), host))
    per_hour = options.get("sessions_per_hour", str(SESSIONS_PER_HOUR))
    if not per_hour.isascii() or not per_hour.isdigit() or not 1 <= int(per_hour) <= 1_000_000:
        raise ValueError(f"sessions_per_hour must be a whole number in 1..1000000. Got {per_hour!r}")
    token = options.get("token")
    service = StudyService(engine, options["name"], directory, int(per_hour))  # checks the study opens before serving
    link = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    print(f"colorlab.study: {options['name']} at {link} ({workers} worker(s)); Ctrl-C stops it")
    if workers == 1:
        web.serve(make_app(service, token, allowed), host, port, limit_concurrency=MAX_REQUESTS)
    else:
        os.environ[ENV] = json.dumps({"db": url, "name": options["name"], "directory": str(directory.resolve()),
                                      "token": token, "allowed_hosts": allowed, "sessions_per_hour": int(per_hour)})
        web.serve_workers("colorlab.study.server:app_from_env", workers, host, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
