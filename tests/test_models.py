"""Model invariants: shapes, masks, slot permutation equivariance, the factorization property, FSQ, caches."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch

from flam.models.factorizer import (
    Factorizer,
    FactorizerConfig,
    cell_code,
    entity_halves,
    kmeans,
    token_weights,
)
from flam.models.flam import FLAM, FLAMConfig, crowded_slot, jump_nats, jumped_mass, readout_nats
from flam.models.lam import Inference
from flam.models.layers import change_weighted_mse
from flam.models.monolithic import Monolithic, MonolithicConfig
from flam.models.outputs import Loss
from flam.models.tokenizer import FSQ, Tokenizer, TokenizerConfig

E, G, K, A = 3, 4, 3, 4


def flam_config(**kwargs) -> FLAMConfig:
    factorizer = FactorizerConfig(feature_dim=E, grid=G, n_slots=K, width=16, heads=2, iterations=2)
    return FLAMConfig(factorizer=factorizer, action_dim=A, idm_layers=1, fdm_layers=1, aggregator_layers=1, **kwargs)


def losses_over(
    z: torch.Tensor,
    option: str,
    values: tuple[float, ...],
    prepare: Callable[[FLAM], FLAM] = lambda model: model,
    **fixed: Any,
) -> tuple[dict[float, Loss], FLAM]:
    """The loss on clip z of the same seeded FLAM (eval: the posterior mean) with `option` set to each value and the
    other options `fixed`: {value: Loss}, and the last of those models, to read what it charged."""
    losses = {}
    for value in values:
        torch.manual_seed(0)
        model = prepare(FLAM(replace(flam_config(), **fixed, **{option: value})).eval())
        with torch.no_grad():
            losses[value] = model(z)
    return losses, model


def codes(b: int = 2, t: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 5, (b, t, E, G, G), generator=g).float() - 2) / 2  # lattice {-1, -.5, 0, .5, 1}


def test_tokenizer_shapes_and_fsq_round_trip() -> None:
    config = TokenizerConfig(image_size=32, patch=4, channels=(8, 8), levels=(5, 3, 7))
    tok = Tokenizer(config)
    z = tok.encode(torch.rand(2, 3, 32, 32))
    assert z.shape == (2, 3, 8, 8)
    assert tok.decode(z).shape == (2, 3, 32, 32)
    fsq = tok.fsq
    assert torch.equal(fsq.snap(z), z)  # codes are on the lattice already
    assert torch.equal(fsq.from_indices(fsq.indices(z)), z)
    idx = fsq.indices(z)
    assert idx.min() >= 0 and (idx.amax(dim=(0, 2, 3)) <= torch.tensor([4, 2, 6])).all()


def test_fsq_snap_rounds_to_nearest_level() -> None:
    fsq = FSQ((5,))
    x = torch.tensor([-1.3, -0.74, -0.2, 0.26, 0.9]).view(1, 1, 1, 5)
    assert fsq.snap(x).flatten().tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_fsq_snaps_clips_along_their_channel_axis() -> None:
    # Training validates on clips [B, T, E, h, w]; with T = E the lattice once lined up with the time axis instead.
    fsq = FSQ((3, 5, 7))
    clip = torch.rand(2, 3, 3, 4, 4) * 2 - 1
    frames = torch.stack([fsq.snap(clip[:, t]) for t in range(3)], dim=1)
    assert torch.equal(fsq.snap(clip), frames)
    assert torch.equal(fsq.from_indices(fsq.indices(frames)), frames)


def test_factorizer_masks_sum_to_one_over_slots() -> None:
    fac = Factorizer(flam_config().factorizer)
    factored = fac(codes())
    slots, masks = factored.slots, factored.masks
    assert factored.background_log_share is None
    assert slots.shape == (2, 5, K, 16)
    assert masks.shape == (2, 5, K, G * G)
    torch.testing.assert_close(masks.sum(dim=2), torch.ones(2, 5, G * G))


def test_token_weights_fade_a_slot_with_less_mass_than_the_floor() -> None:
    masks = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.1, 0.1, 0.0], [0.5, 0.4, 0.0, 0.0]])  # [K=3, N=4]
    plain = token_weights(masks, 0.0)
    torch.testing.assert_close(plain.sum(dim=-1), torch.ones(3))  # the original rule: a mean for every slot
    torch.testing.assert_close(plain[1], torch.tensor([0.0, 0.5, 0.5, 0.0]), atol=1e-6, rtol=0)  # 0.2 of mass
    floored = token_weights(masks, 1.0)
    torch.testing.assert_close(floored[0], masks[0] / 3.0)  # mass 3 >= floor: still the mean
    torch.testing.assert_close(floored[1], masks[1])  # mass 0.2 < floor: the mean faded to a fifth
    torch.testing.assert_close(floored.sum(dim=-1), torch.tensor([1.0, 0.2, 0.9]))


def test_background_sink_competes_for_every_token_as_one_more_slot() -> None:
    fac = Factorizer(replace(flam_config().factorizer, background_sink=True))
    with torch.no_grad():
        fac.to_q.weight.zero_()  # every slot's logit 0, like the sink's zero query: K + 1 even competitors
        factored = fac(codes())
    slots, masks = factored.slots, factored.masks
    assert slots.shape == (2, 5, K, 16) and masks.shape == (2, 5, K, G * G)
    torch.testing.assert_close(masks, torch.full_like(masks, 1 / (K + 1)))  # the sink keeps 1 / (K + 1) of each
    torch.testing.assert_close(factored.background_log_share.exp(), torch.full((2, 5, G * G), 1 / (K + 1)))


def test_read_threshold_drops_tokens_a_slot_holds_too_little_of() -> None:
    masks = torch.tensor([[0.9, 0.05, 0.05, 0.0], [0.02, 0.03, 0.01, 0.04]])  # [K=2, N=4]
    weights = token_weights(masks, 1.0, read_threshold=0.1)
    torch.testing.assert_close(weights[0], torch.tensor([0.9, 0.0, 0.0, 0.0]))  # faint tokens left out
    torch.testing.assert_close(weights[1], torch.zeros(4))  # a slot holding no token reads nothing at all
    with pytest.raises(ValueError, match="read_threshold"):
        FactorizerConfig(read_threshold=1.0)


def test_code_embedding_gives_every_fsq_code_its_own_vector() -> None:
    levels = (5, 3, 7)
    fsq = FSQ(levels)
    every = torch.cartesian_prod(*[torch.arange(n) for n in levels])  # [105, E]: every code once, as indices
    grid = fsq.from_indices(every.T[None, :, :, None])  # [1, E, 105, 1]: every code once, as a feature grid
    fac = Factorizer(FactorizerConfig(feature_dim=3, grid=G, n_slots=K, width=16, heads=2, code_levels=levels))
    index = fac._code_index(grid)
    assert sorted(index.flatten().tolist()) == list(range(math.prod(levels)))  # one vector per code, none shared
    off_lattice = fac._code_index(grid * 1.2 + 0.01)  # a prediction a little past the lattice still has a code
    assert off_lattice.min() >= 0 and off_lattice.max() < math.prod(levels)
    # The embedding reaches the slots: the same values with another code table read differently.
    z = codes()
    before = fac(z).slots
    with torch.no_grad():
        fac.code_embed.weight.normal_()
    assert not torch.allclose(fac(z).slots, before)
    assert Factorizer(replace(fac.config, code_levels=list(levels))).config.code_levels == levels  # JSON lists
    with pytest.raises(ValueError, match="levels for 3 feature channels"):
        FactorizerConfig(feature_dim=3, code_levels=(5, 5))
    with pytest.raises(ValueError, match="FSQ levels"):
        FactorizerConfig(feature_dim=3, code_levels=(5, 1, 5))


def test_slot_positions_start_as_the_same_model_and_follow_the_mask() -> None:
    base = Factorizer(FactorizerConfig(feature_dim=E, grid=G, n_slots=K, width=16, heads=2)).eval()
    placed = Factorizer(replace(base.config, slot_positions=True)).eval()
    placed.load_state_dict(base.state_dict(), strict=False)  # only the placement is new, at zeros
    z = codes()
    with torch.no_grad():
        torch.testing.assert_close(placed(z).slots, base(z).slots)
        torch.nn.init.eye_(placed.place.weight[:3])  # slot value dims 0, 1, 2 := centroid row, column, mass up to 1
        masks = torch.zeros(1, K, G * G)
        masks[0, 0, 0], masks[0, 1, [G - 1, 2 * G - 1]], masks[0, 2, 5] = 1.0, 1.0, 0.5  # corner; right edge, 2 cells
        where = placed._placed(torch.zeros(1, K, 16), masks)[0, :, :3]
    torch.testing.assert_close(where[0], torch.tensor([-1.0, -1.0, 1.0]))  # row 0, column 0, one token
    torch.testing.assert_close(where[1], torch.tensor([-1 + 1 / (G - 1), 1.0, 1.0]))  # rows 0 and 1, last column
    # Half a token: its coordinates (row 1, column 1 of 4: -1/3 each) faded by the mass floor of 1, and mass 0.5
    torch.testing.assert_close(where[2], torch.tensor([-1 / 6, -1 / 6, 0.5]))


def test_cell_code_shares_each_axis_between_the_two_nearest_rows_and_gives_the_centroid_back() -> None:
    centres = torch.linspace(-1, 1, G)  # rows at -1, -1/3, 1/3, 1
    centroid = torch.tensor([[-1 / 3, 0.0], [1.0, -1.0]])  # on row 1 and between columns 1 and 2; a corner
    code = cell_code(centroid, centres).unflatten(-1, (2, G))  # [2, axis, G]
    torch.testing.assert_close(code[0, 0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(code[0, 1], torch.tensor([0.0, 0.5, 0.5, 0.0]))
    torch.testing.assert_close(code[1], torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(code @ centres, centroid)


def test_slot_cells_start_as_the_same_model_and_give_each_cell_its_own_direction() -> None:
    config = FactorizerConfig(feature_dim=E, grid=G, n_slots=K, width=16, heads=2, slot_positions=True)
    base = Factorizer(config).eval()
    torch.nn.init.normal_(base.place.weight)
    celled = Factorizer(replace(config, slot_cells=True)).eval()
    celled.load_state_dict(base.state_dict(), strict=False)  # only the cell code's projection is new, at zeros
    z = codes()
    with torch.no_grad():
        torch.testing.assert_close(celled(z).slots, base(z).slots)
        torch.nn.init.zeros_(celled.place.weight)
        torch.nn.init.zeros_(celled.place.bias)
        torch.nn.init.eye_(celled.place_cells.weight[: 2 * G])  # slot value dims := the rows' then columns' shares
        masks = torch.eye(G * G)[:, None].expand(G * G, K, G * G)  # every slot on one token, each frame another
        code = celled._placed(torch.zeros(G * G, K, 16), masks)[:, 0, : 2 * G]
    # Each token is the one-hot of its row next to the one-hot of its column: a linear read of the cell is exact
    rows, cols = torch.arange(G * G) // G, torch.arange(G * G) % G
    assert torch.equal(code[:, :G].argmax(-1), rows) and torch.equal(code[:, G:].argmax(-1), cols)
    assert torch.equal(code.sum(-1), torch.full((G * G,), 2.0))
    with pytest.raises(ValueError, match="slot_cells needs slot_positions=true"):
        replace(config, slot_positions=False, slot_cells=True)


def test_readout_nats_are_the_kl_from_each_slots_mask_weighted_by_its_mass_up_to_one() -> None:
    masks = torch.zeros(1, 3, 4)
    masks[0, 0, 1] = 1.0  # one whole token
    masks[0, 1, 2:] = 1.0  # two tokens: mass 2 weighs 1
    masks[0, 2, 0] = 0.5  # half a token: weighs 0.5
    logits = torch.log(torch.tensor([[[0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4], [0.25, 0.25, 0.25, 0.25]]]))
    kl = torch.tensor([math.log(1 / 0.7), math.log(0.5 / 0.4), math.log(4)])
    torch.testing.assert_close(readout_nats(logits, masks), (kl * torch.tensor([1, 1, 0.5])).sum() / 2.5)
    exact = (masks / masks.sum(-1, keepdim=True)).clamp_min(1e-12).log()  # each slot reads out its own mask
    assert readout_nats(exact, masks) == pytest.approx(0.0, abs=1e-6)


def test_cell_readout_charges_the_readout_nats() -> None:
    z = codes()
    losses, model = losses_over(z, "cell_readout", (0.0, 0.1))
    with torch.no_grad():
        factored = model.factorizer(z)
        nats = readout_nats(model.readout(factored.slots.float()), factored.masks.float())
    torch.testing.assert_close(losses[0.1].loss, losses[0.0].loss + 0.1 * nats)
    assert losses[0.1].logs["readout_nats"] == pytest.approx(nats.item(), rel=1e-5)
    with pytest.raises(ValueError, match="cell_readout must be >= 0"):
        replace(flam_config(), cell_readout=-1.0)


def test_carried_slots_start_as_the_same_model_and_only_from_the_second_frame() -> None:
    config = FactorizerConfig(feature_dim=E, grid=G, n_slots=K, width=16, heads=2, temporal_window=3)
    torch.manual_seed(0)
    plain = Factorizer(config).eval()
    torch.manual_seed(0)
    carrying = Factorizer(replace(config, carry_slots=True)).eval()
    z = codes(t=4)
    with torch.no_grad():
        before = plain(z)
        torch.testing.assert_close(carrying(z).slots, before.slots, atol=1e-5, rtol=1e-4)  # the projection starts at 0
        torch.nn.init.normal_(carrying.carry.weight)
        after = carrying(z)
    torch.testing.assert_close(after.slots[:, 0], before.slots[:, 0], atol=1e-5, rtol=1e-4)  # nothing to carry yet
    assert not torch.allclose(after.slots[:, 1:], before.slots[:, 1:], atol=1e-3)
    with pytest.raises(ValueError, match="carry_slots needs temporal_attention=true"):
        replace(config, carry_slots=True, temporal_attention=False)


@pytest.mark.parametrize(
    ("temporal", "mass_floor", "sink", "positions", "carry"),
    [
        (True, 0.0, False, False, False),
        (False, 0.0, False, False, False),
        (True, 1.0, False, False, False),
        (True, 1.0, True, False, False),
        (True, 1.0, True, True, False),
        (False, 1.0, False, True, False),
        (True, 1.0, False, True, True),
    ],
)
def test_factorizer_step_matches_parallel_pass(
    temporal: bool, mass_floor: float, sink: bool, positions: bool, carry: bool
) -> None:
    config = FactorizerConfig(
        feature_dim=E,
        grid=G,
        n_slots=K,
        width=16,
        heads=2,
        temporal_window=3,
        temporal_attention=temporal,
        mass_floor=mass_floor,
        background_sink=sink,
        read_threshold=0.1 if sink else 0.0,
        slot_positions=positions,
        carry_slots=carry,
    )
    fac = Factorizer(config).eval()
    if carry:
        torch.nn.init.normal_(fac.carry.weight)  # away from the zero start, so the previous slots count
    if sink:
        torch.nn.init.normal_(fac.sink_query)  # away from the zero start, so the sink's share differs by token
    if positions:
        torch.nn.init.normal_(fac.place.weight)  # away from the zero start, so where a slot is changes its value
    z = codes(t=6)
    with torch.no_grad():
        whole = fac(z)
        cache = fac(z[:, :2]).cache
        for t in range(2, 6):
            step = fac.step(z[:, t], cache)
            cache = step.cache
            torch.testing.assert_close(step.slots, whole.slots[:, t], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(step.masks, whole.masks[:, t], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(step.impurity, whole.impurity[:, t], atol=1e-5, rtol=1e-4)
            if sink:
                torch.testing.assert_close(
                    step.background_log_share, whole.background_log_share[:, t], atol=1e-5, rtol=1e-4
                )


def test_permuting_slot_initialisations_permutes_slots_and_actions() -> None:
    model = FLAM(flam_config()).eval()
    z = codes()
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        before = model.infer(z)
        model.factorizer.slot_init.copy_(model.factorizer.slot_init[perm])
        after = model.infer(z)
    torch.testing.assert_close(after.slots, before.slots[:, :, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after.masks, before.masks[:, :, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after.actions, before.actions[:, :, perm], atol=1e-5, rtol=1e-4)


def test_idm_of_a_slot_ignores_other_slots_next_values() -> None:
    model = FLAM(flam_config()).eval()
    slots, upcoming = torch.randn(2, K, 16), torch.randn(2, K, 16)
    changed = upcoming.clone()
    changed[:, 1] += 3.0 * torch.randn(2, 16)
    with torch.no_grad():
        mean, logvar = model.idm(slots, upcoming)
        mean2, logvar2 = model.idm(slots, changed)
    keep = [0, 2]
    torch.testing.assert_close(mean2[:, keep], mean[:, keep])
    torch.testing.assert_close(logvar2[:, keep], logvar[:, keep])
    assert not torch.allclose(mean2[:, 1], mean[:, 1])


def test_fdm_of_a_slot_ignores_other_slots_actions() -> None:
    model = FLAM(flam_config()).eval()
    slots, actions = torch.randn(2, K, 16), torch.randn(2, K, A)
    changed = actions.clone()
    changed[:, 0] += 2.0
    with torch.no_grad():
        out, out2 = model.fdm(slots, actions), model.fdm(slots, changed)
    torch.testing.assert_close(out2[:, 1:], out[:, 1:])
    assert not torch.allclose(out2[:, 0], out[:, 0])


def test_global_coupling_ablation_couples_slots() -> None:
    model = FLAM(flam_config(coupling="global")).eval()
    slots, actions = torch.randn(2, K, 16), torch.randn(2, K, A)
    changed = actions.clone()
    changed[:, 0] += 2.0
    with torch.no_grad():
        assert not torch.allclose(model.fdm(slots, changed)[:, 1], model.fdm(slots, actions)[:, 1])


def slot_masks(m: int = 2) -> torch.Tensor:
    """[M, K, N] random attention masks (sum 1 over K)."""
    return torch.randn(m, K, G * G).softmax(dim=1)


@pytest.mark.parametrize("aggregator", ["attention", "mixture", "anchored"])
def test_aggregator_decodes_each_cell_from_that_cell_and_the_slots(aggregator: str) -> None:
    """No token mixing: a change to one cell of the current grid changes the prediction at that cell only."""
    model = FLAM(flam_config(aggregator=aggregator)).eval()
    z, next_slots, masks = codes()[:, 0], torch.randn(2, K, 16), slot_masks()
    changed = z.clone()
    changed[:, :, 1, 2] += 1.0
    with torch.no_grad():
        moved = (model.aggregator(changed, next_slots, masks) - model.aggregator(z, next_slots, masks)).abs()
        moved = moved.amax(dim=(0, 1))
    assert moved[1, 2] > 1e-3
    moved[1, 2] = 0.0
    assert moved.max() < 1e-5


@pytest.mark.parametrize("aggregator", ["mixture", "anchored"])
def test_mixture_aggregator_mixes_slot_changes_by_claims(aggregator: str) -> None:
    model = FLAM(flam_config(aggregator=aggregator)).eval()
    z, next_slots, masks = codes()[:, 0], torch.randn(2, K, 16), slot_masks()
    with torch.no_grad():
        changes, weights = model.aggregator.claims(z, next_slots, masks)  # [M, K, N, E], [M, K, N]
        out = model.aggregator(z, next_slots, masks)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, G * G))
    expected = z + (weights[..., None] * changes).sum(dim=1).transpose(1, 2).reshape(z.shape)
    torch.testing.assert_close(out, expected)


def one_cell_masks() -> torch.Tensor:
    """[1, K, N]: slot 0 holds the cell at row 2, column 3 whole; the other slots share every other cell."""
    masks = torch.full((1, K, G, G), 1.0 / (K - 1))
    masks[0, 0] = 0.0
    masks[0, :, 2, 3] = 0.0
    masks[0, 0, 2, 3] = 1.0
    return masks.flatten(2)


def one_cell_neighbourhood() -> torch.Tensor:
    """[G, G] bool: that cell and its 8 neighbours."""
    near = torch.zeros(G, G, dtype=torch.bool)
    near[1:4, 2:5] = True
    return near


def test_anchored_claims_stay_within_one_cell_of_the_slots_mask() -> None:
    """Slot 0's grown mask is 1 on its cell and the 8 neighbours and 0 elsewhere, so its anchor (log, floored at
    1e-4) is 0 there and log 1e-4 elsewhere: with a large anchor scale slot 0 wins exactly those cells whatever the
    learned logits say."""
    model = FLAM(flam_config(aggregator="anchored")).eval()
    masks, near = one_cell_masks(), one_cell_neighbourhood()
    grown = model.aggregator.grown(masks)[0, 0].reshape(G, G)
    assert torch.all(grown[near] == 1.0) and torch.all(grown[~near] == 0.0)
    with torch.no_grad():
        model.aggregator.anchor_scale.fill_(100.0)
        _, weights = model.aggregator.claims(codes(b=1)[:, 0], torch.randn(1, K, 16), masks)
    wins = weights[0].argmax(dim=0).reshape(G, G) == 0
    assert torch.equal(wins, near)


def test_hard_anchor_keeps_a_slots_claims_around_its_mask_whatever_the_learned_scale() -> None:
    torch.manual_seed(0)
    soft = FLAM(flam_config(aggregator="anchored")).eval()
    hard = FLAM(flam_config(aggregator="anchored", hard_anchor=True)).eval()
    with torch.no_grad():
        soft.aggregator.anchor_scale.zero_()  # the learned anchor faded away
        torch.nn.init.normal_(soft.aggregator.head.weight, std=3.0)  # and the learned claims are strong
    hard.load_state_dict(soft.state_dict())  # the same parameters: the hard anchor adds none
    masks, near = one_cell_masks(), one_cell_neighbourhood()
    z, next_slots = codes(b=1)[:, 0], torch.randn(1, K, 16)
    with torch.no_grad():
        _, soft_weights = soft.aggregator.claims(z, next_slots, masks)
        _, hard_weights = hard.aggregator.claims(z, next_slots, masks)
    outside = ~near.flatten()
    assert soft_weights[0, 0, outside].max() > 1e-3  # without it, slot 0 claims cells it holds nothing of ...
    assert hard_weights[0, 0, outside].max() < 1e-20  # ... with it, none
    torch.testing.assert_close(hard_weights.sum(dim=1), torch.ones(1, G * G))
    with pytest.raises(ValueError, match="hard_anchor needs aggregator=anchored"):
        flam_config(aggregator="mixture", hard_anchor=True)


def test_aggregator_neighbourhood_starts_as_the_same_model_and_sees_the_cells_around() -> None:
    base = FLAM(flam_config(aggregator="anchored")).eval()
    near = FLAM(flam_config(aggregator="anchored", aggregator_neighbourhood=True)).eval()
    near.load_state_dict(base.state_dict(), strict=False)  # only the neighbourhood projection is new, at zeros
    z, next_slots, masks = codes()[:, 0], torch.randn(2, K, 16), slot_masks()
    with torch.no_grad():
        torch.testing.assert_close(near.aggregator(z, next_slots, masks), base.aggregator(z, next_slots, masks))
    one = torch.zeros(1, K, G * G)
    one[0, 0, G + 1] = 1.0  # slot 0 holds the cell at row 1, column 1
    around = near.aggregator.around(one)[0, 0].reshape(G, G, 9)  # [row, column, neighbour]
    assert around[1, 2, 3] == 1.0  # the cell to its right sees it as its left neighbour (index 3 = middle row, left)
    assert around[2, 1, 1] == 1.0  # the cell below sees it above (index 1)
    assert around[1, 1, 4] == 1.0  # the cell itself in the middle (index 4)
    assert around.sum() == 9  # and nine cells see it once each; off-grid neighbours are zeros
    with torch.no_grad():
        torch.nn.init.normal_(near.aggregator.neighbourhood.weight)
        shifted = torch.roll(masks.reshape(2, K, G, G), 1, dims=-1).flatten(2)  # every mask one cell to the right
        assert not torch.allclose(near.aggregator(z, next_slots, shifted), near.aggregator(z, next_slots, masks))
    with pytest.raises(ValueError, match="aggregator=mixture or anchored"):
        flam_config(aggregator_neighbourhood=True)


def test_slot_capacity_charges_only_the_rate_above_the_cap() -> None:
    losses, _ = losses_over(codes(), "slot_capacity", (0.0, 1e-3, 1e6), capacity_weight=0.5)
    base = losses[0.0]
    torch.testing.assert_close(losses[1e6].loss, base.loss)  # no slot reaches a huge cap
    kl = base.logs["kl"]
    assert kl > K * 1e-3  # every slot's rate is above the tiny cap ...
    expected = base.loss + 0.5 * (kl - K * 1e-3)  # ... so the whole excess is charged
    torch.testing.assert_close(losses[1e-3].loss, torch.as_tensor(expected, dtype=base.loss.dtype))


def test_change_weight_weighs_the_tokens_that_change() -> None:
    current = torch.zeros(1, E, G, G)
    target = current.clone()
    target[0, :, 1, 2] = 1.0  # one token of G * G changes
    squared = torch.zeros(1, E, G, G)
    squared[0, 0, 1, 2] = 1.0  # all the error on the changed token ...
    weights = 1 + 3.0 * (torch.arange(G * G) == G + 2).float()
    torch.testing.assert_close(change_weighted_mse(squared, current, target, 3.0), 4.0 / E / weights.sum())
    squared = torch.zeros(1, E, G, G)
    squared[0, 0, 0, 0] = 1.0  # ... or all on one that does not
    torch.testing.assert_close(change_weighted_mse(squared, current, target, 3.0), 1.0 / E / weights.sum())
    torch.testing.assert_close(change_weighted_mse(squared, current, current, 3.0), squared.mean())  # nothing changes
    mono = MonolithicConfig(feature_dim=E, grid=G, width=16, heads=2, action_dim=12)
    for make, config in ((FLAM, flam_config()), (Monolithic, mono)):
        plain = make(config).eval()
        weighted = make(replace(config, change_weight=3.0)).eval()
        weighted.load_state_dict(plain.state_dict())  # the same weights
        with torch.no_grad():
            result, base = weighted(codes()), plain(codes())
        assert result.logs["mse"] == base.logs["mse"]  # the logged error stays the plain mean
        assert result.loss != base.loss
        with pytest.raises(ValueError, match="change_weight"):
            replace(config, change_weight=-1.0)


def test_background_cost_charges_the_mean_nats_a_token_keeps_out_of_the_sink() -> None:
    sink = replace(flam_config().factorizer, background_sink=True)
    z = codes()
    losses, model = losses_over(z, "background_cost", (0.0, 0.5), factorizer=sink)
    with torch.no_grad():
        masks = model.factorizer(z).masks
    nats = -(1 - masks.sum(dim=2)).log().mean()  # [B, T, N] the sink's share of every token, in nats
    assert nats > 0
    torch.testing.assert_close(losses[0.5].loss, losses[0.0].loss + 0.5 * nats)
    assert losses[0.5].logs["background_nats"] == pytest.approx(nats.item(), rel=1e-5)


@pytest.mark.parametrize("sink", [False, True])
def test_impurity_of_even_competitors_is_one_minus_their_share(sink: bool) -> None:
    fac = Factorizer(replace(flam_config().factorizer, background_sink=sink))
    with torch.no_grad():
        fac.to_q.weight.zero_()  # every slot's logit 0 (and the sink's, from its zero query): even shares
        impurity = fac(codes()).impurity
    competitors = K + 1 if sink else K
    torch.testing.assert_close(impurity, torch.full((2, 5, G * G), 1 - 1 / competitors))


def test_impurity_cost_charges_the_mean_impurity_over_tokens_and_iterations() -> None:
    z = codes()
    losses, model = losses_over(z, "impurity_cost", (0.0, 0.5))
    with torch.no_grad():
        impurity = model.factorizer(z).impurity
    assert 0 < impurity.mean() < 1
    torch.testing.assert_close(losses[0.5].loss, losses[0.0].loss + 0.5 * impurity.mean())
    assert losses[0.5].logs["impurity"] == pytest.approx(impurity.mean().item(), rel=1e-5)


def test_impurity_is_the_mean_over_attention_iterations() -> None:
    fac = Factorizer(replace(flam_config().factorizer, background_sink=True, iterations=2)).eval()
    torch.nn.init.normal_(fac.sink_query)
    splits = []
    attend = fac._attend

    def recording(*args):  # noqa: ANN002, ANN202
        out = attend(*args)
        splits.append(out[3])
        return out

    fac._attend = recording
    z = codes()
    with torch.no_grad():
        impurity = fac(z).impurity
    assert len(splits) == 2 and not torch.allclose(splits[0], splits[1])  # the iterations differ ...
    torch.testing.assert_close(impurity, ((splits[0] + splits[1]) / 2).reshape(impurity.shape))  # ... and count equally


def sharpen(model: FLAM) -> FLAM:
    """Keys 100 times as long: each token goes almost whole to one slot, so on random codes slots jump (soft
    initial masks hold a share of every token, which puts every token in every slot's reach)."""
    with torch.no_grad():
        model.factorizer.to_k.weight.mul_(100)
    return model


@pytest.mark.parametrize("cost", ["background_cost", "impurity_cost", "slot_mass_cap", "jump_cost"])
def test_scheduled_costs_enter_the_loss_scaled_by_the_ramp(cost: str) -> None:
    config = replace(flam_config(), factorizer=replace(flam_config().factorizer, background_sink=True))
    z = codes()
    torch.manual_seed(0)
    base = FLAM(config).eval()
    torch.manual_seed(0)
    model = FLAM(replace(config, background_warmup=2, **{cost: 0.5})).eval()
    if cost == "jump_cost":
        sharpen(base), sharpen(model)
    with torch.no_grad():
        plain = base(z).loss
        assert model(z).loss == plain  # during the warm-up the cost is logged but not charged
        model.steps_trained.fill_(3)  # half-way up the ramp
        half = model(z).loss - plain
        model.steps_trained.fill_(4)
        full = model(z).loss - plain
    assert full > 0
    torch.testing.assert_close(half, full / 2)


def test_action_noise_ramps_in_from_the_posterior_means() -> None:
    z = codes()
    torch.manual_seed(0)
    model = FLAM(flam_config(action_noise_warmup=4))
    torch.manual_seed(0)
    plain = FLAM(flam_config())  # the same weights, sampling at full scale from step 0
    with torch.no_grad():
        means_only = model.eval()(z).loss
        model.train()
        assert model(z).loss == means_only  # step 0: the forward model gets the means, as in inference
        assert int(model.steps_trained) == 1
        model.steps_trained.fill_(2)  # half-way: half the noise
        torch.manual_seed(1)
        half = model(z).loss
        model.steps_trained.fill_(4)  # the end of the ramp: the posterior's own samples
        torch.manual_seed(1)
        full = model(z).loss
        torch.manual_seed(1)
        sampled = plain.train()(z).loss
    assert half != means_only and half != full
    assert full == sampled


def test_mass_cap_charges_each_token_a_slot_holds_above_the_cap() -> None:
    z = codes()
    losses, model = losses_over(z, "slot_mass_cap", (0.0, 2.0), mass_cap_weight=0.1)
    with torch.no_grad():
        mass = model.factorizer(z).masks.sum(dim=-1)  # [B, T, K] tokens each slot holds
    excess = (mass - 2.0).clamp_min(0).sum(dim=-1).mean()
    assert 0 < excess < mass.sum(dim=-1).mean()  # some slots are above the cap, and only the excess counts
    torch.testing.assert_close(losses[2.0].loss, losses[0.0].loss + 0.1 * excess)
    assert losses[2.0].logs["mass_excess"] == pytest.approx(excess.item(), rel=1e-5)


def test_jumped_mass_counts_only_what_lands_beyond_one_token_of_the_last_frame() -> None:
    masks = torch.zeros(1, 4, 2, 8, 8)  # [B, T, K, h, w]: slot 0 follows an entity, slot 1 swaps to another
    masks[0, :, 0, 2, [2, 3, 4, 4]] = 1.0  # one token right a frame, then still: never a jump
    masks[0, :, 1, 6, 1] = 1.0
    masks[0, 2:, 1, 6, 1] = 0.4  # from frame 2 on, 0.6 of it is three tokens away, and a faint 0.05 further
    masks[0, 2:, 1, 6, 4] = 0.55
    masks[0, 2:, 1, 1, 1] = 0.05
    jumped = jumped_mass(masks)
    torch.testing.assert_close(jumped[0, :, 0], torch.zeros(3))
    # charged once; then held, except the faint share: under 0.1 of a token is not held, so it is no reach
    torch.testing.assert_close(jumped[0, :, 1], torch.tensor([0.0, 0.6, 0.05]))
    masks.requires_grad_(True)
    jumped_mass(masks).sum().backward()
    assert masks.grad[0, 0].abs().sum() == 0  # the last frame's reach is fixed: only the later frame is pulled


def test_jump_nats_charge_the_slot_that_takes_over_and_keep_their_gradient_at_a_full_share() -> None:
    masks = torch.zeros(1, 3, 3, 4, 4)  # [B, T, K, h, w]: slot 2 holds the background
    masks[0, :, 2] = 1.0
    masks[0, 0, 2, 0, 0], masks[0, 0, 0, 0, 0] = 0.0, 1.0  # slot 0 holds a corner ...
    masks[0, 1, 2, 3, 3], masks[0, 1, 0, 3, 3], masks[0, 1, 1, 3, 3] = 0.0, 1 - 1e-5, 1e-5  # ... then jumps across
    masks[0, 2, 2, 1, 1], masks[0, 2, 1, 1, 1] = 0.0, 1.0  # slot 1, which held nothing, takes a token: free
    masks.requires_grad_(True)
    nats = jump_nats(masks)
    expected = torch.zeros(1, 2, 3)
    expected[0, 0, 0] = -math.log(1e-5)  # the others' share, not 1 - (1 - 1e-5) rounded in float
    torch.testing.assert_close(nats, expected, rtol=1e-3, atol=1e-6)
    nats.sum().backward()
    assert masks.grad[0, 1, 1, 3, 3] < -1e4  # the other slot's share is pulled up hard, though it is 1e-5
    assert masks.grad[0, 0].abs().sum() == 0  # the last frame's reach is fixed


def test_jump_cost_charges_the_jump_nats() -> None:
    z = codes()
    losses, model = losses_over(z, "jump_cost", (0.0, 0.1), prepare=sharpen)
    with torch.no_grad():
        masks = model.factorizer(z).masks.unflatten(-1, (G, G))
    nats = jump_nats(masks).sum(dim=-1).mean()
    assert nats > 0
    torch.testing.assert_close(losses[0.1].loss, losses[0.0].loss + 0.1 * nats)
    assert losses[0.1].logs["jump_nats"] == pytest.approx(nats.item(), rel=1e-5)


def test_background_cost_keeps_its_gradient_when_the_slots_hold_every_token() -> None:
    fac = Factorizer(replace(flam_config().factorizer, background_sink=True))
    with torch.no_grad():  # every token's key the same, and the sink's query far against it: its share underflows
        fac.norm_input.weight.zero_()
        fac.norm_input.bias.fill_(1.0)
        fac.sink_query.copy_(-fac.to_k(fac.norm_input.bias) * 1e3)
    factored = fac(codes())
    assert (1 - factored.masks.sum(dim=2)).abs().max() < 1e-6  # a cost on mass would see nothing to move ...
    (-factored.background_log_share.mean()).backward()
    assert fac.sink_query.grad.abs().sum() > 0  # ... the log share still pulls the sink back


@pytest.mark.parametrize(
    "costs", [{"background_cost": 0.4}, {"impurity_cost": 0.4}, {"slot_mass_cap": 0.4}, {"jump_cost": 0.4}]
)
def test_scheduled_costs_wait_for_their_warmup_then_ramp_up(costs: dict) -> None:
    config = replace(flam_config(), factorizer=replace(flam_config().factorizer, background_sink=True))
    model = FLAM(replace(config, background_warmup=2, **costs))
    ramp = []
    for _ in range(5):
        ramp.append(model.cost_ramp())
        model(codes())  # a training step counts ...
    model.eval()
    with torch.no_grad():
        model(codes())  # ... validation does not
    assert ramp == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])
    assert int(model.steps_trained) == 5
    assert "steps_trained" in model.state_dict()  # saved, so a resumed run keeps its place in the schedule


