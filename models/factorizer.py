"""Slot Attention with causal temporal attention: splits each feature grid into K slots that keep their identity.

Every timestep starts from the same K learned slot initialisations; in each iteration the slots compete for
the feature tokens (softmax over slots, weighted mean over tokens), then each slot attends causally to its own
values at the same iteration over the last `temporal_window` timesteps. Time is processed in parallel during
training; `step` adds one timestep with a cache of the past and gives the same result (tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flam.models.layers import MLP, Attention
from flam.models.tokenizer import FSQ

EPS = 1e-8
# A slot split (`Factorizer.split_slot`) fits the two slots' query offsets by this many Adam steps of this rate, with
# this weight on keeping every other token where it was (chosen by eye in a one-off probe of an earlier fit: at weight 1
# splitting one pair of agents drew a third agent's token into the pair, less so at 4).
SPLIT_STEPS = 100
SPLIT_LR = 0.05
SPLIT_KEEP = 4.0


@dataclass(frozen=True)
class FactorizerConfig:
    feature_dim: int = 5  # E: channels of the tokenizer's feature grid
    grid: int = 8  # h = w: tokens per side
    n_slots: int = 6  # K
    width: int = 64  # D
    heads: int = 4
    iterations: int = 3
    temporal_attention: bool = True  # False: the paper's ablation, slots start from the previous step's slots
    temporal_window: int = 4  # W: a slot attends to its own values at t-W+1..t
    # Slot Attention's weighted mean divides by a slot's attention mass, so a slot that wins almost no token
    # still reads a full-strength mean of the few it touches, and that mean follows whatever entity is nearest:
    # an empty slot becomes a second, weaker copy of an entity (the earlier 4-agent default had one: on validation
    # episodes it predicted an agent's cell with DCI importance 0.59, against 0.90 for the agent's own slot). Dividing
    # by max(mass, mass_floor) instead makes a slot with under `mass_floor` tokens' worth of attention read a
    # proportionally faded mean, so an empty slot reads ~0. 0 keeps the original rule (with its epsilon).
    mass_floor: float = 0.0
    # A (K+1)-th competitor for the tokens, with a learned query of its own, whose read is thrown away: tokens that
    # no slot needs (the static background) can go there instead of into a slot. Without it the background fills
    # one or two slots, and since a slot reads a weighted mean over the tokens it wins, a background slot's value is
    # the mean over the grid minus the entities' cells: it encodes where the entities are (on the earlier 4-agent
    # default, the two background slots predicted the agents' cells with DCI importance 0.10-0.46 each, holding
    # completeness over all slots at 0.60). With the sink the masks sum to at most 1 over the K slots; the rest is
    # background. Only a cost (FLAMConfig.background_cost, and impurity_cost, which gives each token to one
    # competitor) gives the background a reason to move there.
    background_sink: bool = False
    # A slot reads only the tokens it holds at least this share of. A softmax never gives a token exactly 0, so a
    # slot that holds no entity still reads a faint mean over the grid with holes where the entities are, and
    # after the slot's own layers (and a probe's standardisation) that faint read says where they are: with the
    # sink, slots of mass 0.04 and 0.07 still predicted agents' cells (DCI importance 0.08-0.20 on validation).
    # 0 = every token counts.
    read_threshold: float = 0.0
    # The tokenizer's FSQ levels, to give every whole code (one of prod(levels)) a learned embedding of its own, added
    # to the linear embedding of its values. The linear embedding keeps codes that are close close in key space, and
    # since every frame's slots start from the same learned queries, agents whose codes are close share a slot: at
    # 8 agents blue and teal, red, yellow and orange (reports/recipe-variants, scripts/agent_key_distances.py). A
    # code of its own could let near codes get far keys; tried once (4 agents, K = 10) it did not part the nearest pair
    # and the actions started later, so nothing shipped uses it (reports/recipe-variants). () = off.
    code_levels: tuple[int, ...] = ()
    # A learned offset per slot, added to its attention query in every iteration (zeros at the start: the same model).
    # A slot split (FLAMConfig.split_every) then copies the crowded slot's initialisation exactly and parts the two by
    # their offsets alone, so the copy starts from the same state and means the same to the rest of the network while
    # it competes for other tokens. Parted by their initialisations instead, every split was undone by training
    # within 250 steps; parted by offsets, a split held through 100 steps of a probe (scripts/split_probe.py), but in a
    # fine-tuning run one of the pair still took all the agents back within 250 steps (reports/recipe-variants).
    query_offsets: bool = False
    # Add to every output slot a learned projection (zeros at the start: the same model) of where its attention mask
    # is: the mask's centroid on the grid, divided by max(mass, 1) as the mass floor divides the read, and its mass up
    # to 1. A slot's value is a weighted mean of its tokens' contents, in which position is only a small learned
    # embedding, so a slot may say what its entity looks like and not where it is: at 8 agents no shipped or tried
    # model ever moved an agent one cell (every move lost one step ahead, while turns in place were right), and the
    # inverse dynamics could not tell a move from its slots (a probe on the inferred actions recalled none of them; at
    # 4 agents 68%: scripts/step_errors.py, scripts/action_probe.py, reports/recipe-variants). With the centroid in
    # the slot, a move is a change of the slot that the inverse dynamics sees. Tried at 8 agents as fine-tuning and
    # from scratch (with the background sink: the shipped model's final validation error at half its steps), the
    # actions still carried no move on their own; with the aggregator's neighbourhood and a loss weight on changed
    # cells (FLAMConfig) the shipped 8-agent flam-anchored moves agents, and uses it (reports/recipe-variants).
    slot_positions: bool = False
    # With slot_positions: also add a learned projection (zeros at the start: the same model) of the centroid's cell
    # code, each axis's centroid as shares of the grid's rows and of its columns (hat functions: a centroid on a
    # token's row is all that row; between two rows it is split between them). The 2-d centroid, projected linearly,
    # places a slot to within about a cell but no finer for a linear read: at 8 agents every slot's mask peaked on
    # its agent's cell in every validation frame, while DCI's linear probes from the slots named the cell in 0.86 of
    # them, and 99.7% of the misses were one cell off (scripts/probe_misses.py). With the cell code, a cell is a
    # direction of its own in the slot (FLAMConfig.cell_readout asks the slot to keep it readable).
    slot_cells: bool = False
    # With temporal attention: each timestep's first iteration starts from the learned initialisation plus a learned
    # projection (zeros at the start: the same model) of the slot's value at the previous timestep, as the recurrent
    # ablation's slots start from theirs. Without it every frame's first iteration competes from the same queries,
    # and the temporal attention only joins after it: at 8 agents slots swapped agents of similar hue from frame to
    # frame (the slot holding the blue agent's cell changed in 20% of transitions; scripts/slot_masses.py). Frames
    # are then attended one after another in training too (the ablation's loop), not all at once, at the same speed
    # here. Fine-tuned into the shipped 8-agent flam-anchored: the blue agent kept its slot in every frame from then
    # on; the slots that still took a second agent now and then stopped with FLAMConfig.jump_cost (recipe-variants).
    carry_slots: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "code_levels", tuple(self.code_levels))  # a JSON list from --set or config.json
        if any(not isinstance(n, int) or n < 2 for n in self.code_levels):
            raise ValueError(
                f"factorizer.code_levels must be the tokenizer's FSQ levels (ints >= 2), got {self.code_levels}"
            )
        if self.code_levels and len(self.code_levels) != self.feature_dim:
            raise ValueError(
                f"factorizer.code_levels has {len(self.code_levels)} levels for {self.feature_dim} feature channels"
            )
        if self.mass_floor < 0:
            raise ValueError(f"factorizer.mass_floor must be >= 0 (tokens' worth of attention), got {self.mass_floor}")
        if not 0 <= self.read_threshold < 1:
            raise ValueError(f"factorizer.read_threshold must be in [0, 1), got {self.read_threshold}")
        if self.slot_cells and not self.slot_positions:
            raise ValueError("factorizer.slot_cells needs slot_positions=true: it codes the same centroid by cells")
        if self.carry_slots and not (self.temporal_attention and self.temporal_window >= 2):
            raise ValueError(
                "factorizer.carry_slots needs temporal_attention=true and temporal_window >= 2 (the recurrent "
                "ablation's slots already start from the previous timestep's)"
            )


@dataclass
class FactorizerCache:
    """What `step` needs of the past: each iteration's slot values over the last W-1 steps, and the last slots."""

    history: torch.Tensor  # [R, B, K, W-1, D] oldest first
    valid: torch.Tensor  # [B, W-1] bool: False where the history is shorter than the window
    slots: torch.Tensor  # [B, K, D] last output slots


