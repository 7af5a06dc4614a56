"""Tests of tfdet.core.samplers: counts, never-ignored, randomness, and a NumPy top-loss reference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.backends import run_under_jax
from tfdet.core.samplers import balanced_sample, hard_negative_mining


def random_labels(rng, shape, p=(0.3, 0.6, 0.1)):
    """Labels -1 / 0 / 1 with probabilities ``p``."""
    return rng.choice([-1, 0, 1], size=shape, p=p).astype(np.int32)


def expected_counts(labels, num_samples, fraction):
    """Per image (positives, negatives) a balanced sampler must take."""
    positives = np.minimum((labels == 1).sum(1), int(num_samples * fraction))
    negatives = np.minimum((labels == 0).sum(1), num_samples - positives)
    return positives, negatives


# ---------------------------------------------------------------------------
# balanced_sample
# ---------------------------------------------------------------------------


def test_balanced_sample_counts_and_never_ignored_over_many_seeds():
    rng = np.random.default_rng(0)
    # Image 0 has many positives (capped at 16), image 1 few (3: negatives fill
    # to 64), image 2 none, image 3 fewer candidates than num_samples.
    labels = random_labels(rng, (4, 500), p=(0.3, 0.5, 0.2))
    labels[1] = np.where(labels[1] == 1, 0, labels[1])
    labels[1, [5, 77, 300]] = 1
    labels[2] = np.where(labels[2] == 1, 0, labels[2])
    labels[3] = -1
    labels[3, :20] = 0
    labels[3, 20:25] = 1
    want_pos, want_neg = expected_counts(labels, 64, 0.25)
    assert list(want_pos) == [16, 3, 0, 5] and list(want_neg) == [48, 61, 64, 20]
    masks = []
    for seed in range(12):
        mask = np.asarray(balanced_sample(labels, 64, 0.25, seed=seed))
        assert not mask[labels == -1].any()
        np.testing.assert_array_equal((mask & (labels == 1)).sum(1), want_pos)
        np.testing.assert_array_equal((mask & (labels == 0)).sum(1), want_neg)
        masks.append(mask)
    # Different seeds draw different samples; the same seed the same one.
    assert not np.array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[3], np.asarray(balanced_sample(labels, 64, 0.25, seed=3)))
    # A SeedGenerator advances: a new draw every call (what training wants).
    generator = keras.random.SeedGenerator(11)
    first, second = (np.asarray(balanced_sample(labels, 64, 0.25, seed=generator)) for _ in range(2))
    assert not np.array_equal(first, second)


def test_balanced_sample_is_uniform_among_positives():
    # 400 identical images in one call draw independent keys: each of 8
    # positives, 4 of which are taken per image, is taken about 200 times.
    labels = np.zeros((400, 40), np.int32)
    labels[:, :8] = 1
    labels[:, 30:] = -1
    mask = np.asarray(balanced_sample(labels, 8, 0.5, seed=7))
    counts = mask[:, :8].sum(0)
    assert counts.sum() == 1600
    # Binomial(400, 0.5): sd 10, so +-60 is six sigma.
    assert counts.min() > 140 and counts.max() < 260, counts
    assert mask[:, 8:30].sum() == 1600 and not mask[:, 30:].any()


def test_balanced_sample_with_explicit_keys_takes_the_highest_keys():
    rng = np.random.default_rng(3)
    labels = random_labels(rng, (3, 60))
    keys = rng.uniform(size=(3, 60)).astype(np.float32)
    mask = np.asarray(balanced_sample(labels, 10, 0.3, keys=keys))
    for b in range(3):
        pos = np.flatnonzero(labels[b] == 1)
        pos = pos[np.argsort(-keys[b, pos])][:3]
        neg = np.flatnonzero(labels[b] == 0)
        neg = neg[np.argsort(-keys[b, neg])][: 10 - len(pos)]
        np.testing.assert_array_equal(np.flatnonzero(mask[b]), np.sort(np.concatenate([pos, neg])))


# ---------------------------------------------------------------------------
# hard_negative_mining
# ---------------------------------------------------------------------------


def np_hard_negatives(losses, positive, ratio, min_negatives, allowed):
    mask = np.zeros_like(positive)
    for b in range(losses.shape[0]):
        candidates = np.flatnonzero(~positive[b] & allowed[b])
        n = min(max(int(np.floor(positive[b].sum() * ratio)), min_negatives), candidates.size)
        mask[b, candidates[np.argsort(-losses[b, candidates], kind="stable")][:n]] = True
    return mask


def test_hard_negative_mining_picks_the_top_losses():
    rng = np.random.default_rng(4)
    losses = rng.uniform(0, 5, (4, 80)).astype(np.float32)
    positive = rng.uniform(size=(4, 80)) < 0.08
    positive[2] = False  # no positives: min_negatives decides
    positive[3] = rng.uniform(size=80) < 0.5  # 3 * positives exceeds the candidates
    allowed = rng.uniform(size=(4, 80)) < 0.9  # e.g. excluding ignored anchors
    for ratio, minimum, negative_mask in [(3, 0, None), (3, 5, allowed), (2.5, 0, allowed)]:
        got = np.asarray(hard_negative_mining(losses, positive, ratio, minimum, negative_mask=negative_mask))
        allowed_here = np.ones_like(positive) if negative_mask is None else allowed
        np.testing.assert_array_equal(got, np_hard_negatives(losses, positive, ratio, minimum, allowed_here))
    # Image 0 with ratio 3: a hand check that the chosen losses are the largest.
    got = np.asarray(hard_negative_mining(losses, positive))
    chosen, rest = losses[0][got[0]], losses[0][~got[0] & ~positive[0]]
    assert got[0].sum() == 3 * positive[0].sum() and chosen.min() > rest.max()


def test_hard_negative_mining_exact_count_with_tied_losses():
    losses = np.ones((2, 30), np.float32)
    positive = np.zeros((2, 30), bool)
    positive[0, :4] = True
    got = np.asarray(hard_negative_mining(losses, positive, negative_ratio=3, min_negatives=2))
    np.testing.assert_array_equal(got.sum(1), [12, 2])
    assert not (got & positive).any()


# ---------------------------------------------------------------------------
# XLA and JAX
# ---------------------------------------------------------------------------


def _inputs():
    rng = np.random.default_rng(5)
    labels = random_labels(rng, (3, 200))
    keys = rng.uniform(size=(3, 200)).astype(np.float32)
    losses = rng.uniform(0, 3, (3, 200)).astype(np.float32)
    return labels, keys, losses


def test_xla_matches_eager():
    labels, keys, losses = _inputs()

    def both(labels, keys, losses):
        return (balanced_sample(labels, 32, 0.25, keys=keys),
                hard_negative_mining(losses, labels == 1, 3, 4, negative_mask=labels == 0))

    eager = both(labels, keys, losses)
    compiled = tf.function(both, jit_compile=True)(labels, keys, losses)
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(e))
    # Seeded draws differ between XLA and eager kernels; the invariants hold.
    drawn = np.asarray(tf.function(lambda l: balanced_sample(l, 32, 0.25, seed=1), jit_compile=True)(labels))
    want_pos, want_neg = expected_counts(labels, 32, 0.25)
    np.testing.assert_array_equal((drawn & (labels == 1)).sum(1), want_pos)
    np.testing.assert_array_equal((drawn & (labels == 0)).sum(1), want_neg)


@pytest.mark.slow
def test_jax_matches_tensorflow(tmp_path):
    labels, keys, losses = _inputs()
    np.savez(tmp_path / "in.npz", labels=labels, keys=keys, losses=losses)
    run_under_jax(f"""
        import jax
        import numpy as np
        from tfdet.core.samplers import balanced_sample, hard_negative_mining

        @jax.jit
        def run(labels, keys, losses):
            return dict(keyed=balanced_sample(labels, 32, 0.25, keys=keys),
                        mined=hard_negative_mining(losses, labels == 1, 3, 4, negative_mask=labels == 0),
                        drawn=balanced_sample(labels, 32, 0.25, seed=1))

        d = np.load({str(tmp_path / "in.npz")!r})
        out = run(d["labels"], d["keys"], d["losses"])
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: np.asarray(v) for k, v in out.items()}})
    """)
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(got["keyed"], np.asarray(balanced_sample(labels, 32, 0.25, keys=keys)))
    np.testing.assert_array_equal(
        got["mined"], np.asarray(hard_negative_mining(losses, labels == 1, 3, 4, negative_mask=labels == 0))
    )
    want_pos, want_neg = expected_counts(labels, 32, 0.25)
    np.testing.assert_array_equal((got["drawn"] & (labels == 1)).sum(1), want_pos)
    np.testing.assert_array_equal((got["drawn"] & (labels == 0)).sum(1), want_neg)
