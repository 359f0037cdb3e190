"""The pre-registered claims: every comparison docs/RESULTS.md and the README may give a
verdict on, fixed before the runs that test them (issue 29). The verdict code
(scripts/verdicts.py ``ledger``, called by scripts/controlled.py and scripts/results.py)
reads ``get_claims()``; verdict words come only from the rules of ``rsc_jax/stats.py``.

Each claim:

- ``id``, ``text``: how the docs name it.
- ``a``, ``b``: run names of the sweep (``<coding>@min`` / ``@max`` / ``@matched``: the
  smallest, largest, Poisson-matched sigma of that coding at T = 4, for the 2026-11-25
  sweeps).
- ``metric``: per data set, the exact column: ``worst@E`` (per-image worst case over
  every l_inf attack at E/255), ``worst_common@E`` (over the attacks every model gets:
  the SNN-against-ANN claims), ``clean_attacked``, ``cert@r`` (correct and certified at
  l2 radius r). Budgets and radii are fixed here: r = 0.25 for every certified claim
  (no other radius is tested), eps 32/255 on digits and MNIST, 8/255 on CIFAR-10.
- ``direction``: ``>`` (A more accurate than B) or ``=`` (alike within ``margin``).
- ``margin``: the equivalence margin of ``=`` claims (accuracy units; 0.03 = 3 points, ours).
- ``family``: the Holm family (per data set): ``controlled`` (the controlled sweeps),
  ``matched`` (the matched-noise controls behind "noise, not spiking"), ``sweeps`` (the
  2026-11-25 sweeps), ``certify`` (the n = 100,000 certification), ``ersct``.
- ``all_of`` (composite claims): the ids whose verdicts decide it ("holds" only if all
  are "alike"; "does not hold" if one "does not hold"; "not run" if one did not run).
- ``test``: None where the claim is not a per-image accuracy (no pre-registered test;
  the ledger says "not run" and why).

Imports only the standard library.
"""

MARGIN = 0.03
CONTROLLED_DATASETS = ("digits", "mnist", "cifar10")
WORST = {"digits": "worst@32", "mnist": "worst@32", "cifar10": "worst@8"}
# SNN against ANN: the worst case over the attacks both get (``worst_case_common``: clean,
# APGD, PGD, FGSM, Square), not over the spiking-only families (surrogates, BPTR).
WORST_COMMON = {d: w.replace("worst@", "worst_common@") for d, w in WORST.items()}
CLEAN = {d: "clean_attacked" for d in CONTROLLED_DATASETS}
CERT = {d: "cert@0.25" for d in CONTROLLED_DATASETS}

# The ANN on Poisson coding that sees the mean of the same T = 4 frames as the T = 4 SNN
# (sweep.baselines, coding.ann_average): the matched control of the Poisson SNN.
ANN_POISSON_MATCHED = "ann_poisson_mean4"


def _c(id, text, a, b, metric, direction=">", family="controlled", datasets=CONTROLLED_DATASETS, **kw):
    return {"id": id, "text": text, "a": a, "b": b, "metric": dict(metric), "direction": direction,
            "margin": MARGIN, "family": family, "datasets": tuple(datasets), "all_of": None, "test": "paired",
            "note": "", **kw}