def test_a_crowded_slot_is_split_into_the_idle_slot_with_the_least_mass() -> None:
    torch.manual_seed(0)
    base = flam_config()
    model = FLAM(replace(base, factorizer=replace(base.factorizer, query_offsets=True), split_every=2, split_until=4))
    optimizer = torch.optim.AdamW(model.parameters())
    for _ in range(2):  # two training steps fill the window with real statistics
        model(codes()).loss.backward()
        optimizer.step()
    assert int(model.split_steps) == 2 and (model.split_stats[1] > 0).all()  # masses summed over both steps
    with torch.no_grad():  # the crowded slot must hold tokens of the last batch for a split to divide
        masks = model.factorizer(model.split_batch).masks  # [B, T, K, N]
    crowded = int(masks.argmax(dim=2).flatten().mode().values)
    other, idle = [k for k in range(K) if k != crowded]
    init, offset = model.factorizer.slot_init, model.factorizer.query_offset
    state = optimizer.state[offset]
    state["exp_avg"].copy_(torch.randn_like(offset))
    before, offsets, moments = init.detach().clone(), offset.detach().clone(), state["exp_avg"].clone()
    summed = torch.zeros(2, K)
    summed[:, crowded], summed[:, other], summed[:, idle] = torch.tensor([8.0, 6.0]), 2.0, torch.tensor([0.0, 1.0])
    model.split_stats.copy_(summed)  # rates and masses, summed over 2 steps
    event = model.after_optimizer_step(optimizer)
    assert event["step"] == 2 and (event["split"], event["into"]) == (crowded, idle)
    assert event["rates"][crowded] == 4.0 and event["masses"][idle] == 0.5
    torch.testing.assert_close(init[idle], before[crowded])  # an exact copy, parted by the query offsets only
    torch.testing.assert_close(init[crowded], before[crowded])
    torch.testing.assert_close(init[other], before[other])
    assert not torch.equal(offset[idle], offset[crowded])
    torch.testing.assert_close(offset[other], offsets[other])
    torch.testing.assert_close(state["exp_avg"][idle], moments[crowded])  # the copy inherits the optimizer's moments
    torch.testing.assert_close(state["exp_avg"][other], moments[other])
    assert int(model.split_steps) == 0 and not model.split_stats.any()  # a new window starts
    assert model.after_optimizer_step(optimizer) is None  # no training step since the check

    def check(step: int, crowded_rate: float, idle_rate: float) -> dict | None:
        model.steps_trained.fill_(step)
        model.split_steps.fill_(1)
        model.split_stats.zero_()
        model.split_stats[0, [crowded, other, idle]] = torch.tensor([crowded_rate, 1.0, idle_rate])
        return model.after_optimizer_step(optimizer)

    assert check(3, 4.0, 0.0) is None  # between checks
    assert check(6, 4.0, 0.0) is None  # after split_until
    assert "split" not in check(4, 1.4, 0.0)  # the busiest slot is not crowded enough
    assert "split" not in check(4, 4.0, 2.0)  # no idle slot to split into
    assert "split" in check(4, 4.0, 0.0)
    assert "split_stats" in model.state_dict()  # saved, so a resumed run keeps its window


