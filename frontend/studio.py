"""The studio's behaviour without Gradio: each handler takes the session and control values and returns the
outputs it changes, by name. `flam.frontend.app` wires these to components; tests call them directly.

A session holds one scene (a model, a context, its slot masks and axes) and the selected slot's edit. Every
rollout shown is a pair: the baseline (no edit on the selected slot) and the edited request, which differ only in
that slot's actions; the difference between their frames is what the heatmap and the locality meter show.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from flam.frontend import imaging
from flam.frontend.client import ApiError, Episodes, FlamClient, ModelInfo, Rollout, decode_png
from flam.frontend.steering import (
    Context,
    Mode,
    Others,
    SlotAxes,
    SlotEdit,
    Steps,
    base_request,
    correspondence,
    direction_names,
    edited_request,
    from_sliders,
    monolithic_edit,
    monolithic_requests,
    prior_sample,
    shortcut_keys,
    slider_range,
    slot_axes,
    to_sliders,
)

MAX_SLIDERS = 16  # sliders on the page; a slot with a larger action shows its 16 most important axes
MAX_NAMED = 8  # buttons named after ground-truth actions
SLIDER_STEP = 0.01
DEFAULT_HORIZON = 10
SCENE_PX = 320  # the clickable frame's side
LEGEND_PX = 96
PLAYBACK_PX = 192  # one panel of the playback animation
STRIP_PX = 64  # one filmstrip cell (the page scales it up, pixelated)
FRAME_MS = 250
HOLD_LAST_MS = 750
BASELINES_KEPT = 16  # baseline rollouts remembered per session (the slider drags only re-run the edited one)
FILES_MAX_AGE_S = 3600.0
PRUNE_EVERY_S = 60.0


@dataclass(frozen=True)
class Controls:
    """The steering controls' values as the page sends them."""

    sliders: tuple[float, ...]
    steps: Steps = "all"
    step: int = 0
    others: Others = "keep"
    monolithic: bool = False


@dataclass
class Scene:
    """A model and a context ready to steer: its last context frame with slot masks, axes and inferred plan."""

    model: ModelInfo
    mono: ModelInfo | None
    axes: list[SlotAxes]
    mono_axes: SlotAxes | None
    limit: float  # sliders span [-limit, limit]
    context: Context
    label: str
    frame: np.ndarray  # uint8 [H, W, 3], the last context frame
    masks: np.ndarray  # float [K, h, w], its slot masks
    max_horizon: int
    action_names: list[str] | None
    entity_colors: list[list[int]] | None
    ownership: np.ndarray | None  # [K, N]: share of this episode's frames in which slot k owns entity n
    reference: imaging.FrameStats | None  # colour statistics of the bundled episodes


@dataclass
class Session:
    """One browser tab's state (Gradio keeps one per tab)."""

    scene: Scene | None = None
    slot: int = 0
    mode: Mode = "delta"
    principal: bool = True
    draws: int = 0  # prior samples drawn by the 'sample prior' button
    seed: int = 0  # seed of the 'prior' base plan when the other slots are sampled
    baselines: OrderedDict[str, Rollout] = field(default_factory=OrderedDict)
    recipe: dict[str, Any] | None = None  # the last edited rollout's recipe (what export replays)
    runs: int = 0  # comparisons drawn so far (the page marks each one, so a watcher knows when it changed)


def _key(request: dict[str, Any]) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"))