def get_claims():
    controlled = [
        _c("c1", "RSC-I (sigma 0.2) more robust than the Poisson SNN", "rsc1_sigma0.2_T4", "poisson_T4", WORST),
        _c("c2", "RSC-II (sigma 0.2) more robust than the direct SNN", "rsc2_sigma0.2_T4", "direct_T4", WORST),
        _c("c3", "the Poisson SNN more robust than the direct SNN", "poisson_T4", "direct_T4", WORST),
        _c("c4", "RSC-II (sigma 0.2) more robust than the clean ANN twin", "rsc2_sigma0.2_T4", "ann", WORST_COMMON),
        _c("c10", "the Poisson SNN more robust than the clean ANN twin", "poisson_T4", "ann", WORST_COMMON),
        _c("c11", "RSC-I: sigma 0.1 more accurate (clean) than sigma 0.2", "rsc1_sigma0.1_T4", "rsc1_sigma0.2_T4",
           CLEAN),
        _c("c12", "RSC-I: sigma 0.2 more robust than sigma 0.1", "rsc1_sigma0.2_T4", "rsc1_sigma0.1_T4", WORST),
        _c("c5", "RSC-II (sigma 0.2, T 4) more robust than an ANN trained and smoothed with Gaussian noise of its "
                 "time-averaged level (sigma / sqrt(T) = 0.1)", "rsc2_sigma0.2_T4", "ann_gauss_sigma0.1",
           WORST_COMMON),
        _c("c6", "RSC-I (sigma 0.2) more robust than an ANN trained and smoothed with the same Gaussian noise",
           "rsc1_sigma0.2_T4", "ann_gauss_sigma0.2", WORST_COMMON),
        _c("c7", "the Poisson SNN more robust than an ANN on the mean of the same 4 Poisson frames",
           "poisson_T4", ANN_POISSON_MATCHED, WORST_COMMON),
        _c("c8", "RSC-II (sigma 0.2) and RSC-I (sigma 0.1) alike under attack", "rsc2_sigma0.2_T4",
           "rsc1_sigma0.1_T4", WORST, "="),
        _c("c9", "RSC-II (sigma 0.2) and RSC-I (sigma 0.1) alike in clean accuracy", "rsc2_sigma0.2_T4",
           "rsc1_sigma0.1_T4", CLEAN, "="),
        _c("k1", "RSC-II (sigma 0.2) and RSC-I (sigma 0.1) alike in certified accuracy at l2 radius 0.25",
           "rsc2_sigma0.2_T4", "rsc1_sigma0.1_T4", CERT, "="),
        _c("k2", "RSC-II (sigma 0.2) certifies more than the Gaussian ANN of the same radius formula (sigma 0.1) "
                 "at l2 radius 0.25", "rsc2_sigma0.2_T4", "ann_gauss_sigma0.1", CERT),
    ]
    matched = [
        _c("n1", "the Poisson SNN and an ANN on the mean of the same 4 Poisson frames alike under attack",
           "poisson_T4", ANN_POISSON_MATCHED, WORST_COMMON, "=", family="matched"),
        _c("n2", "RSC-II (sigma 0.2, T 4) and an ANN smoothed with Gaussian noise 0.1 (its time-averaged level) "
                 "alike under attack", "rsc2_sigma0.2_T4", "ann_gauss_sigma0.1", WORST_COMMON, "=",
           family="matched"),
        _c("n3", "RSC-I (sigma 0.2, T 4; one draw shared by all steps, so 0.2 on the time average) and an ANN "
                 "smoothed with Gaussian noise 0.2 alike under attack", "rsc1_sigma0.2_T4", "ann_gauss_sigma0.2",
           WORST_COMMON, "=", family="matched"),
        _c("noise", "the robustness comes from the coding's noise, not from the spiking network (every SNN alike "
                    "its noise-matched ANN: n1, n2, n3)", "-", "-", {}, "=", family="matched",
           all_of=("n1", "n2", "n3"), test=None),
    ]
    sweeps_w = {d: "worst" for d in CONTROLLED_DATASETS}
    sweeps_c = {d: "clean_attacked" for d in CONTROLLED_DATASETS}
    sweeps = [_c(*x, family="sweeps") for x in (
        ("1a", "claim 1: Poisson SNN more robust than the direct SNN", "poisson_T4", "direct_T4", sweeps_w),
        ("1b", "claim 1: Poisson SNN more robust than the ANN twin", "poisson_T4", "ann", sweeps_w),
        ("2a", "claim 2: RSC-II at the Poisson-matched sigma as robust as Poisson", "rsc2@matched", "poisson_T4",
         sweeps_w, "="),
        ("2b", "claim 2: RSC-II at the Poisson-matched sigma as accurate (clean) as Poisson", "rsc2@matched",
         "poisson_T4", sweeps_c, "="),
        ("3a", "claim 3: RSC-I at the smallest sigma more accurate (clean) than at the largest", "rsc1@min",
         "rsc1@max", sweeps_c),
        ("3b", "claim 3: RSC-I at the largest sigma more robust than at the smallest", "rsc1@max", "rsc1@min",
         sweeps_w),
        ("3c", "claim 3: RSC-II at the smallest sigma more accurate (clean) than at the largest", "rsc2@min",
         "rsc2@max", sweeps_c),
        ("3d", "claim 3: RSC-II at the largest sigma more robust than at the smallest", "rsc2@max", "rsc2@min",
         sweeps_w),
        ("4a", "claim 4: RSC-II at the Poisson-matched sigma more robust than the ANN twin", "rsc2@matched", "ann",
         sweeps_w),
        ("4b", "claim 4: RSC-II at sigma 0.2 more robust than the ANN twin", "rsc2_sigma0.2_T4", "ann", sweeps_w),
        ("4c", "claim 4: RSC-I at sigma 0.2 more robust than the ANN twin", "rsc1_sigma0.2_T4", "ann", sweeps_w),
        ("h1", "headline: RSC-I at sigma 0.2 more robust than Poisson", "rsc1_sigma0.2_T4", "poisson_T4", sweeps_w),
        ("h2", "headline: RSC-II at sigma 0.2 more robust than the direct SNN", "rsc2_sigma0.2_T4", "direct_T4",
         sweeps_w),
    )]
    other = [
        _c("k2-100k", "RSC-II (sigma 0.2) certifies more than the Gaussian ANN 0.1 at l2 radius 0.25, n = 100,000 "
                      "(seed 0 exports; r = 0.25 pre-declared, no other radius tested)", "rsc2_sigma0.2_T4",
           "ann_gauss_sigma0.1", {"digits_cert100k": "cert@0.25"}, family="certify", datasets=("digits_cert100k",)),
        _c("5", "claim 5: E-RSCT reaches the robustness of plain training in fewer training steps (from the same "
                "initialisation)", "ersct", "plain_from_teacher", {}, family="ersct", datasets=("digits", "mnist"),
           test=None, note="steps to a target accuracy is not a per-image accuracy: no pre-registered test "
                           "(docs/ERSCT.md gives the per-seed steps)"),
    ]
    return controlled + matched + sweeps + other