def test_the_split_rule_leaves_the_slot_with_the_background_out_of_its_median() -> None:
    # The short 8-agent recipe's first check: slot 0 holds two agents, slot 7 one, slot 9 the background and agents
    masses = torch.tensor([5.33, 0.48, 0.05, 0.3, 0.07, 0.62, 0.45, 1.0, 0.4, 51.76])
    rates = torch.tensor([6.649, 0.036, 0.015, 0.016, 0.012, 0.105, 0.018, 3.52, 0.014, 5.74])
    assert crowded_slot(rates, masses, 1.5) == 0  # against slot 7's rate; the plain median (slot 9's) split nothing
    assert crowded_slot(rates, masses, 2.0) is None
    rates[9] = 12.0  # the wide slot is the busiest: it may be split, measured against the others
    assert crowded_slot(rates, masses, 1.5) == 9
    one = torch.tensor([0.0, 3.0, 0.0])  # a lone action slot is its own reference
    assert crowded_slot(one, torch.tensor([1.0, 30.0, 1.0]), 1.5) is None
    assert crowded_slot(torch.zeros(3), torch.ones(3), 1.5) is None  # no action slot yet


@pytest.mark.parametrize("split_idle", [False, True])
def test_split_idle_divides_the_widest_idle_slot_when_no_action_slot_is_crowded(split_idle: bool) -> None:
    torch.manual_seed(0)
    base = flam_config()
    factorizer = replace(base.factorizer, query_offsets=True)
    model = FLAM(replace(base, factorizer=factorizer, split_every=1, split_idle=split_idle))
    optimizer = torch.optim.AdamW(model.parameters())
    model(codes()).loss.backward()
    optimizer.step()
    with torch.no_grad():
        masks = model.factorizer(model.split_batch).masks  # [B, T, K, N]
    wide = int(masks.argmax(dim=2).flatten().mode().values)  # holds tokens of the last batch, as the background would
    acting, spare = [k for k in range(K) if k != wide]
    summed = torch.zeros(2, K)
    summed[:, acting], summed[:, wide], summed[:, spare] = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 20.0]), 0.0
    model.split_stats.copy_(summed)  # one action slot, so none is crowded
    event = model.after_optimizer_step(optimizer)
    assert (event.get("split"), event.get("into")) == ((wide, spare) if split_idle else (None, None))


