"""The study's protocol settings and each participant's trial list.

Protocols:
  2afc    Zhang et al. 2016: the real photo and a recolourized one side by side (random sides),
          "which one is real?". choice = the side picked as real (0 left, 1 right).
  single  seed 004: one image, "real or fake?". choice = 1 for "real", 0 for "fake".

A participant sees one method (Zhang: one algorithm per session): ``practice`` trials with feedback,
then ``trials`` test trials of that method mixed with ``control_trials`` control trials, each image at
most once. Controls: in 2afc the real photo on both sides (the "fake" side is drawn at random, so the
control's rate is 50% by construction: a check on side bias); in single the real photo alone (the
rate at which real photos are judged real: the ceiling a method can reach).

Catch trials (``catch_trials`` per participant, among the test trials): the real photo against its
hue-rotated copy (2afc), or the hue-rotated copy alone (single), an obviously wrong image that anyone
looking picks out; a participant right on fewer than ``min_catch_percent`` of them is excluded. Their
images are ``images/catch/``; they are scored for no method.

A trial's "method image" is judged real when (2afc) choice == fake_slot, (single) choice == 1; the
fooling rate of a method is how often that happens on its test trials.
"""

from __future__ import annotations

import re
import secrets

import numpy as np

PROTOCOLS = ("2afc", "single")
LIMITS = {"display_ms": (50, 60_000), "practice": (0, 100), "trials": (1, 1000), "control_trials": (0, 1000),
          "n_images": (1, 100_000), "seed": (0, 2**31 - 1), "min_response_ms": (0, 10_000),
          "catch_trials": (0, 1000), "min_catch_percent": (0, 100)}
INT_SETTINGS = ("display_ms", "practice", "trials", "control_trials", "catch_trials", "min_catch_percent",
                "n_images", "seed", "min_response_ms")


def settings_from(options: dict[str, str]) -> dict:
    """Validated settings from command-line strings; ValueError naming the key and what is valid."""
    protocol = options.get("protocol", "2afc")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}. Got {protocol!r}")
    defaults = {"display_ms": 1000, "practice": 10, "trials": 40, "seed": 0, "min_response_ms": 150,
                "catch_trials": 4, "min_catch_percent": 75}
    settings: dict = {"protocol": protocol}
    for key in INT_SETTINGS:
        raw = options.get(key)
        if raw is None:
            settings[key] = defaults.get(key)
            continue
        try:
            if not raw.isascii():
                raise ValueError
            value = int(raw)
        except ValueError:
            raise ValueError(f"{key} must be a whole number. Got {raw!r}") from None
        low, high = LIMITS[key]
        if not low <= value <= high:
            raise ValueError(f"{key} must be in {low}..{high}. Got {value}")
        settings[key] = value
    code = options.get("completion_code") or secrets.token_hex(4).upper()
    if not re.fullmatch(r"[A-Za-z0-9]{4,32}", code):
        raise ValueError(f"completion_code must be 4-32 letters or digits (as a platform such as Prolific takes "
                         f"it). Got {code!r}")
    settings["completion_code"] = code
    if settings["control_trials"] is None:  # single: as many real photos as fakes, as seed 004 mixed them
        settings["control_trials"] = 4 if protocol == "2afc" else settings["trials"]
    needed = settings["practice"] + settings["trials"] + settings["control_trials"] + settings["catch_trials"]
    if settings["n_images"] is None:
        settings["n_images"] = needed
    elif settings["n_images"] < needed:
        raise ValueError(f"n_images={settings['n_images']} is fewer than one participant's trials (practice "
                         f"{settings['practice']} + trials {settings['trials']} + control_trials "
                         f"{settings['control_trials']} + catch_trials {settings['catch_trials']} = {needed}); "
                         "no image is shown twice to a participant")
    return settings


def trial_list(settings: dict, method_id: int, control_id: int, participant_number: int) -> list[dict]:
    """The trials of one participant, deterministic in (settings['seed'], participant_number):
    [{position, practice, catch, image_idx, method_id, fake_slot}] with practice first (catch trials carry
    the participant's method_id, and are scored for none)."""
    rng = np.random.default_rng([settings["seed"], participant_number])
    order = rng.permutation(settings["n_images"]).tolist()
    n_practice, n_trials, n_control = settings["practice"], settings["trials"], settings["control_trials"]
    n_catch = settings.get("catch_trials", 0)
    practice = [(image, method_id, False) for image in order[:n_practice]]
    first = n_practice + n_trials
    test = [(image, method_id, False) for image in order[n_practice:first]]
    test += [(image, control_id, False) for image in order[first:first + n_control]]
    test += [(image, method_id, True) for image in order[first + n_control:first + n_control + n_catch]]
    test = [test[i] for i in rng.permutation(len(test))]
    rows = []
    for position, (image, method, catch) in enumerate(practice + test):
        if settings["protocol"] == "2afc" or position < n_practice:
            fake_slot = int(rng.integers(2))  # 2afc: the fake's side; single practice: 1 = the fake is shown
        else:  # single test: the method's fake or a catch image, or the control's real photo
            fake_slot = int(method != control_id)
        rows.append({"position": position, "practice": position < n_practice, "catch": catch, "image_idx": image,
                     "method_id": method, "fake_slot": fake_slot})
    return rows


def judged_real(protocol: str, choice: int, fake_slot: int) -> bool:
    """Whether the trial's method image (the fake, or the control's designated real) was judged real."""
    return choice == fake_slot if protocol == "2afc" else choice == 1


def correct(protocol: str, choice: int, fake_slot: int) -> bool:
    """Practice feedback: 2afc, the real side was picked; single, the shown image was named rightly."""
    return choice != fake_slot if protocol == "2afc" else choice == 1 - fake_slot


def shown_images(protocol: str, fake_slot: int, is_control: bool, catch: bool = False) -> list[str]:
    """What each slot shows: 'real', 'fake' or 'catch' (2afc: two slots; single: one)."""
    fake = "catch" if catch else "fake"
    if protocol == "2afc":
        return ["real", "real"] if is_control else [fake if slot == fake_slot else "real" for slot in (0, 1)]
    return [fake if fake_slot == 1 and not is_control else "real"]
