"""``report``: fooling rates with 95% confidence intervals, participants as the unit.

A method's fooling rate is the share of its test trials (practice excluded) in which its image was
judged real (see colorlab.study.design). Trials of one participant are not independent (people
differ in how easily they are fooled), so the interval is a bootstrap over participants: resample
participants with replacement, pool their trials, read percentiles of the pooled rate, widened for
small samples (expanded percentile interval, see ``bootstrap_rate``). Catch trials are scored for no
method. Included: complete sessions that loaded every test trial's images, whose median response time
measured by the server (first image byte sent -> answer received, less display_ms) is at least
``min_response_ms`` (faster is answering without looking; the page's own measure can be forged), and
that got at least ``min_catch_percent`` of their catch trials right. The report gives one line per
exclusion reason; ``participants.csv`` has every session's status.

The page's times (shown_ms + response_ms) are kept beside the server's; an answer is flagged in
``trials.csv`` when the page claims more time than the server saw pass (by over DISAGREE_MS).

Writes ``DIR/report/report.md``, ``methods.csv``, ``images.csv``, ``participants.csv``, ``trials.csv``
and ``fooling_rates.png``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from colorlab.study import db
from colorlab.study.design import correct, judged_real

DISAGREE_MS = 250.0  # network and decoding leave the page's times short of the server's, never above by more


def bootstrap_rate(judged: np.ndarray, counts: np.ndarray, n_boot: int = 4000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """Pooled rate sum(judged) / sum(counts) over participants, and its expanded-percentile bootstrap
    interval (NaN with fewer than 2 participants).

    judged, counts: (P,) per participant, the trials judged real and the trials shown. The plain
    percentile interval is too narrow with few participants (88-93% coverage at P = 10-20 in
    tests/test_study.py's simulation); Hesterberg's expanded percentile interval (2015, "What teachers
    should know about the bootstrap", Am. Stat. 69(4)) reads the bootstrap quantiles at alpha' with
    z_{alpha'/2} = sqrt(P / (P - 1)) t_{alpha/2, P-1}, which restores ~95% there."""
    from scipy import stats

    judged, counts = np.asarray(judged, float), np.asarray(counts, float)
    n_people = len(counts)
    if counts.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    rate = judged.sum() / counts.sum()
    if n_people < 2:
        return float(rate), float("nan"), float("nan")
    z = np.sqrt(n_people / (n_people - 1)) * stats.t.ppf(1 - (1 - level) / 2, n_people - 1)
    tail = float(stats.norm.sf(z))  # alpha' / 2
    picks = np.random.default_rng(seed).integers(n_people, size=(n_boot, n_people))  # (n_boot, P)
    totals = counts[picks].sum(1)
    rates = judged[picks].sum(1)[totals > 0] / totals[totals > 0]
    low, high = np.quantile(rates, [tail, 1 - tail])
    return float(rate), float(low), float(high)


def load_trials(conn, study) -> list[dict]:
    """Every answered trial of the study: participant, method, image, practice, judged_real, times."""
    p, t, a, m, i = db.participants, db.trials, db.answers, db.methods, db.images
    query = (sa.select(p.c.id.label("participant"), p.c.external_id, m.c.name.label("method"), m.c.is_control,
                       i.c.stem, t.c.position, t.c.practice, t.c.catch, t.c.fake_slot, a.c.choice, a.c.response_ms,
                       a.c.shown_ms, a.c.server_ms)
             .select_from(a.join(t, a.c.trial_id == t.c.id).join(p, t.c.participant_id == p.c.id)
                          .join(m, t.c.method_id == m.c.id).join(i, t.c.image_id == i.c.id))
             .where(p.c.study_id == study.id).order_by(p.c.id, a.c.position))
    rows = []
    for row in conn.execute(query):
        page_ms = (row.shown_ms or 0) + row.response_ms
        rows.append({**row._asdict(), "judged_real": judged_real(study.protocol, row.choice, row.fake_slot),
                     "correct": correct(study.protocol, row.choice, row.fake_slot),
                     "times_disagree": row.server_ms is None or page_ms > row.server_ms + DISAGREE_MS})
    return rows


def participant_status(conn, study, trials: list[dict], settings: dict) -> dict[int, tuple[str, str]]:
    """participant id -> (reason, detail): ('included', ''), ('incomplete', 'k of n answered'),
    ('images not loaded', ...), ('too fast', 'median N ms'), ('failed catch trials', 'k of n right')."""
    floor = settings["display_ms"] + settings["min_response_ms"]
    need = settings.get("min_catch_percent", 0) / 100
    status = {}
    for pid, n_trials in conn.execute(sa.select(db.participants.c.id, db.participants.c.n_trials)
                                      .where(db.participants.c.study_id == study.id)):
        own = [t for t in trials if t["participant"] == pid]
        test = [t for t in own if not t["practice"]]
        catch = [t["correct"] for t in test if t["catch"]]
        unloaded = sum(t["server_ms"] is None for t in test)
        if len(own) < n_trials:
            status[pid] = ("incomplete", f"{len(own)} of {n_trials} answered")
        elif unloaded:
            status[pid] = ("images not loaded", f"{unloaded} test trial(s) answered before their images were sent")
        elif test and np.median([t["server_ms"] for t in test]) < floor:
            median = np.median([t["server_ms"] for t in test])
            status[pid] = ("too fast", f"median {median:.0f} ms from the images to the answer")
        elif catch and np.mean(catch) < need:
            status[pid] = ("failed catch trials", f"{sum(catch)} of {len(catch)} right")
        else:
            status[pid] = ("included", "")
    return status


REASONS = {"incomplete": "left before the last trial",
           "images not loaded": "answered trials whose images the server never sent",
           "too fast": "median time from the trial's images to the answer, measured by the server, under "
                       "display_ms + min_response_ms ({floor} ms)",
           "failed catch trials": "picked the hue-rotated image (or called it real) in over {miss}% of catch trials"}


def summarise(trials: list[dict], status: dict[int, str], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(per-method rows, per-image rows) over included participants' test trials."""
    scored = [t for t in trials if not t["practice"] and not t["catch"]
              and status.get(t["participant"], ("",))[0] == "included"]
    rows = []
    controls = {t["method"] for t in trials if t["is_control"]}
    for method in sorted({t["method"] for t in scored}, key=lambda name: (name in controls, name)):
        own = [t for t in scored if t["method"] == method]
        people = sorted({t["participant"] for t in own})
        judged = np.array([sum(t["judged_real"] for t in own if t["participant"] == p) for p in people])
        counts = np.array([sum(1 for t in own if t["participant"] == p) for p in people])
        rate, low, high = bootstrap_rate(judged, counts, seed=seed)
        rows.append({"method": method, "control": method in controls, "fooling_rate": rate, "ci_low": low,
                     "ci_high": high, "participants": len(people), "trials": int(counts.sum())})
    per_image = {}
    for t in scored:
        entry = per_image.setdefault((t["method"], t["stem"]), [0, 0])
        entry[0] += t["judged_real"]
        entry[1] += 1
    images = [{"method": m, "image": s, "judged_real": k, "trials": n, "rate": k / n}
              for (m, s), (k, n) in sorted(per_image.items())]
    return rows, images


def plot(rows: list[dict], protocol: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(rows), 3.4))
    x = np.arange(len(rows))
    rates = np.array([r["fooling_rate"] for r in rows]) * 100
    errors = np.nan_to_num(np.array([[r["fooling_rate"] - r["ci_low"], r["ci_high"] - r["fooling_rate"]]
                                     for r in rows]).T * 100)  # no interval (one participant): no bar
    ax.bar(x, rates, yerr=errors, capsize=5, color=["#888" if r["control"] else "#3a7" for r in rows])
    if protocol == "2afc":
        ax.axhline(50, color="k", lw=0.8, ls="--", label="chance (50%)")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(x, [f"{r['method']}\n(n={r['participants']})" for r in rows], fontsize=8)
    ax.set_ylabel("judged real (%)")
    ax.set_ylim(0, 100)
    ax.set_title("fooling rate, 95% bootstrap interval over participants", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(engine: sa.Engine, name: str, directory: Path) -> Path:
    """Write the report files into ``directory/report``; returns the markdown's path."""
    with engine.connect() as conn:
        study = db.study_row(conn, name)
        if study is None:
            raise ValueError(f"no study named {name!r} in {db.redacted(str(engine.url))}")
        settings = db.settings_of(study)
        trials = load_trials(conn, study)
        status = participant_status(conn, study, trials, settings)
        external = dict(conn.execute(sa.select(db.participants.c.id, db.participants.c.external_id)
                                     .where(db.participants.c.study_id == study.id)).all())
    rows, images = summarise(trials, status, seed=settings["seed"])
    out = directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "methods.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["method", "control", "fooling_rate", "ci_low", "ci_high", "participants",
                                    "trials"])
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "images.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["method", "image", "judged_real", "trials", "rate"])
        writer.writeheader()
        writer.writerows(images)
    with open(out / "participants.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["participant", "pid", "status", "detail"])
        writer.writerows([p, external.get(p) or "", *status[p]] for p in sorted(status))
    columns = ["participant", "position", "practice", "catch", "method", "image", "choice", "judged_real",
               "server_ms", "response_ms", "shown_ms", "times_disagree"]
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**t, "image": t["stem"]} for t in trials)
    if rows:
        plot(rows, study.protocol, out / "fooling_rates.png")
    included = [p for p, s in status.items() if s[0] == "included"]
    excluded: dict[str, int] = {}
    for reason, _ in status.values():
        if reason != "included":
            excluded[reason] = excluded.get(reason, 0) + 1
    disagree = [t for t in trials if t["times_disagree"] and t["server_ms"] is not None]
    shown = np.array([t["shown_ms"] for t in trials if t["shown_ms"] is not None])
    question = "which of two is real (2AFC)" if study.protocol == "2afc" else "real or fake (single image)"
    lines = [f"# Study {name}: {question}", "",
             f"{len(status)} participants, {len(included)} included, {len(status) - len(included)} excluded; "
             f"{sum(r['trials'] for r in rows)} scored trials. Display time {settings['display_ms']} ms; "
             f"{settings['practice']} practice + {settings['trials']} test + {settings['control_trials']} control "
             f"+ {settings.get('catch_trials', 0)} catch trials per participant.", ""]
    if shown.size:
        lines += [f"Display time measured in the page: median {np.median(shown):.0f} ms, 5-95% "
                  f"{np.percentile(shown, 5):.0f}-{np.percentile(shown, 95):.0f} ms.", ""]
    lines += ["| method | fooling rate | 95% CI | participants | trials |", "|---|---|---|---|---|"]
    for r in rows:
        interval = (f"{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}%" if np.isfinite(r["ci_low"])
                    else "n/a (needs 2+ participants)")
        lines.append(f"| {r['method']} | {100 * r['fooling_rate']:.1f}% | {interval} | {r['participants']} "
                     f"| {r['trials']} |")
    control_note = ("The control shows the real photo on both sides: 50% means no side bias." if study.protocol
                    == "2afc" else "The control is the real photo shown alone: how often real photos are "
                    "judged real, the ceiling for a method.")
    lines += ["", f"Fooling rate: how often the method's image was judged real. {control_note} Intervals: "
              "expanded-percentile bootstrap over participants (4000 resamples; none with fewer than 2).", ""]
    if excluded:
        values = {"floor": settings["display_ms"] + settings["min_response_ms"],
                  "miss": 100 - settings.get("min_catch_percent", 0)}
        lines += ["Excluded sessions, by reason (each session under its first reason; participants.csv lists "
                  "them):", ""]
        lines += [f"- {reason}: {n} session(s), {REASONS[reason].format(**values)}" for reason, n in excluded.items()]
        lines.append("")
    if disagree:
        lines += [f"{len(disagree)} answer(s) of {len({t['participant'] for t in disagree})} session(s) claim more "
                  f"time in the page than the server saw pass (by over {DISAGREE_MS:g} ms): flagged in trials.csv.",
                  ""]
    lines += ["Files: methods.csv, images.csv (per-image rates), participants.csv (status and platform id of "
              "every session), trials.csv (every answer, the server's and the page's times), fooling_rates.png.", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
