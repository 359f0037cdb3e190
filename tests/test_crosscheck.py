"""scripts/crosscheck_torchattacks.py: the verdict rule (pure) and the torch wrapper of a
classifier (forward and gradient equal JAX's for the same coding draw).

The torch parts need torch and torchattacks, which are not package dependencies (the CI
has neither, so those tests skip there); run them with a Python that has both, e.g.
``/work/xcheck-venv/bin/python -m pytest -q -n 0 tests/test_crosscheck.py`` (docs/CROSSCHECK.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import load_script, tiny_spiking_classifier

xc = load_script("crosscheck_torchattacks")

NO_TORCH = "torch/torchattacks are not installed (not package dependencies; the CI has neither): see docs/CROSSCHECK.md"


# --------------------------------------------------------------------------- verdict (no torch)

def test_verdict_rule_with_hand_numbers():
    """Consistent iff ours <= theirs + (hi - lo) / 2 of our 95 % interval."""
    v = xc.verdict(0.60, (0.50, 0.70), 0.55)       # h = 0.10: allowed up to 0.65
    assert v["verdict"] == "consistent" and v["half_width"] == pytest.approx(0.10)
    assert v["allowed"] == pytest.approx(0.65) and v["gap"] == pytest.approx(0.05)
    assert xc.verdict(0.65, (0.50, 0.70), 0.55)["verdict"] == "consistent"    # exactly at the bound
    w = xc.verdict(0.60, (0.50, 0.70), 0.49)       # 0.60 > 0.59
    assert w["verdict"] == "ours is weaker" and w["gap"] == pytest.approx(0.11)
    assert xc.verdict(0.30, (0.25, 0.35), 0.90)["verdict"] == "consistent"    # theirs weaker: fine
    # the demo's numbers: 0.9648 [0.9343, 0.9838] (h = 0.0247): 0.945 passes, 0.935 does not
    assert xc.verdict(0.96484375, (0.934313785816128, 0.983800589139043), 0.945)["verdict"] == "consistent"
    assert xc.verdict(0.96484375, (0.934313785816128, 0.983800589139043), 0.935)["verdict"] == "ours is weaker"


@pytest.mark.parametrize("args", [(0.5, (0.6, 0.4), 0.5), (1.2, (0.4, 0.6), 0.5), (0.5, (0.4, 0.6), -0.1)])
def test_verdict_refuses_nonsense(args):
    with pytest.raises(ValueError, match="not allowed"):
        xc.verdict(*args)


def _entry(correct: np.ndarray, **extra):
    from rsc_jax import metrics
    k, n = int(correct.sum()), correct.size
    return {"eps": 8 / 255, "attacks": ["pgd-7", "apgd-ce"], "acc_avg": k / n,
            "ci95_avg": list(metrics.binomial_interval(k, n)), **extra}


def test_compare_per_example_union_and_mcnemar():
    ours = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    theirs = {"apgd-ce": np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 1], bool),
              "square": np.array([1, 1, 0, 1, 0, 1, 1, 1, 1, 1], bool)}
    packed = "".join("1" if c else "0" for c in ours)
    c = xc.compare(_entry(ours, correct_avg=packed), theirs, xc.unpack_correct(packed))
    assert c["theirs"]["worst"]["correct"] == 7                 # 1, 2 and 4 broken by one of theirs
    assert c["theirs"]["per_attack"]["square"]["correct"] == 8
    assert c["union"]["correct"] == 6                           # robust under both: 0, 3, 6, 7, 8, 9
    assert c["mcnemar"]["b"] == 2 and c["mcnemar"]["c"] == 1    # ours right / theirs wrong: 1, 2; reverse: 5
    assert c["verdict"] == "consistent"                         # 0.8 vs 0.7 within h of n = 10
    lo, hi = c["ours"]["ci95_avg"]
    assert c["check"]["half_width"] == pytest.approx((hi - lo) / 2)


def test_compare_takes_a_float32_accuracy_and_refuses_a_wrong_count():
    """robustness.json stores acc_avg as a float32 (214/360 -> 0.5944444537...): equal
    counts pass; a string that disagrees by one example does not."""
    ours = np.zeros(360, bool)
    ours[:214] = True
    packed = "".join("1" if c else "0" for c in ours)
    entry = _entry(ours, correct_avg=packed, acc_avg=float(np.float32(214 / 360)))
    assert entry["acc_avg"] != 214 / 360
    assert xc.compare(entry, {"apgd-ce": ours}, ours)["mcnemar"]["b"] == 0
    with pytest.raises(ValueError, match="does not match its acc_avg"):
        xc.compare(dict(entry, acc_avg=float(np.float32(213 / 360))), {"apgd-ce": ours}, ours)


def test_compare_without_per_example_strings_says_so():
    ours = np.ones(20, bool)
    c = xc.compare(_entry(ours), {"apgd-ce": np.zeros(20, bool)}, None)
    assert c["union"] is None and c["mcnemar"] is None and "no per-example correct_avg" in c["per_example_note"]
    assert c["verdict"] == "ours is weaker"                     # 1.0 > 0 + h


def test_entry_judge_reads_the_stream_the_worst_case_was_judged_on():
    """The cascade's worst case is judged on the fresh report stream: the cross-check judges
    torchattacks' points on the same stream and draws; older reports: the judge stream."""
    from rsc_jax.evaluators import cascade
    assert xc.entry_judge({"judge": {"stream": cascade.STREAM_REPORT, "draws": 10}}, 4) == (3, 10)
    assert xc.entry_judge({"eps": 8 / 255}, 4) == (xc.STREAM_JUDGE, 4) == (cascade.STREAM_JUDGE, 4)
    assert xc.STREAM_CRAFT not in (cascade.STREAM_ATTACK, cascade.STREAM_JUDGE, cascade.STREAM_SELECT,
                                   cascade.STREAM_REPORT)