@dataclass
class Factored:
    """What the factorizer makes of feature grids: slots, their attention masks, the cache for the next `step`;
    with the background sink, the log of the sink's share of every token in the last attention iteration (exact,
    for the background cost, which must see it however small it gets; None without a sink); and how split every
    token is between the competitors (the slots and the sink), averaged over the attention iterations."""

    slots: torch.Tensor  # [.., K, D]
    masks: torch.Tensor  # [.., K, N]
    cache: FactorizerCache
    background_log_share: torch.Tensor | None  # [.., N]
    impurity: torch.Tensor  # [.., N]: 1 - sum of squared shares (0 = one competitor holds the token)


def token_weights(masks: torch.Tensor, mass_floor: float, read_threshold: float = 0.0) -> torch.Tensor:
    """masks [.., K, N] -> each slot's weights over tokens: its weighted mean, faded below `mass_floor` of mass,
    over the tokens it holds at least `read_threshold` of."""
    if read_threshold > 0:
        masks = masks * (masks >= read_threshold)
    if mass_floor > 0:
        return masks / masks.sum(dim=-1, keepdim=True).clamp_min(mass_floor)
    return (masks + EPS) / (masks + EPS).sum(dim=-1, keepdim=True)


def cell_code(centroid: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """centroid [.., 2] (row, col) in grid coordinates, centres [g] the rows' coordinates -> [.., 2g]: per axis, the
    centroid's shares of the rows (columns) as hat functions. Each axis's shares sum to 1, and weighted by the
    centres they sum to the centroid."""
    spacing = centres[1] - centres[0]
    shares = (1 - (centroid[..., None] - centres).abs() / spacing).clamp_min(0)  # [.., 2, g]
    return shares.flatten(-2)


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No gradient reaches the module's parameters inside (a fit of something else through it)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def kmeans(x: torch.Tensor, k: int, iterations: int = 20) -> torch.Tensor:
    """x [P, D] -> each point's cluster [P] of k, from centres picked farthest-first (deterministic)."""
    centres = [x[(x - x.mean(0)).norm(dim=1).argmax()]]
    for _ in range(1, min(k, len(x))):
        centres.append(x[torch.cdist(x, torch.stack(centres)).min(dim=1).values.argmax()])
    c = torch.stack(centres)  # [k, D]
    for _ in range(iterations):
        assign = torch.cdist(x, c).argmin(dim=1)  # [P]
        c = torch.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(len(c))])
    return torch.cdist(x, c).argmin(dim=1)