def test_split_idle_needs_split_checks() -> None:
    with pytest.raises(ValueError, match="split_idle needs split_every"):
        flam_config(split_idle=True)


def test_kmeans_finds_separate_groups() -> None:
    g = torch.Generator().manual_seed(0)
    blobs = [torch.randn(n, 8, generator=g) + 6 * torch.eye(8)[i] for i, n in enumerate((30, 20, 10))]
    labels = kmeans(torch.cat(blobs), 3)
    groups = [labels[:30], labels[30:50], labels[50:]]
    assert all(len(set(group.tolist())) == 1 for group in groups)
    assert len({int(group[0]) for group in groups}) == 3


def test_entity_halves_keep_each_entity_whole_when_its_poses_look_alike_across_entities() -> None:
    """Two entities walk on an 8 x 8 grid, each turning between two poses; a token's key is mostly its pose (as at
    8 agents, where headings dominate), so a cut by looks alone would split both entities."""
    g = torch.Generator().manual_seed(0)
    b, t, grid, d = 8, 6, 8, 16
    entity, pose = torch.randn(2, d, generator=g), 4 * torch.randn(2, d, generator=g)
    keys = 0.1 * torch.randn(b, t, grid * grid, d, generator=g)
    held, owner = torch.zeros(b, t, grid * grid, dtype=torch.bool), torch.full((b, t, grid * grid), -1)
    for clip in range(b):
        for e, cols in enumerate(((0, 2), (5, 7))):  # apart, so no step joins the two
            row, col = int(torch.randint(0, grid, (1,), generator=g)), cols[0]
            for step in range(t):
                row = min(grid - 1, max(0, row + int(torch.randint(-1, 2, (1,), generator=g))))
                col = min(cols[1], max(cols[0], col + int(torch.randint(-1, 2, (1,), generator=g))))
                n = row * grid + col
                keys[clip, step, n] += entity[e] + pose[int(torch.randint(0, 2, (1,), generator=g))]
                held[clip, step, n], owner[clip, step, n] = True, e
    sides = entity_halves(keys, held, grid, kinds=4)
    assert set(sides[~held].tolist()) == {0.0}
    first, second = sides[owner == 0], sides[owner == 1]
    assert len(set(first.tolist())) == 1 and len(set(second.tolist())) == 1 and first[0] == -second[0]