def test_ours_per_example_from_rows_when_the_entry_lacks_it():
    """Older worst-case entries without correct_avg: the minimum over the rows they name."""
    entry = {"eps": 8 / 255, "attacks": ["pgd-7", "apgd-ce"], "acc_avg": 0.5, "ci95_avg": [0.0, 1.0]}
    rows = [{"name": "pgd-7", "norm": "linf", "eps": 8 / 255, "correct_avg": "1101"},
            {"name": "apgd-ce", "norm": "linf", "eps": 8 / 255, "correct_avg": "1011"},
            {"name": "apgd-ce", "norm": "linf", "eps": 4 / 255, "correct_avg": "0000"}]   # other eps: ignored
    np.testing.assert_array_equal(xc.ours_per_example({"results": rows}, entry), [1, 0, 0, 1])
    assert xc.ours_per_example({"results": [dict(r, correct_avg=None) for r in rows]}, entry) is None
    np.testing.assert_array_equal(xc.ours_per_example({}, dict(entry, correct_avg="0110")), [0, 1, 1, 0])


def test_arguments_are_checked():
    a = xc.parse_args(["--export=e", "--robustness=r.json", "--out=o.json"])
    assert (a.steps, a.eot_iter, a.protocol, a.attacks) == (100, 20, "every-example", list(xc.ATTACKS))
    with pytest.raises(SystemExit):
        xc.parse_args(["--export=e", "--robustness=r", "--out=o", "--attacks=fab"])
    with pytest.raises(SystemExit):
        xc.parse_args(["--export=e", "--robustness=r", "--out=o", "--eot_iter=0"])


# --------------------------------------------------------------------------- torch wrapper

@pytest.fixture(scope="module")
def tiny():
    """An untrained width-1/4 convnet on 8x8x1 images, RSC-II at T = 2, and 8 images
    (threshold 0.2: at the default 1.0 no spike of the untrained net reaches the logits)."""
    import jax

    clf = tiny_spiking_classifier()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 8).astype(np.int32)
    assert np.abs(np.asarray(clf.logits(jax.random.key(1), x))).max() > 0.1
    return clf, x, y


def _torch():
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    pytest.importorskip("torchattacks", reason=NO_TORCH)
    return torch