def entity_halves(keys: torch.Tensor, held: torch.Tensor, grid: int, kinds: int = 16) -> torch.Tensor:
    """Cut the held tokens in two so that each entity's tokens stay on one side.

    An entity's tokens look different as its pose changes (at 8 agents an agent's four headings give four
    clusters of keys, some nearer another agent's than each other), so the keys are first grouped into `kinds` by
    k-means, the kinds are linked by how often a token of one lies within a cell of a token of the other in the next
    frame (an entity moves at most one cell a step, and its pose changes in place), and the link graph is cut in two
    by the sign of its normalised Fiedler vector. The default 16 kinds were picked on one batch; how the cut falls
    for other counts and clips: scripts/split_cuts.py (the clips matter more than the count). keys [B, T, N, D],
    held [B, T, N] bool -> [B, T, N]: +1 or -1 on held tokens, 0 elsewhere."""
    labels = kmeans(keys[held], kinds)  # [P]
    k = int(labels.max()) + 1
    kind = torch.zeros(*held.shape, k, device=keys.device)  # [B, T, N, k] one-hot, zero where not held
    kind[held] = F.one_hot(labels, k).float()
    cell = torch.arange(grid * grid, device=keys.device)
    rows, cols = cell // grid, cell % grid
    near = ((rows[:, None] - rows[None]).abs() <= 1) & ((cols[:, None] - cols[None]).abs() <= 1)  # [N, N]
    links = torch.einsum("btnk,nm,btml->kl", kind[:, :-1], near.float(), kind[:, 1:])  # [k, k]
    links = links + links.T
    # The normalised cut (Shi and Malik): the plain Laplacian's cut would split off a kind with a handful of tokens.
    scale = links.sum(1).clamp_min(EPS).rsqrt()  # [k]
    laplacian = torch.eye(k, device=keys.device) - scale[:, None] * links * scale[None]
    fiedler = scale * torch.linalg.eigh(laplacian)[1][:, 1] if k > 1 else torch.zeros(1, device=keys.device)
    side = fiedler > 0
    if side.all() or not side.any():  # several unlinked groups of kinds: the vector need not change sign
        side = fiedler > fiedler.median()
    return torch.einsum("btnk,k->btn", kind, torch.where(side, 1.0, -1.0))


