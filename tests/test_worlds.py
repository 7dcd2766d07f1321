"""The built-in worlds: determinism, and ground truth that agrees with the frames and with the rules."""

from __future__ import annotations

import numpy as np
import pytest

from flam.worlds.multigrid import FORWARD, ROOM, STAY, STEP, TURN_LEFT, TURN_RIGHT
from flam.worlds.palettes import FLOOR, PALETTES
from flam.worlds.registry import episode_rng, make_world
from flam.worlds.sprites import SHAPES


def _episodes(name: str, count: int, seed: int = 0, **params: object) -> list:
    world = make_world(name, **params)
    return [world.episode(episode_rng(seed, i)) for i in range(count)]


@pytest.mark.parametrize("name", ["multigrid", "sprites"])
def test_same_seed_same_episode_other_seed_other_episode(name: str) -> None:
    a, b, c = (_episodes(name, 1, seed=s, steps=8, distractors=1)[0] for s in (3, 3, 4))
    a.check()
    assert a.frames.shape == (9, 64, 64, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    for field in ("actions", "positions", "headings", "entity_map"):
        assert np.array_equal(getattr(a.truth, field), getattr(b.truth, field))
    assert not np.array_equal(a.frames, c.frames)


def test_multigrid_masks_lie_in_the_cell_of_each_position_and_carry_its_colour() -> None:
    for size in (32, 64, 128):
        cell = size // ROOM
        world = make_world("multigrid", n_agents=5, distractors=2, steps=6, image_size=size)
        episode = world.episode(episode_rng(1, 0))
        truth = episode.truth
        assert episode.frames.shape == (7, size, size, 3)
        for t in range(7):
            for k in range(7):
                rows, cols = np.nonzero(truth.entity_map[t] == k + 1)
                assert rows.size > 0, "every grid entity is always visible"
                r, c = (truth.positions[t, k] // cell).astype(int)
                assert 1 <= r < ROOM - 1 and 1 <= c < ROOM - 1
                assert rows.min() >= r * cell and rows.max() < (r + 1) * cell
                assert cols.min() >= c * cell and cols.max() < (c + 1) * cell
                assert np.all(episode.frames[t, rows, cols] == world.colors[k])
            floor = truth.entity_map[t] == 0
            assert not np.any(np.all(episode.frames[t][floor] == world.colors[0], axis=-1))
        positions = truth.positions.reshape(-1, 2)
        assert np.allclose(positions % cell, cell / 2), "positions are cell centres in pixels"


def _replay_rules(truth) -> dict[str, int]:
    """Check every step against the rules; count how often each case occurred."""
    cell = 8
    counts = {"blocked": 0, "moved": 0, "turned": 0, "stayed": 0}
    cells = (truth.positions // cell).astype(int)  # [T,N,2]
    n_agents = int((truth.headings[0] >= 0).sum())
    steps = truth.actions.shape[0]
    for t in range(steps):
        occupied = {tuple(p) for p in cells[t]}
        for i in range(n_agents):
            before, after = tuple(cells[t, i]), tuple(cells[t + 1, i])
            h0, h1 = int(truth.headings[t, i]), int(truth.headings[t + 1, i])
            action = int(truth.actions[t, i])
            if action in (TURN_LEFT, TURN_RIGHT):
                assert after == before, "a turn never moves"
                assert h1 == (h0 + (1 if action == TURN_RIGHT else -1)) % 4
                counts["turned"] += 1
            elif action == STAY:
                assert after == before and h1 == h0
                counts["stayed"] += 1
            else:
                assert action == FORWARD and h1 == h0, "forward never turns"
                target = (before[0] + STEP[h0][0], before[1] + STEP[h0][1])
                wall = target[0] in (0, ROOM - 1) or target[1] in (0, ROOM - 1)
                if wall or target in occupied:
                    assert after == before, f"blocked move changed position at t={t}, agent {i}"
                    counts["blocked"] += 1
                else:
                    assert after == target, f"free move did not happen at t={t}, agent {i}"
                    counts["moved"] += 1
            occupied.discard(before)
            occupied.add(after)
    return counts


def test_multigrid_follows_the_rules_blocked_moves_do_nothing_turns_change_heading_only() -> None:
    totals = {"blocked": 0, "moved": 0, "turned": 0, "stayed": 0}
    for episode in _episodes("multigrid", 6, n_agents=8, steps=24, distractors=2):
        for key, value in _replay_rules(episode.truth).items():
            totals[key] += value
        cells = episode.truth.positions // 8
        for t in range(cells.shape[0]):
            assert len({tuple(p) for p in cells[t]}) == cells.shape[1], "two entities share a cell"
    assert all(value > 10 for value in totals.values()), totals


def test_multigrid_distractors_are_uncontrolled_and_move_along_one_axis() -> None:
    episode = _episodes("multigrid", 1, n_agents=2, distractors=3, steps=20)[0]
    truth = episode.truth
    assert np.all(truth.actions[:, 2:] == -1) and np.all(truth.headings[:, 2:] == -1)
    assert np.all(truth.headings[:, :2] >= 0) and np.all(truth.actions[:, :2] >= 0)
    moves = np.abs(np.diff(truth.positions[:, 2:] // 8, axis=0)).sum(-1)  # [T-1,D]
    assert np.all(moves <= 1) and moves.sum() > 0
    for j in range(3):
        track = truth.positions[:, 2 + j] // 8
        assert len(set(track[:, 0])) == 1 or len(set(track[:, 1])) == 1


@pytest.mark.parametrize("name", ["multigrid", "sprites"])
def test_correlated_agents_take_identical_actions_others_do_not(name: str) -> None:
    episodes = _episodes(name, 3, n_agents=4, correlated=3, steps=30)
    for episode in episodes:
        actions = episode.truth.actions
        assert np.array_equal(actions[:, 0], actions[:, 1])
        assert np.array_equal(actions[:, 0], actions[:, 2])
        assert not np.array_equal(actions[:, 0], actions[:, 3])
    independent = _episodes(name, 1, n_agents=4, steps=30)[0].truth.actions
    assert not np.array_equal(independent[:, 0], independent[:, 1])


def test_persistence_gives_runs_of_actions() -> None:
    sticky = _episodes("multigrid", 1, n_agents=8, steps=200, persistence=0.95)[0].truth.actions
    fresh = _episodes("multigrid", 1, n_agents=8, steps=200, persistence=0.0)[0].truth.actions
    assert (np.diff(sticky, axis=0) == 0).mean() > 0.9
    assert (np.diff(fresh, axis=0) == 0).mean() < 0.4


def test_sprites_masks_match_shapes_at_positions() -> None:
    world = make_world("sprites", n_agents=6, distractors=2, steps=10)
    episode = world.episode(episode_rng(2, 0))
    truth, radius = episode.truth, world.config.radius * 64
    centres = np.arange(64) + 0.5
    top = 5  # the last agent is drawn on top of everything, so its whole shape is visible
    for t in range(11):
        for k in range(8):
            dy = (centres[:, None] - truth.positions[t, k, 0]) / radius
            dx = (centres[None, :] - truth.positions[t, k, 1]) / radius
            shape = SHAPES[world.shapes[k]](dy, dx)
            visible = truth.entity_map[t] == k + 1
            assert not np.any(visible & ~shape), "a mask pixel lies outside the entity's shape"
            if k == top:
                assert np.array_equal(visible, shape)
            assert np.all(episode.frames[t][visible] == world.colors[k])
        assert np.all(episode.frames[t][truth.entity_map[t] == 0] == FLOOR)
    assert np.all(truth.positions >= radius - 1e-4) and np.all(truth.positions <= 64 - radius + 1e-4)
    assert np.all(truth.headings == -1) and np.all(truth.actions[:, 6:] == -1)


def test_sprites_actions_accelerate_the_agent() -> None:
    world = make_world("sprites", n_agents=8, steps=40, persistence=0.9)
    pushes = {1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}
    agree = total = 0
    for i in range(4):
        truth = world.episode(episode_rng(0, i)).truth
        velocity = np.diff(truth.positions, axis=0)  # [T-1,N,2]
        change = np.diff(velocity, axis=0)  # [T-2,N,2]
        for t in range(change.shape[0]):
            for k in range(8):
                action = int(truth.actions[t + 1, k])
                if action in pushes and np.all(np.abs(velocity[t : t + 2, k]) < 3.0):
                    agree += int(np.dot(change[t, k], pushes[action]) > 0)
                    total += 1
    assert total > 50 and agree / total > 0.8


def test_heldout_palette_uses_other_colours() -> None:
    default = make_world("multigrid", palette="default").colors
    heldout = make_world("multigrid", palette="heldout").colors
    assert default == [list(c) for c in PALETTES["default"][:4]]
    assert not {tuple(c) for c in default} & {tuple(c) for c in heldout}
    frames = _episodes("multigrid", 1, palette="heldout", steps=2)[0].frames
    assert any(np.all(frames == heldout[0], axis=-1).ravel())


@pytest.mark.parametrize(
    "params, field",
    [
        ({"n_agents": 0}, "agents"),
        ({"n_agents": 9}, "agents"),
        ({"image_size": 60}, "size"),
        ({"correlated": 1}, "correlated"),
        ({"correlated": 5}, "correlated"),
        ({"persistence": 1.5}, "persistence"),
        ({"palette": "neon"}, "palette"),
        ({"distractors": -1}, "distractors"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_world_options_name_the_option(params: dict, field: str) -> None:
    for name in ("multigrid", "sprites"):
        with pytest.raises(ValueError, match=rf"^{field}:"):
            make_world(name, **params)
    with pytest.raises(ValueError, match="^world:"):
        make_world("pong")