def test_torch_forward_is_the_jax_draw_of_its_call(tiny):
    torch = _torch()
    import jax
    clf, x, _ = tiny
    key = jax.random.key(5)
    mod = xc.make_torch_model(clf.logits, key)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        a, b = mod(xt).numpy(), mod(xt).numpy()
    assert mod.calls == 2
    np.testing.assert_allclose(a, np.asarray(clf.logits(jax.random.fold_in(key, 0), x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, np.asarray(clf.logits(jax.random.fold_in(key, 1), x)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, b)                      # a fresh coding draw per call (what EOT needs)
    # a batch that is not a power of two is padded with zeros: its rows are those of the padded call
    with torch.no_grad():
        c = mod(xt[:5]).numpy()
    pad = np.concatenate([x[:5], np.zeros_like(x[:3])])
    np.testing.assert_allclose(c, np.asarray(clf.logits(jax.random.fold_in(key, 2), pad))[:5], rtol=1e-5, atol=1e-5)


def test_torch_gradient_is_jax_grad_of_the_same_draw(tiny):
    torch = _torch()
    import jax
    import optax
    clf, x, y = tiny
    key = jax.random.key(9)
    mod = xc.make_torch_model(clf.logits, key)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(mod(xt), torch.from_numpy(y).long(), reduction="sum")
    (g,) = torch.autograd.grad(loss, [xt])
    k0 = jax.random.fold_in(key, 0)
    want = jax.grad(lambda xx: optax.softmax_cross_entropy_with_integer_labels(clf.logits(k0, xx), y).sum())(x)
    want = np.asarray(want).transpose(0, 3, 1, 2)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-4, atol=1e-6)
    assert loss.item() == pytest.approx(float(optax.softmax_cross_entropy_with_integer_labels(
        clf.logits(k0, x), y).sum()), rel=1e-5)


@pytest.mark.parametrize("protocol", ["every-example", "as-shipped"])
def test_attacks_stay_in_the_ball(tiny, protocol):
    """A few steps of each torchattacks attack through the wrapper: images stay within
    eps of the originals and in [0, 1] (run_attack checks and raises otherwise)."""
    _torch()
    import jax
    clf, x, y = tiny
    args = xc.parse_args(["--export=e", "--robustness=r", "--out=o", "--steps=2", "--eot_iter=2",
                          "--n_queries=3", "--batch_size=8", f"--protocol={protocol}"])
    for i, name in enumerate(xc.ATTACKS):
        mod = xc.make_torch_model(clf.logits, jax.random.key(i))
        adv = xc.run_attack(name, mod, x, y, 8 / 255, args)
        assert adv.shape == x.shape and adv.dtype == np.float32
        assert np.abs(adv - x).max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert mod.calls > 1


# --------------------------------------------------------------------------- tables and the SA-PGD anchor

def test_table_rows_carry_the_checking_scripts_verdict(tmp_path):
    """scripts/crosscheck_table.py: one row per run, check and eps, the verdict as the
    checking script wrote it; the marked block of a document replaced, the rest kept."""
    tab = load_script("crosscheck_table")
    ours = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    c = xc.compare(_entry(ours, correct_avg="".join("1" if v else "0" for v in ours)),
                   {"clean": np.ones(10, bool), "sapgd-assg": np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 1], bool)}, ours)
    (tmp_path / "anchor").mkdir()
    (tmp_path / "anchor" / "snn_seed0.json").write_text(json.dumps(
        {"settings": {"attack": "sapgd"}, "comparisons": [c], "seconds": 12.0}))
    (tmp_path / "anchor" / "notes.json").write_text("{}")                # not a check: skipped
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- t -->\nold\n<!-- /t -->\nafter\n")
    text = tab.main(["--inputs", str(tmp_path / "anchor"), "--doc", str(doc), "--marker", "t"])
    row = text.splitlines()[2]
    # theirs breaks 1 and 4, ours 4 and 5: worst 0.8 each, union 0.7 (1, 4, 5), b = 1 (1), c = 1 (5)
    assert row.startswith("| snn_seed0 | SA-PGD | 8/255 | sapgd-assg 0.800 | 0.800 [0.444, 0.975] | 0.800 [")
    assert "clean" not in row and f"| 0.700 | 1, 1, 1 | {c['verdict']} | 12 |" in row
    assert doc.read_text().startswith("before\n<!-- t -->\n| run |") and doc.read_text().endswith("<!-- /t -->\nafter\n")


def test_anchor_reads_the_runs_attack_config_with_sapgd_on():
    anchor = load_script("anchor_sapgd")
    c = anchor.attack_config({"config": {"apgd_steps": 7, "strong_eps": [0.1], "not_a_field": 1}}, None, 3)
    assert c.sapgd and c.apgd_steps == 7 and c.apgd_eot == 3 and c.strong_eps == (0.1,) and "not_a_field" not in c
    with pytest.raises(SystemExit):
        anchor.parse_args(["--run", "/nonexistent", "--out", "x.json"])