def test_a_split_moves_each_half_to_one_of_the_two_slots_and_leaves_the_rest() -> None:
    torch.manual_seed(0)
    fac = Factorizer(replace(flam_config().factorizer, iterations=1, query_offsets=True))
    kind = torch.rand(2, 5, G * G) < 0.5  # the first half of the grid: one of two codes; the rest: a third
    first, second, third = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 0.5, 1.0], [0.0, 0.0, -1.0]])
    grid = torch.where(kind[..., None], first, second)  # [B, T, N, E]
    grid[:, :, G * G // 2 :] = third
    z = grid.transpose(2, 3).unflatten(-1, (G, G))  # [B, T, E, h, w]
    with torch.no_grad():
        before = fac(z).masks  # [B, T, K, N]
    owner = before.argmax(dim=2)  # [B, T, N]
    source = int(owner.flatten().mode().values)
    target = (source + 1) % K
    held = (owner == source) & (torch.arange(G * G) < G * G // 2)  # the tokens to split: of both codes ...
    assert kind[held].any() and not kind[held].all() and (~held).any()  # ... and others, to be left as they were
    sides = torch.where(held, torch.where(kind, 1.0, -1.0), 0.0)  # the first code's tokens go to the target
    with torch.no_grad():  # as split_slot does: the copy starts as the source exactly
        fac.slot_init[target] = fac.slot_init[source]
    inits = fac.slot_init.detach().clone()
    fac._fit_split(source, target, z, sides, before)
    with torch.no_grad():
        after = fac(z).masks
    to_target = after[:, :, target] > after[:, :, source]
    assert to_target[sides > 0].float().mean() > 0.9 and (~to_target[sides < 0]).float().mean() > 0.9
    assert (after - before).abs().transpose(2, 3)[~held].mean() < 0.05  # the other tokens keep their shares
    torch.testing.assert_close(fac.slot_init, inits)  # only the two query offsets moved ...
    assert fac.query_offset[[source, target]].abs().sum() > 0 and not fac.query_offset[3 - source - target].any()
    assert all(p.requires_grad and p.grad is None for p in fac.parameters())  # ... and no gradient is left behind


def test_flam_config_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="aggregator must be"):
        flam_config(aggregator="sum")
    with pytest.raises(ValueError, match="coupling must be"):
        flam_config(coupling="loose")
    with pytest.raises(ValueError, match="must be >= 0"):
        flam_config(slot_capacity=-1.0)
    with pytest.raises(ValueError, match="split_ratio >= 1"):
        flam_config(split_every=100, split_ratio=0.5)
    with pytest.raises(ValueError, match="needs factorizer.query_offsets=true"):
        flam_config(split_every=100)
    with pytest.raises(ValueError, match="mass_cap_weight and jump_cost must be >= 0"):
        flam_config(impurity_cost=-1.0)
    with pytest.raises(ValueError, match="mass_cap_weight and jump_cost must be >= 0"):
        flam_config(jump_cost=-1.0)
    with pytest.raises(ValueError, match="background_warmup and action_noise_warmup must be >= 0"):
        flam_config(background_warmup=-1)
    with pytest.raises(ValueError, match="background_warmup and action_noise_warmup must be >= 0"):
        flam_config(action_noise_warmup=-1)
    with pytest.raises(ValueError, match="needs factorizer.background_sink"):
        flam_config(background_cost=0.01)


@pytest.mark.parametrize("arch", ["flam", "flam-mixture", "monolithic"])
def test_loss_and_inference_shapes(arch: str) -> None:
    if arch.startswith("flam"):
        model = FLAM(flam_config(aggregator="mixture" if arch == "flam-mixture" else "attention"))
        k, a = K, A
    else:
        model = Monolithic(MonolithicConfig(feature_dim=E, grid=G, width=16, heads=2, action_dim=12))
        k, a = 1, 12
    z = codes()
    loss = model(z)
    assert loss.loss.ndim == 0 and torch.isfinite(loss.loss)
    assert set(loss.logs) == {"mse", "kl"}
    assert loss.prediction.shape == (2, 4, E, G, G)
    inference = model.eval().infer(z)
    assert inference.actions.shape == (2, 4, k, a)
    assert inference.masks.shape == (2, 5, k, G, G)
    state = model.start(z[:, :2])
    nxt = model.predict(state, torch.zeros(2, k, a))
    assert nxt.shape == (2, E, G, G)
    assert model.observe(state, nxt).masks.shape == (2, k, G, G)


def test_default_presets_are_capacity_matched() -> None:
    from flam.models.presets import lam_preset

    flam_cfg, _ = lam_preset("default", "flam", 5, 8, 6, 48)
    mono_cfg, _ = lam_preset("default", "monolithic", 5, 8, 6, 48)
    n_flam = sum(p.numel() for p in FLAM(flam_cfg).parameters())
    n_mono = sum(p.numel() for p in Monolithic(mono_cfg).parameters())
    assert abs(n_mono - n_flam) / n_flam <= 0.2
    assert flam_cfg.action_dim * flam_cfg.factorizer.n_slots == mono_cfg.action_dim


def test_action_rates_are_the_kl_from_the_prior_per_slot() -> None:
    """A slot at the prior carries 0 nats; a unit shift of one mean adds 0.5; a halved std adds ln 2 - 3/8."""
    actions = torch.zeros(1, 1, 3, 2)
    std = torch.ones(1, 1, 3, 2)
    actions[0, 0, 1, 0] = 1.0
    std[0, 0, 2, 1] = 0.5
    inference = Inference(torch.zeros(1, 2, 3, 4), torch.full((1, 2, 3, 1, 1), 1 / 3), actions, std)
    expected = torch.tensor([0.0, 0.5, 0.5 * (0.25 - 1 - 2 * torch.log(torch.tensor(0.5)).item())])
    assert torch.allclose(inference.rates()[0, 0], expected, atol=1e-6)
