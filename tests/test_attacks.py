"""The one PGD (``poisonlab.attacks.pgd``): budgets, box, direction, targeting, mask, seeding, own losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.attacks import pgd, project

NORMS = ["linf", "l2"]
EPSILON = {"linf": 8 / 255, "l2": 0.5}


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A fixed small conv net and 32 random 3×8×8 images (some pixels at 0 and 1, so the box binds) with labels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(32, 3, 8, 8, generator=generator).mul(1.2).sub(0.1).clamp(0, 1)
    y = torch.randint(4, (32,), generator=generator)
    return model, x, y


def cross_entropy(model: nn.Module, y: torch.Tensor):
    return lambda x: F.cross_entropy(model(x), y, reduction="none")


def attack(setup, norm: str, **options) -> torch.Tensor:
    model, x, y = setup
    settings = dict(norm=norm, epsilon=EPSILON[norm], step_size=EPSILON[norm] / 4, steps=10, start="random",
                    generator=torch.Generator().manual_seed(1))
    return pgd(options.pop("loss", cross_entropy(model, y)), x, **{**settings, **options})


def per_image(loss: torch.Tensor) -> float:
    return loss.mean().item()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("minimize", [False, True])
def test_stays_in_its_ball_and_the_box(setup, norm, minimize):
    _, x, _ = setup
    delta = attack(setup, norm, minimize=minimize)
    size = delta.abs().flatten(1).amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert (size <= EPSILON[norm] * (1 + 1e-5)).all()
    assert size.max() > 0.5 * EPSILON[norm]  # and uses it
    assert ((x + delta) >= 0).all() and ((x + delta) <= 1).all()


@pytest.mark.parametrize("norm", NORMS)
def test_maximising_raises_and_minimising_lowers_the_loss(setup, norm):
    model, x, y = setup
    loss = cross_entropy(model, y)
    with torch.no_grad():  # as an evaluation would call it: the attack still gets its gradients
        clean = per_image(loss(x))
        stronger = dict(epsilon=4 * EPSILON[norm], step_size=EPSILON[norm])
        up = per_image(loss(x + attack(setup, norm, **stronger)))
        down = per_image(loss(x + attack(setup, norm, minimize=True, **stronger)))
    assert up > clean + 0.1 and down < clean - 0.1


@pytest.mark.parametrize("norm", NORMS)
def test_targeted_moves_towards_the_target(setup, norm):
    """Targeted is the target's loss, minimised: more images go to the target class than before."""
    model, x, y = setup
    target = (y + 1) % 4
    delta = attack(setup, norm, loss=cross_entropy(model, target), minimize=True, epsilon=4 * EPSILON[norm],
                   step_size=EPSILON[norm])
    with torch.no_grad():
        before, after = model(x).argmax(1), model(x + delta).argmax(1)
        target_loss = F.cross_entropy(model(x), target), F.cross_entropy(model(x + delta), target)
    assert (after == target).float().mean() > (before == target).float().mean() + 0.3
    assert target_loss[1] < target_loss[0]


@pytest.mark.parametrize("norm", NORMS)
def test_masked_pixels_never_change(setup, norm):
    _, x, _ = setup
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 2:6] = True  # a hole: the only pixels allowed to move, in every channel
    delta = attack(setup, norm, mask=mask)
    assert torch.equal(delta * ~mask, torch.zeros_like(delta))
    assert (delta[mask.expand_as(delta)] != 0).float().mean() > 0.5


def test_masked_pixels_stay_even_where_the_box_would_move_them(setup):
    """An input outside the box (a latent, a raw value) keeps its masked entries exactly."""
    model, x, y = setup
    outside = x * 3 - 1  # in [-1, 2]
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) > 0.5
    delta = pgd(cross_entropy(model, y), outside, epsilon=0.1, step_size=0.05, steps=3, mask=mask)
    assert torch.equal(delta[~mask], torch.zeros_like(delta[~mask]))


@pytest.mark.parametrize("norm", NORMS)
def test_seeded(setup, norm):
    first, again = attack(setup, norm), attack(setup, norm)
    other = attack(setup, norm, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_given_start_is_projected_and_zero_start_needs_no_generator(setup):
    model, x, y = setup
    start = torch.full_like(x, 0.5)
    projected = pgd(cross_entropy(model, y), x, epsilon=0.1, step_size=0.01, steps=0, start=start)
    assert torch.equal(projected, project(start, x, "linf", 0.1))
    assert projected.abs().max() <= 0.1 + 1e-6  # (x + δ) − x may round a last bit above the radius
    zero = pgd(cross_entropy(model, y), x, epsilon=0.1, step_size=0.01, steps=0)
    assert torch.equal(zero, torch.zeros_like(x))


def test_an_own_loss_without_ball_or_box(setup):
    """PhotoGuard-style: pull an encoder's output of x + δ towards a target latent, unbounded, no box."""
    _, x, _ = setup
    torch.manual_seed(3)
    encoder = nn.Conv2d(3, 2, 4, stride=4)
    target = torch.randn(len(x), 2, 2, 2, generator=torch.Generator().manual_seed(4))

    def distance(z: torch.Tensor) -> torch.Tensor:
        return (encoder(z) - target).flatten(1).norm(dim=1)

    delta = pgd(distance, x, norm="l2", epsilon=math.inf, step_size=0.2, steps=30, minimize=True, box=None)
    with torch.no_grad():
        assert per_image(distance(x + delta)) < 0.5 * per_image(distance(x))
    assert ((x + delta) < 0).any() or ((x + delta) > 1).any()  # nothing held it in [0, 1]


def test_a_step_size_schedule_is_read_at_every_step(setup):
    """step_size as step index → size: on a loss rising along every coordinate, L∞ steps add up to its sum."""
    _, x, _ = setup
    delta = pgd(lambda z: z.sum(), x, epsilon=math.inf, step_size=lambda i: 0.1 * (i + 1), steps=3, box=None)
    torch.testing.assert_close(delta, torch.full_like(x, 0.6))


def test_expectation_over_transformation_draws_a_loss_per_sample(setup):
    """eot_samples=k evaluates the loss k times a step and steps along the summed gradient."""
    model, x, y = setup
    calls = []

    def loss(z: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return F.cross_entropy(model(z), y, reduction="sum")

    twice = pgd(loss, x, epsilon=0.1, step_size=0.02, steps=3, eot_samples=2)
    assert len(calls) == 6
    # A deterministic loss: twice the gradient has the same sign, so the same L∞ steps.
    assert torch.equal(twice, pgd(loss, x, epsilon=0.1, step_size=0.02, steps=3))


@pytest.mark.parametrize(("options", "message"), [
    ({"norm": "l1"}, "norm"),
    ({"epsilon": 0}, "epsilon"),
    ({"steps": -1}, "steps"),
    ({"start": "gaussian"}, "start"),
    ({"start": "random", "generator": None}, "generator"),
    ({"start": "random", "epsilon": math.inf}, "finite epsilon"),
])
def test_bad_arguments_are_refused(setup, options, message):
    model, x, y = setup
    settings = dict(epsilon=0.1, step_size=0.01, steps=1, start="random", generator=torch.Generator())
    with pytest.raises(ValueError, match=message):
        pgd(cross_entropy(model, y), x, **{**settings, **options})