def _scale(size: int, target: int) -> int:
    return max(1, target // size)


class Studio:
    """Handlers over a FLAM API client; files it hands to the page live under `workdir`."""

    def __init__(self, client: FlamClient, workdir: Path | None = None) -> None:
        self.client = client
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="flam-studio-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.models: list[ModelInfo] = []
        self.limits: dict[str, Any] = {}
        self._episodes: dict[str, Episodes] = {}
        self._stats: dict[str, dict[str, Any] | None] = {}
        self._pruned = 0.0

    # --- files handed to the page --------------------------------------------------------------------------

    def _file(self, suffix: str, name: str = "flam") -> Path:
        """A fresh path for a file the page shows or downloads; files older than an hour are removed (checked at
        most once a minute: Gradio has copied them into its own cache long before)."""
        now = time.time()
        if now - self._pruned > PRUNE_EVERY_S:
            self._pruned = now
            for old in self.workdir.glob("*/*"):
                if old.stat().st_mtime < now - FILES_MAX_AGE_S:
                    old.unlink(missing_ok=True)
                    old.parent.rmdir()
        folder = self.workdir / uuid.uuid4().hex[:12]
        folder.mkdir()
        return folder / f"{name}{suffix}"

    # --- models and scenes ---------------------------------------------------------------------------------

    def _model(self, name: str) -> ModelInfo:
        for model in self.models:
            if model.name == name:
                return model
        raise ApiError(f"unknown model {name!r}; the API serves {', '.join(m.name for m in self.models) or 'none'}")

    def _episodes_of(self, model: str) -> Episodes:
        if model not in self._episodes:
            self._episodes[model] = self.client.episodes(model)
        return self._episodes[model]

    def _stats_of(self, model: ModelInfo) -> dict[str, Any] | None:
        """GET /action-stats, or None for a model without bundled episodes (404)."""
        if model.name not in self._stats:
            try:
                self._stats[model.name] = self.client.action_stats(model.name)
            except ApiError as error:
                if error.status != 404:
                    raise
                self._stats[model.name] = None
        return self._stats[model.name]

    def _monolithic_of(self, model: ModelInfo) -> ModelInfo | None:
        """The monolithic baseline trained on the same set ('<set>/monolithic'), if the API serves it."""
        set_name = model.name.split("/")[0]
        return next((m for m in self.models if m.kind == "monolithic" and m.name.split("/")[0] == set_name), None)

    def _reference(self, episodes: Episodes) -> imaging.FrameStats | None:
        return imaging.FrameStats.of([decode_png(t) for t in episodes.thumbnails]) if episodes.thumbnails else None

    def _new_scene(
        self,
        model: ModelInfo,
        body: dict[str, Any],
        horizon: int,
        label: str,
        max_horizon: int,
        frames: list[np.ndarray] | None = None,
    ) -> tuple[Scene, Rollout]:
        """A scene from a context body: one 'inferred' (or 'zero') rollout gives the plan, one analysis the masks."""
        episodes = self._episodes_of(model.name)
        episode = "episode" in body
        first = {"model": model.name, "context": body, "horizon": horizon, "return_masks": True, "edits": []}
        first["actions"] = "inferred" if episode else "zero"
        first["seed"] = 0
        rollout = self.client.rollout(first)
        context_body = rollout.recipe["context"]
        if episode:
            start, length = body.get("start", 0), body.get("length", 1)
            total = episodes.frames[episodes.ids.index(body["episode"])]
            analysis = self.client.analyse(
                {"model": model.name, "context": {"episode": body["episode"], "start": 0, "length": total}}
            )
            masks = analysis.masks[start + length - 1]  # [K, h, w]
            frame, _ = self.client.episode_frames(body["episode"], model.name, start + length - 1, 1)
            frame = frame[0]
            ownership = (
                correspondence(analysis.entity_slots, model.n_slots) if analysis.entity_slots is not None else None
            )
        else:
            analysis = self.client.analyse({"model": model.name, "context": {"frames": context_body["frames"]}})
            masks = analysis.masks[-1]
            frame = decode_png(context_body["frames"][-1])
            ownership = None
        stats = self._stats_of(model)
        mono = self._monolithic_of(model)
        mono_stats = self._stats_of(mono) if mono is not None else None
        axes = slot_axes(stats, model.n_slots, model.action_dim)
        inferred = rollout.actions if episode else None
        scene = Scene(
            model=model,
            mono=mono,
            axes=axes,
            mono_axes=None if mono is None else slot_axes(mono_stats, 1, mono.action_dim)[0],
            limit=slider_range(axes),
            context=Context(model.name, context_body, horizon, inferred),
            label=label,
            frame=frame,
            masks=masks,
            max_horizon=max_horizon,
            action_names=model.action_names,
            entity_colors=episodes.entity_colors,
            ownership=ownership,
            reference=self._reference(episodes),
        )
        return scene, rollout

    def _horizon_limit(self) -> int:
        return int(self.limits.get("max_horizon", 32))

    # --- handlers ------------------------------------------------------------------------------------------

    def load(self, session: Session) -> dict[str, Any]:
        """Page load: connect, list the models and open the default model's first episode."""
        health = self.client.health()
        self.limits = health.get("limits", {})
        self.models = [m for m in self.client.models() if m.kind == "flam"] + [
            m for m in self.client.models() if m.kind != "flam"
        ]
        flam = [m for m in self.models if m.kind == "flam"]
        if not flam:
            problem = health.get("problem") or "the API serves no FLAM model"
            return {"session": session, "status": self._status(health, problem)}
        default = next((m for m in flam if m.default), flam[0])
        out = self.select_model(session, default.name)
        out["status"] = self._status(health)
        out["model"] = {"choices": [m.name for m in flam], "value": default.name}
        return out

    def select_model(self, session: Session, name: str) -> dict[str, Any]:
        """Open a model: its episodes gallery and the first episode (or an empty scene without episodes)."""
        model = self._model(name)
        episodes = self._episodes_of(model.name)
        gallery = [
            (decode_png(t), f"#{i} · {n}f")
            for i, t, n in zip(episodes.ids, episodes.thumbnails, episodes.frames, strict=True)
        ]
        if not episodes.ids:
            session.scene = None
            return {
                "session": session,
                "episodes": gallery,
                "upload_note": f"**{name}** has no bundled episodes: upload PNG frames to start.",
            }
        out = self.select_episode(session, 0, name)
        out["episodes"] = gallery
        return out

    def select_episode(self, session: Session, index: int, name: str | None = None) -> dict[str, Any]:
        """Open bundled episode `index` (gallery position) of the model (default: the session's)."""
        model = self._model(name) if name is not None else self._current(session).model
        episodes = self._episodes_of(model.name)
        episode = episodes.ids[index]
        total = episodes.frames[index]
        max_horizon = max(1, min(self._horizon_limit(), total - 1))
        horizon = min(DEFAULT_HORIZON, max_horizon)
        body = {"episode": episode, "start": 0, "length": 1}
        label = f"episode {episode} of {model.name}" + (f" ({model.unfinished})" if model.unfinished else "")
        scene, _ = self._new_scene(model, body, horizon, label, max_horizon)
        return self._open(session, scene, upload_note="")

    def upload(self, session: Session, paths: list[str] | None, name: str) -> dict[str, Any]:
        """Use uploaded PNG frames (oldest first, by file name) as the context; warn when they look unlike the
        model's training data. The API decides whether they are usable; its message is shown otherwise."""
        if not paths:
            return {}
        model = self._model(name)
        paths = sorted(paths, key=lambda p: Path(p).name)
        texts, frames = [], []
        for path in paths:
            data = Path(path).read_bytes()
            texts.append(base64.b64encode(data).decode("ascii"))
            try:
                with Image.open(path) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except (OSError, ValueError):
                pass  # the API names the unreadable frame
        horizon = min(DEFAULT_HORIZON, self._horizon_limit())
        label = f"your {len(paths)} frame{'s' if len(paths) > 1 else ''}"
        scene, _ = self._new_scene(model, {"frames": texts}, horizon, label, self._horizon_limit())
        notes = imaging.upload_warnings(frames, scene.reference, model.image_size) if frames and scene.reference else []
        if notes:
            note = (
                f"**Warning: these frames look unlike the training data of {model.name}:** "
                + "; ".join(notes)
                + ". Slots and rollouts may be poor."
            )
        else:
            note = f"✓ {label} look like the training data of {model.name}."
        return self._open(session, scene, upload_note=note)

    def set_horizon(self, session: Session, horizon: int, controls: Controls) -> dict[str, Any]:
        """Roll out a different number of steps (same context, same edit)."""
        scene = self._current(session)
        horizon = max(1, min(int(horizon), scene.max_horizon))
        if horizon == scene.context.horizon:
            return {}
        if scene.context.inferred is not None:
            first = {
                "model": scene.model.name,
                "context": scene.context.body,
                "horizon": horizon,
                "actions": "inferred",
                "return_masks": True,
                "edits": [],
            }
            inferred = self.client.rollout(first).actions
        else:
            inferred = None
        scene.context = Context(scene.model.name, scene.context.body, horizon, inferred)
        session.baselines.clear()
        out = self._run(session, replace(controls, step=min(controls.step, horizon - 1)))
        out["step"] = {"maximum": horizon - 1, "value": min(controls.step, horizon - 1)}
        return out

    def click_scene(self, session: Session, x: float, y: float, controls: Controls) -> dict[str, Any]:
        """Select the slot whose mask wins where the frame was clicked ((x, y) in displayed pixels); a click on the
        background (a cell no slot holds) keeps the selection and its edit."""
        scene = self._current(session)
        size = scene.frame.shape[0] * _scale(scene.frame.shape[0], SCENE_PX)
        slot = imaging.slot_at(scene.masks, x, y, size, size)
        return {"session": session} if slot is None else self.select_slot(session, slot, controls)

    def select_slot(self, session: Session, slot: int, controls: Controls) -> dict[str, Any]:
        """Select a slot: its edit starts from its inferred action (no change)."""
        scene = self._current(session)
        session.slot = min(max(0, int(slot)), scene.model.n_slots - 1)
        session.mode = "delta"
        values = self._slider_values(scene, session, np.zeros(scene.model.action_dim))
        out = self._selection(session)
        out.update(self._run(session, replace(controls, sliders=values)))
        return out

    def set_axes(self, session: Session, principal: bool, controls: Controls) -> dict[str, Any]:
        """Switch the sliders between principal directions and the raw basis; the action does not change."""
        scene = self._current(session)
        vector = self._vector(scene, session, controls.sliders)
        session.principal = bool(principal)
        values = self._slider_values(scene, session, vector)
        return {"session": session, **self._slider_updates(scene, session, values)}

    def preset(self, session: Session, which: str, controls: Controls) -> dict[str, Any]:
        """The reset / sample-prior / zero buttons and the named-action buttons ('name:<action>')."""
        scene = self._current(session)
        axes = scene.axes[session.slot]
        dim = scene.model.action_dim
        if which == "reset":
            session.mode, vector = "delta", np.zeros(dim)
        elif which == "zero":
            session.mode, vector = "set", np.zeros(dim)
        elif which == "sample":
            session.draws += 1
            session.mode, vector = "set", prior_sample(dim, session.draws)
        elif which.startswith("name:"):
            action = which.removeprefix("name:")
            if action not in axes.by_name:
                raise ApiError(f"slot {session.slot} has no learned action for {action!r} in the bundled episodes")
            session.mode, vector = "set", axes.by_name[action]
        else:
            raise ValueError(f"unknown preset {which!r}")
        values = self._slider_values(scene, session, vector)
        out = self._run(session, replace(controls, sliders=values))
        out.update(self._slider_updates(scene, session, values))
        return out

    def release(self, session: Session, controls: Controls) -> dict[str, Any]:
        """A slider was released (or a step/others/baseline control changed): roll the edit out again."""
        return self._run(session, controls)

    def export(self, session: Session) -> dict[str, Any]:
        """MP4 and GIF of the last edited rollout, rendered by the API from its recipe, and the recipe itself."""
        if session.recipe is None:
            raise ApiError("nothing to export yet: open an episode or upload frames first")
        out: dict[str, Any] = {}
        for fmt in ("mp4", "gif"):
            video = self.client.rollout({**session.recipe, "format": fmt, "return_masks": False})
            path = self._file(f".{fmt}", "flam-edit")
            path.write_bytes(video.video or b"")
            out[f"{fmt}_file"] = {"value": str(path), "interactive": True}
        out["recipe_file"] = self._recipe_file(session.recipe)
        return out

    # --- internals -----------------------------------------------------------------------------------------

    def _current(self, session: Session) -> Scene:
        if session.scene is None:
            raise ApiError("no scene yet: pick an episode or upload frames first")
        return session.scene

    def _open(self, session: Session, scene: Scene, upload_note: str) -> dict[str, Any]:
        """Show a new scene with an entity's slot selected and no edit.

        With ground truth: the slot that holds one entity most consistently; without: the largest slot by area, or
        the second-largest when no cell is left to a background sink (then the largest is usually the background)."""
        session.scene = scene
        session.baselines.clear()
        session.mode = "delta"
        session.recipe = None
        if scene.ownership is not None and scene.ownership.max() > 0:
            session.slot = int(np.unravel_index(scene.ownership.argmax(), scene.ownership.shape)[0])
        else:
            counts = imaging.owned_cells(scene.masks)
            sink = counts.sum() < scene.masks[0].size  # some cell is left to a background sink
            session.slot = int(counts.argmax()) if sink or len(counts) < 2 else int(np.argsort(counts)[-2])
        values = self._slider_values(scene, session, np.zeros(scene.model.action_dim))
        controls = Controls(values)
        out = self._selection(session)
        out.update(self._run(session, controls))
        out.update(
            upload_note=upload_note,
            correspondence=self._correspondence_html(scene),
            horizon={"maximum": scene.max_horizon, "value": scene.context.horizon},
            step={"maximum": scene.context.horizon - 1, "value": 0},
            mono_toggle={"interactive": scene.mono is not None},
        )
        return out

    def _vector(self, scene: Scene, session: Session, sliders: tuple[float, ...]) -> np.ndarray:
        """The selected slot's action-space vector [A] from the visible slider values."""
        dim = scene.model.action_dim
        values = np.zeros(dim)
        shown = min(dim, MAX_SLIDERS)
        values[:shown] = np.asarray(sliders[:shown], dtype=np.float64)
        return from_sliders(values, scene.axes[session.slot], session.principal)

    def _slider_values(self, scene: Scene, session: Session, vector: np.ndarray) -> tuple[float, ...]:
        """Slider values (on their step grid, within range) that show the vector [A] on the current axes."""
        values = to_sliders(np.asarray(vector, dtype=np.float64), scene.axes[session.slot], session.principal)
        values = np.clip(np.round(values / SLIDER_STEP) * SLIDER_STEP, -scene.limit, scene.limit)
        padded = np.zeros(MAX_SLIDERS)
        padded[: min(MAX_SLIDERS, values.size)] = values[:MAX_SLIDERS]
        return tuple(round(float(v), 2) + 0.0 for v in padded)

    def _slider_updates(self, scene: Scene, session: Session, values: tuple[float, ...]) -> dict[str, Any]:
        """Every slider's label, range, value and visibility for the selected slot and axes."""
        axes = scene.axes[session.slot]
        names = direction_names(axes) if session.principal else [None] * scene.model.action_dim
        out: dict[str, Any] = {}
        for i in range(MAX_SLIDERS):
            if i >= scene.model.action_dim:
                out[f"slider_{i}"] = {"visible": False, "value": 0.0}
                continue
            if session.principal:
                label = f"PC{i + 1} · {axes.explained[i]:.0%} of variance"
                if names[i]:
                    label += f" · ≈ {names[i]}"
            else:
                label = f"a[{i}]"
            out[f"slider_{i}"] = {
                "visible": True,
                "value": values[i],
                "label": label,
                "minimum": -scene.limit,
                "maximum": scene.limit,
            }
        reference = "inferred action" if scene.context.inferred is not None else "base-plan action"
        if session.mode == "delta":
            text = f"Sliders <b>add</b> to slot {session.slot}'s {reference} (all at 0: no edit)."
        else:
            text = f"Sliders <b>set</b> slot {session.slot}'s action outright (replacing its {reference})."
        axes_text = (
            "principal directions of its inferred actions, most variance first"
            if session.principal
            else "the raw action basis"
        )
        out["mode_note"] = f"<div class='flam-note'>{text} Axes: {axes_text}.</div>"
        out.update(self._named_updates(scene, session))
        return out

    def _named_updates(self, scene: Scene, session: Session) -> dict[str, Any]:
        names = scene.action_names or []
        keys = shortcut_keys(names)
        available = scene.axes[session.slot].by_name
        out: dict[str, Any] = {}
        for i in range(MAX_NAMED):
            if i < len(names):
                label = f"{names[i]}  [{keys[i]}]" if keys[i] else names[i]
                out[f"named_{i}"] = {"visible": True, "value": label, "interactive": names[i] in available}
            else:
                out[f"named_{i}"] = {"visible": False}
        out["named_note"] = (
            ""
            if not names
            else "<div class='flam-note'>Set the slot's action to its mean latent action when its entity did this "
            "(keys in brackets; arrows work too). Greyed: never seen for this slot.</div>"
        )
        return out

    def _selection(self, session: Session) -> dict[str, Any]:
        """The scene picture, legend and badge for the selected slot."""
        scene = self._current(session)
        frame, masks, k = scene.frame, scene.masks, session.slot
        size = frame.shape[0]
        legend = []
        area = imaging.owned_cells(masks) / masks[0].size
        for slot in range(scene.model.n_slots):
            caption = f"slot {slot} · {area[slot]:.0%}"
            legend.append((imaging.slot_thumbnail(frame, masks, slot, _scale(size, LEGEND_PX)), caption))
        values = self._slider_values(scene, session, np.zeros(scene.model.action_dim))
        out = {
            "session": session,
            "scene": imaging.overlay(frame, masks, k, _scale(size, SCENE_PX)),
            "legend": {"value": legend, "selected_index": k},
            "slot_badge": self._badge(scene, k),
        }
        out.update(self._slider_updates(scene, session, values))
        return out

    def _owned(self, scene: Scene, slot: int) -> str:
        """'agent 2' when the slot owns an entity in most frames of this episode."""
        if scene.ownership is None:
            return ""
        owned = [f"agent {n + 1}" for n in range(scene.ownership.shape[1]) if scene.ownership[slot, n] >= 0.5]
        return ", ".join(owned)

    def _badge(self, scene: Scene, slot: int) -> str:
        colour = imaging.hex_color(imaging.slot_color(slot))
        owned = self._owned(scene, slot)
        what = (
            f"holds {owned}" if owned else ("holds no entity most of the time" if scene.ownership is not None else "")
        )
        return (
            f"<div class='flam-badge'><span class='flam-swatch' style='background:{colour}'></span>"
            f"<b>Slot {slot}</b> selected <span class='flam-dim'>{what} · {scene.label}</span></div>"
        )

    def _correspondence_html(self, scene: Scene) -> str:
        """The slot x entity table: share of this episode's frames in which each slot holds each entity."""
        if scene.ownership is None:
            return (
                "<div class='flam-note'>No ground truth for this context: the slot × entity correspondence is shown "
                "for the bundled episodes of built-in worlds.</div>"
            )
        share = scene.ownership  # [K, N]
        colours = [imaging.hex_color(c) for c in scene.entity_colors or []]
        colours += ["#888888"] * (share.shape[1] - len(colours))
        head = "".join(
            f"<th><span class='flam-swatch' style='background:{colours[n]}'></span>agent {n + 1}</th>"
            for n in range(share.shape[1])
        )
        rows = []
        for k in range(share.shape[0]):
            swatch = imaging.hex_color(imaging.slot_color(k))
            cells = "".join(
                f"<td style='background:rgba(99,102,241,{0.08 + 0.8 * v:.2f})'>{v:.0%}</td>" for v in share[k]
            )
            rows.append(
                f"<tr><th><span class='flam-swatch' style='background:{swatch}'></span>slot {k}</th>{cells}</tr>"
            )
        owners = share.argmax(axis=0)
        bound = len(set(owners.tolist())) == share.shape[1] and bool((share.max(axis=0) >= 0.5).all())
        verdict = "every agent has a slot of its own" if bound else "some agents share a slot or change slots over time"
        return (
            "<table class='flam-table'><tr><th></th>" + head + "</tr>" + "".join(rows) + "</table>"
            f"<div class='flam-note'>Share of this episode's frames in which the slot's mask holds most of the agent's "
            f"pixels (ground truth). Here {verdict}.</div>"
        )

    def _baseline(self, session: Session, request: dict[str, Any]) -> Rollout:
        key = _key(request)
        cached = session.baselines.get(key)
        if cached is not None:
            session.baselines.move_to_end(key)
            return cached
        rollout = self.client.rollout(request)
        session.baselines[key] = rollout
        while len(session.baselines) > BASELINES_KEPT:
            session.baselines.popitem(last=False)
        return rollout

    def _run(self, session: Session, controls: Controls) -> dict[str, Any]:
        """Roll the baseline (remembered) and the edit, and draw the comparison."""
        started = time.perf_counter()
        scene = self._current(session)
        context = scene.context
        vector = self._vector(scene, session, controls.sliders)
        edit = SlotEdit(session.slot, session.mode, tuple(vector), controls.steps, controls.step)
        base_req = base_request(context, controls.others, session.seed, session.slot)
        edit_req = edited_request(context, controls.others, session.seed, edit)
        base = self._baseline(session, base_req)
        edited = base if _key(edit_req) == _key(base_req) else self.client.rollout(edit_req)
        session.recipe = edited.recipe
        size = scene.frame.shape[0]
        region = imaging.slot_region([base.masks, edited.masks], session.slot, size)  # [H, H, W]
        share, total = imaging.change_share(base.frames, edited.frames, region)
        out: dict[str, Any] = {"session": session}
        shown = self._compare(scene, session.slot, base.frames, edited.frames, region)
        out["playback"] = self._playback(scene, shown)
        out["filmstrip"] = self._filmstrip(scene, shown)
        out["locality"] = _locality_html(share, total, session.slot, "FLAM")
        if controls.monolithic and scene.mono is not None:
            out.update(self._monolithic(session, controls, edit, region))
        out["mono_group"] = {"visible": bool(controls.monolithic and scene.mono is not None)}
        out["recipe"] = json.dumps(edited.recipe, indent=2)
        out["recipe_file"] = self._recipe_file(edited.recipe)
        out["mp4_file"] = {"value": None, "interactive": False}
        out["gif_file"] = {"value": None, "interactive": False}
        session.runs += 1
        handler_ms = (time.perf_counter() - started) * 1000
        out["latency"] = _latency_html(edited, base is edited, handler_ms, session.runs)
        return out

    def _monolithic(self, session: Session, controls: Controls, edit: SlotEdit, region: np.ndarray) -> dict[str, Any]:
        """The same edit through the monolithic baseline, with its change measured on the same entity's pixels."""
        scene = self._current(session)
        mono = scene.mono
        context = Context(mono.name, scene.context.body, scene.context.horizon, scene.context.inferred)
        mono_edit = monolithic_edit(edit, scene.axes[edit.slot], scene.mono_axes)
        base_req, edit_req = monolithic_requests(context, controls.others, 0, mono_edit)
        base = self._baseline(session, base_req)
        edited = base if _key(edit_req) == _key(base_req) else self.client.rollout(edit_req)
        share, total = imaging.change_share(base.frames, edited.frames, region)
        shown = self._compare(scene, edit.slot, base.frames, edited.frames, region)
        return {
            "mono_playback": self._playback(scene, shown, "monolithic "),
            "mono_locality": _locality_html(share, total, edit.slot, mono.name),
        }

    def _compare(
        self, scene: Scene, slot: int, base: np.ndarray, edited: np.ndarray, region: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(original, edited, heat) [1+H, H, W, 3] with the context frame first (heat peaks at the largest change),
        and the slot's pixels [1+H, H, W] to outline on the heat."""
        first = scene.frame[None]
        original = np.concatenate([first, base])  # [1+H, H, W, 3]
        changed = np.concatenate([first, edited])  # [1+H, H, W, 3]
        change = imaging.pixel_change(original, changed)  # [1+H, H, W]
        outline = np.concatenate([self._context_region(scene, slot), region])  # [1+H, H, W]
        return original, changed, imaging.heat(change, float(change.max())), outline

    def _playback(self, scene: Scene, shown: tuple[np.ndarray, ...], title: str = "") -> str:
        """The animation original | edited | difference (the slot's pixels outlined), as a GIF file."""
        original, changed, heat, outline = shown
        play = imaging.Playback(
            [original, changed, heat],
            [f"{title}original", f"{title}edited", "difference"],
            _scale(scene.frame.shape[0], PLAYBACK_PX),
            outlines={2: outline},
        )
        path = self._file(".gif", "playback")
        imaging.write_gif(play, path, FRAME_MS, HOLD_LAST_MS)
        return str(path)

    def _filmstrip(self, scene: Scene, shown: tuple[np.ndarray, ...]) -> str:
        """Every step as a still: original, edited and difference rows, as a PNG file (exact pixels)."""
        original, changed, heat, outline = shown
        names = ["ctx"] + [str(t) for t in range(original.shape[0] - 1)]  # rollout steps, 0-based as in edits
        strip = imaging.filmstrip(
            [("original", original), ("edited", changed), ("difference", heat)],
            names,
            _scale(scene.frame.shape[0], STRIP_PX),
            outlines={2: outline},
        )
        path = self._file(".png", "filmstrip")
        path.write_bytes(imaging.png_bytes(strip))
        return str(path)

    def _context_region(self, scene: Scene, slot: int) -> np.ndarray:
        """The slot's pixels [1, H, W] in the context frame."""
        return imaging.masks_to_pixels((imaging.owners(scene.masks) == slot)[None], scene.frame.shape[0])

    def _recipe_file(self, recipe: dict[str, Any]) -> str:
        path = self._file(".json", "flam-recipe")
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(recipe, indent=2) + "\n")
        temporary.rename(path)
        return str(path)

    def _status(self, health: dict[str, Any], problem: str | None = None) -> str:
        models = ", ".join(health.get("models", [])) or "none"
        if problem:
            return f"<div class='flam-status flam-bad'>● {self.client.base_url} · {problem}</div>"
        return (
            f"<div class='flam-status'>● connected to {self.client.base_url} · {health.get('device', '?')} · "
            f"models: {models}</div>"
        )


def _locality_html(share: float, total: float, slot: int, model: str) -> str:
    """The locality meter: how much of the pixel change lies on the selected slot's entity."""
    if math.isnan(share):
        return (
            f"<div class='flam-meter'><div class='flam-meter-label'><b>Locality</b> ({model}): no pixel changed yet: "
            f"move a slider or press a button.</div></div>"
        )
    pct = 100 * share
    colour = "#16a34a" if share >= 0.8 else ("#d97706" if share >= 0.5 else "#dc2626")
    return (
        f"<div class='flam-meter'><div class='flam-meter-label'><b>Locality</b> ({model}): "
        f"<b style='color:{colour}'>{pct:.0f}%</b> of the pixel change lies on slot {slot}'s entity "
        f"<span class='flam-dim'>(total change {total:,.0f})</span></div>"
        f"<div class='flam-meter-bar'><div style='width:{pct:.1f}%;background:{colour}'></div></div></div>"
    )


def _latency_html(rollout: Rollout, reused: bool, handler_ms: float, run: int) -> str:
    """The latency readout: the API round trip measured here, the model's share of it, and this handler's time."""
    server = rollout.timing_ms.get("total", 0.0)
    if reused:
        return (
            f"<div class='flam-latency' data-run='{run}'>Latency: no edit, baseline reused · {handler_ms:.0f} ms</div>"
        )
    return (
        f"<div class='flam-latency' data-run='{run}'>Latency: API round trip <b>{rollout.round_trip_ms:.0f} ms</b> "
        f"(model {server:.0f} ms) · studio {handler_ms:.0f} ms</div>"
    )