class Factorizer(nn.Module):
    """Feature grids -> slots [.., K, D] and attention masks [.., K, N] (masks sum to 1 over slots, or to 1 minus
    the background's share with the background sink)."""

    def __init__(self, config: FactorizerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        n = config.grid * config.grid
        self.embed = nn.Linear(config.feature_dim, d)
        if config.code_levels:
            levels = config.code_levels
            self.code_fsq = FSQ(levels)  # the tokenizer's lattice: snaps predictions onto it and numbers each level
            strides = [math.prod(levels[e + 1 :]) for e in range(len(levels))]  # mixed radix, last channel fastest
            self.register_buffer("code_stride", torch.tensor(strides).view(-1, 1, 1), persistent=False)
            # As large as the linear embedding's outputs (~0.4): codes start apart without drowning their values.
            self.code_embed = nn.Embedding(math.prod(levels), d)
            nn.init.normal_(self.code_embed.weight, std=0.4)
        else:
            self.code_embed = None
        self.position = nn.Parameter(torch.randn(n, d) * 0.02)
        self.input_mlp = MLP(d)
        self.norm_input = nn.LayerNorm(d)
        self.to_k = nn.Linear(d, d, bias=False)
        self.to_v = nn.Linear(d, d, bias=False)
        self.slot_init = nn.Parameter(torch.randn(config.n_slots, d))  # learned, one per slot
        self.query_offset = nn.Parameter(torch.zeros(config.n_slots, d)) if config.query_offsets else None
        # The sink's query is learned but, unlike a slot's, never updated from what it reads; zeros = an even start.
        self.sink_query = nn.Parameter(torch.zeros(d)) if config.background_sink else None
        self.norm_slots = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, d, bias=False)
        self.gru = nn.GRUCell(d, d)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = MLP(d)
        self.norm_temporal = nn.LayerNorm(d)
        self.temporal = Attention(d, config.heads)
        if config.slot_positions:
            axis = torch.linspace(-1, 1, config.grid)
            coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(n, 2)  # (row, col) [N, 2]
            self.register_buffer("coords", coords, persistent=False)
            self.place = nn.Linear(3, d)
            nn.init.zeros_(self.place.weight)
            nn.init.zeros_(self.place.bias)
        else:
            self.place = None
        if config.slot_cells:
            self.register_buffer("centres", axis, persistent=False)  # [g] the rows' (and columns') coordinates
            self.place_cells = nn.Linear(2 * config.grid, d, bias=False)
            nn.init.zeros_(self.place_cells.weight)
        else:
            self.place_cells = None
        if config.carry_slots:
            self.carry = nn.Linear(d, d)
            nn.init.zeros_(self.carry.weight)
            nn.init.zeros_(self.carry.bias)
        else:
            self.carry = None

    def _keys_values(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [M, E, h, w] -> keys, values [M, N, D]."""
        x = self.embed(z.flatten(2).transpose(1, 2)) + self.position  # [M, N, D]
        if self.code_embed is not None:
            x = x + self.code_embed(self._code_index(z))
        x = self.norm_input(x + self.input_mlp(x))  # [M, N, D]
        return self.to_k(x), self.to_v(x)

    def _code_index(self, z: torch.Tensor) -> torch.Tensor:
        """z [M, E, h, w] -> the index of every token's whole code [M, N]; off-lattice values snap to the nearest."""
        digits = self.code_fsq.indices(self.code_fsq.snap(z.float())).long()  # [M, E, h, w]
        return (digits * self.code_stride).sum(1).flatten(1)

    def _attend(
        self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_offset: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One slot-attention update. slots [M, K, D], k/v [M, N, D], query_offset [K, D] or None -> slots [M, K, D],
        masks [M, K, N], the log of the sink's share of every token [M, N] (None without a sink), and every token's
        impurity [M, N]."""
        m, n_slots, d = slots.shape
        q = self.to_q(self.norm_slots(slots))  # [M, K, D]
        if query_offset is not None:
            q = q + query_offset
        logits = torch.einsum("mkd,mnd->mkn", q, k) * d**-0.5  # [M, K, N]
        if self.sink_query is None:
            masks = logits.softmax(dim=1)  # softmax over SLOTS: slots compete for every token
            background_log_share = None
            impurity = 1 - masks.float().square().sum(dim=1)
        else:
            sink = torch.einsum("d,mnd->mn", self.sink_query, k) * d**-0.5  # [M, N]
            log_masks = torch.cat([logits, sink[:, None]], dim=1).float().log_softmax(dim=1)  # [M, K + 1, N]
            background_log_share = log_masks[:, n_slots]  # [M, N]
            shares = log_masks.exp()  # [M, K + 1, N]
            masks = shares[:, :n_slots]
            impurity = 1 - shares.square().sum(dim=1)
        weights = token_weights(masks, self.config.mass_floor, self.config.read_threshold)  # [M, K, N]
        updates = torch.einsum("mkn,mnd->mkd", weights, v)  # [M, K, D]
        slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).reshape(m, n_slots, d)
        return slots + self.mlp(self.norm_mlp(slots)), masks, background_log_share, impurity

    def split_slot(self, source: int, target: int, z: torch.Tensor) -> bool:
        """Make slot `target` a second copy of slot `source` that takes part of its entities (needs `query_offsets`).

        The copy gets the source's initialisation exactly, so both start from the same state; the tokens `source`
        holds in the feature grids z [B, T, E, h, w] are cut in two along entities (`entity_halves`), and the two
        slots' query offsets are fitted to give one half to each (`_fit_split`). Tried at 8 agents and undone by
        training within 250 steps every time (reports/recipe-variants): copies moved apart at random (both stayed on
        every entity with half of each token), a cut between the 2-means centres of the keys (it followed the agents'
        headings), and this cut made by the initialisations instead of offsets (the copy, a different slot to the
        rest of the network, raised the error by a fifth). Returns False, changing nothing, when there are not two
        halves to give."""
        if self.query_offset is None:
            raise ValueError("splitting a slot needs factorizer.query_offsets=true")
        with torch.no_grad():
            keys, held, masks = self.held_tokens(source, z)
            if held.sum() < 2:
                return False
            sides = entity_halves(keys, held, self.config.grid)  # [B, T, N]: +1 to the target, -1 stays, 0 not held
            if sides.min() == sides.max():
                return False
            self.slot_init[target] = self.slot_init[source]
            self.query_offset[target] = self.query_offset[source]
        self._fit_split(source, target, z, sides, masks)
        return True

    @torch.no_grad()
    def held_tokens(self, slot: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tokens a slot holds in feature grids z [B, T, E, h, w]: those it holds more of than any other slot and
        more than an even share (not the sink's). -> every token's key [B, T, N, D] (float), held [B, T, N] bool,
        and every slot's masks [B, T, K, N]."""
        b, t = z.shape[:2]
        keys, _ = self._keys_values(z.flatten(0, 1))  # [B*T, N, D]
        masks = self(z).masks  # [B, T, K, N]
        held = (masks.argmax(dim=2) == slot) & (masks[:, :, slot] > 1 / (self.config.n_slots + 1))  # [B, T, N]
        return keys.unflatten(0, (b, t)).float(), held, masks

    def _fit_split(self, source: int, target: int, z: torch.Tensor, sides: torch.Tensor, before: torch.Tensor) -> None:
        """Fit the two slots' query offsets (nothing else) so that the tokens of one half go to `target`, those of the
        other stay with `source`, and every other token keeps its share of every slot (sides [B, T, N]: +1, -1, 0;
        before [B, T, K, N]: the masks before the split). Gradient steps through the whole attention: its iterations
        and the temporal attention carry a change of the first query much further than the first logit (solving for
        the first logits alone did not part the agents)."""
        base = self.query_offset.detach()
        pair = base[[target, source]].clone().requires_grad_(True)  # [2, D]
        others = [k for k in range(self.config.n_slots) if k not in (source, target)]
        order = torch.argsort(torch.tensor([target, source, *others]))  # rows of cat([pair, others]) -> slot order
        wanted = torch.where(sides > 0, target, source)  # [B, T, N] whose token it should be
        split, kept = sides != 0, before.clamp_min(EPS)
        optimizer = torch.optim.Adam([pair], lr=SPLIT_LR)
        with torch.enable_grad(), _frozen(self):
            for _ in range(SPLIT_STEPS):
                optimizer.zero_grad()
                masks = self(z, torch.cat([pair, base[others]])[order]).masks.clamp_min(EPS)  # [B, T, K, N]
                own = masks.gather(2, wanted[:, :, None]).squeeze(2)  # [B, T, N]
                split_loss = -own.log()[split].mean()
                drift = (kept * (kept.log() - masks.log())).sum(2)  # [B, T, N]: KL(before || now) per token
                keep_loss = drift[~split].mean() if (~split).any() else drift.sum() * 0
                (split_loss + SPLIT_KEEP * keep_loss).backward()
                optimizer.step()
        with torch.no_grad():
            self.query_offset[target] = pair[0]
            self.query_offset[source] = pair[1]

    def _placed(self, slots: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """slots [.., K, D], masks [.., K, N] -> the slots with where their masks are added (`slot_positions`)."""
        if self.place is None:
            return slots
        mass = masks.float().sum(dim=-1, keepdim=True)  # [.., K, 1]
        centroid = masks.float() @ self.coords / mass.clamp_min(1.0)  # [.., K, 2]
        placed = self.place(torch.cat([centroid, mass.clamp_max(1.0)], dim=-1))
        if self.place_cells is not None:
            placed = placed + self.place_cells(cell_code(centroid, self.centres))
        return slots + placed.to(slots.dtype)

    def _window_mask(self, t: int, device: torch.device) -> torch.Tensor:
        """[T, T] bool: query time i may attend key time j iff i-W < j <= i (causal, windowed)."""
        i = torch.arange(t, device=device)
        lag = i[:, None] - i[None, :]  # [T, T]
        return (lag >= 0) & (lag < self.config.temporal_window)

    def forward(self, z: torch.Tensor, query_offset: torch.Tensor | None = None) -> Factored:
        """z [B, T, E, h, w] -> slots [B, T, K, D], masks [B, T, K, N], sink's log share and impurity [B, T, N],
        cache after the last step. `query_offset` [K, D] replaces the learned one (to fit a slot split)."""
        offset = self.query_offset if query_offset is None else query_offset
        if not self.config.temporal_attention or self.carry is not None:
            return self._forward_stepwise(z, offset)
        b, t = z.shape[:2]
        k, v = self._keys_values(z.flatten(0, 1))  # [B*T, N, D]
        slots = self.slot_init.expand(b * t, -1, -1)  # [B*T, K, D]: every timestep starts from the same init
        mask = self._window_mask(t, z.device)
        history = []
        impurity = 0.0
        for _ in range(self.config.iterations):
            slots, masks, background, split = self._attend(slots, k, v, offset)  # [B*T, K, D], [B*T, K, N], [B*T, N] x2
            impurity = impurity + split / self.config.iterations
            per_slot = slots.reshape(b, t, *slots.shape[1:]).transpose(1, 2)  # [B, K, T, D]
            history.append(per_slot)
            h = self.norm_temporal(per_slot)
            per_slot = per_slot + self.temporal(h, h, mask)  # each slot over its own past only
            slots = per_slot.transpose(1, 2).flatten(0, 1)  # [B*T, K, D]
        slots = slots.reshape(b, t, *slots.shape[1:])  # [B, T, K, D]
        masks = masks.reshape(b, t, *masks.shape[1:])  # [B, T, K, N]
        if background is not None:
            background = background.reshape(b, t, -1)  # [B, T, N]
        cache = self._cache_from(torch.stack(history), slots[:, -1])
        return Factored(self._placed(slots, masks), masks, cache, background, impurity.reshape(b, t, -1))

    def _cache_from(self, history: torch.Tensor, last_slots: torch.Tensor) -> FactorizerCache:
        """history [R, B, K, T, D] -> the last W-1 steps, left-padded with invalid entries."""
        r, b, k, t, d = history.shape
        keep = self.config.temporal_window - 1
        pad = max(0, keep - t)
        history = history[:, :, :, max(0, t - keep) :]  # [R, B, K, <=W-1, D]
        history = torch.cat([history.new_zeros(r, b, k, pad, d), history], dim=3)  # [R, B, K, W-1, D]
        valid = torch.arange(keep, device=history.device) >= pad  # [W-1]
        return FactorizerCache(history, valid.expand(b, -1).clone(), last_slots)

    def empty_cache(self, batch: int, device: torch.device) -> FactorizerCache:
        """The cache before any frame was seen."""
        c = self.config
        history = torch.zeros(c.iterations, batch, c.n_slots, c.temporal_window - 1, c.width, device=device)
        valid = torch.zeros(batch, c.temporal_window - 1, dtype=torch.bool, device=device)
        return FactorizerCache(history, valid, self.slot_init.expand(batch, -1, -1).to(device))

    def step(self, z: torch.Tensor, cache: FactorizerCache, query_offset: torch.Tensor | None = None) -> Factored:
        """One new timestep. z [B, E, h, w] -> slots [B, K, D], masks [B, K, N], sink's log share and impurity
        [B, N], updated cache."""
        k, v = self._keys_values(z)  # [B, N, D]
        offset = self.query_offset if query_offset is None else query_offset
        if not self.config.temporal_attention:
            slots = cache.slots
            impurity = 0.0
            for _ in range(self.config.iterations):
                slots, masks, background, split = self._attend(slots, k, v, offset)
                impurity = impurity + split / self.config.iterations
            cache = FactorizerCache(cache.history, cache.valid, slots)
            return Factored(self._placed(slots, masks), masks, cache, background, impurity)
        b = z.shape[0]
        slots = self.slot_init.expand(b, -1, -1)  # [B, K, D]
        if self.carry is not None:  # where there is a previous timestep
            slots = slots + self.carry(cache.slots) * cache.valid[:, -1:, None]
        keep = self.config.temporal_window - 1
        valid = torch.cat([cache.valid, cache.valid.new_ones(b, 1)], dim=1)  # [B, W]
        new_history = []
        impurity = 0.0
        for r in range(self.config.iterations):
            slots, masks, background, split = self._attend(slots, k, v, offset)  # [B, K, D], [B, K, N], [B, N] x2
            impurity = impurity + split / self.config.iterations
            window = torch.cat([cache.history[r], slots[:, :, None]], dim=2)  # [B, K, W, D]
            new_history.append(window[:, :, window.shape[2] - keep :])
            h = self.norm_temporal(window)
            query = h[:, :, -1:]  # [B, K, 1, D]
            attn_mask = valid[:, None, None, :].expand(-1, slots.shape[1], 1, -1)  # [B, K, 1, W]
            slots = slots + self.temporal(query, h, attn_mask)[:, :, 0]  # [B, K, D]
        cache = FactorizerCache(torch.stack(new_history), valid[:, 1:], slots)
        return Factored(self._placed(slots, masks), masks, cache, background, impurity)

    def _forward_stepwise(self, z: torch.Tensor, query_offset: torch.Tensor | None) -> Factored:
        """One timestep after another (`step`), where a timestep's slots start from the previous timestep's: the
        recurrent ablation (SAVi-style) and `carry_slots`."""
        b, t = z.shape[:2]
        cache = self.empty_cache(b, z.device)
        steps = []
        for i in range(t):
            steps.append(self.step(z[:, i], cache, query_offset))
            cache = steps[-1].cache
        background = None if self.sink_query is None else torch.stack([s.background_log_share for s in steps], 1)
        return Factored(
            torch.stack([s.slots for s in steps], 1),
            torch.stack([s.masks for s in steps], 1),
            cache,
            background,
            torch.stack([s.impurity for s in steps], 1),
        )
