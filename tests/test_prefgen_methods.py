"""Known-answer tests for PrefGen's MMD loss and layer probes."""

import numpy as np
import pytest
import torch

from finexl.prefgen.losses import cosine_loss, mmd_loss, mse_loss
from finexl.prefgen.probes import choose_layers, inter_user_accuracy, intra_user_accuracy


def _direct_mmd(x, y, bandwidths):
    def k(a, b):
        return sum(np.exp(-np.sum((a - b) ** 2) / (2 * s * s)) for s in bandwidths)

    xx = np.mean([k(a, b) for a in x for b in x])
    yy = np.mean([k(a, b) for a in y for b in y])
    xy = np.mean([k(a, b) for a in x for b in y])
    return xx + yy - 2 * xy


def test_mmd_is_zero_for_identical_samples_and_symmetric():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    assert float(mmd_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(mmd_loss(x, x[torch.randperm(7)])) == pytest.approx(0.0, abs=1e-6)
    y = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    assert float(mmd_loss(x, y)) == pytest.approx(float(mmd_loss(y, x)), rel=1e-6)


def test_mmd_grows_with_the_shift():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 3, generator=g) * 0.3
    y = torch.randn(64, 3, generator=g) * 0.3
    values = [float(mmd_loss(x, y + shift)) for shift in (0.0, 0.3, 1.0, 3.0)]
    assert values == sorted(values) and values[1] > 0.01 and values[0] < values[1] / 3


def test_mmd_matches_a_direct_computation_with_masks_and_batches():
    rng = np.random.default_rng(3)
    bandwidths = (0.5, 1.0, 2.0)
    x = rng.normal(size=(2, 4, 3))
    y = rng.normal(size=(2, 3, 3))
    y_mask = np.array([[1, 1, 1], [1, 1, 0]])
    got = mmd_loss(torch.tensor(x), torch.tensor(y), bandwidths=bandwidths,
                   y_mask=torch.tensor(y_mask), reduction="none").numpy()
    expected = [_direct_mmd(x[0], y[0], bandwidths), _direct_mmd(x[1], y[1][:2], bandwidths)]
    assert got == pytest.approx(expected, rel=1e-9)


def test_pointwise_ablations_are_zero_at_matching_means():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    y = torch.tensor([[[0.5, 0.5]]])
    assert float(mse_loss(x, y)) == pytest.approx(0.0)
    assert float(cosine_loss(x, y)) == pytest.approx(0.0, abs=1e-6)
    # ...where MMD still tells the spread set from the single point.
    assert float(mmd_loss(x, y)) > 0.05


def _planted_states(layer_with_signal, n_layers=7, users=12, sessions=4, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    n = users * sessions
    states = rng.normal(size=(n, n_layers, dim))
    user = np.repeat(np.arange(users), sessions)
    session = np.tile(np.arange(sessions), users)
    centres = rng.normal(size=(users, dim)) * 3
    states[:, layer_with_signal] += centres[user]
    return states, user, session


def test_probes_find_a_planted_user_signal_and_the_rule_picks_it():
    states, user, session = _planted_states(4)
    inter = inter_user_accuracy(states, user, session)
    assert int(np.argmax(inter)) == 4 and inter[4] > 0.9
    assert max(np.delete(inter, 4)) < 0.5  # chance is 1/12
    liked = (np.arange(len(user)) % 2).astype(int)
    intra_states = np.random.default_rng(1).normal(size=states.shape)
    intra_states[:, 2, 0] += 4 * liked
    intra = intra_user_accuracy(intra_states, liked, user)
    assert int(np.argmax(intra)) == 2 and intra[2] > 0.9
    core, sem = choose_layers(inter, intra)
    assert 4 in core and len(core) == 2
    assert 2 in sem and len(sem) == 4
    assert choose_layers(inter, intra, rule="last") == ([6], [6])


def test_layer_rule_ties_and_bounds():
    flat = [0.5] * 7
    core, sem = choose_layers(flat, flat)
    assert sem == [3, 4, 5, 6]  # ties: the higher band
    assert core == [2, 3]  # ties: the lowest band starting at L // 3 = 2
    core, sem = choose_layers([0.9, 0.1, 0.1], [0.9, 0.1, 0.2])
    assert 0 not in core and 0 not in sem
