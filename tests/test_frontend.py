"""The studio without a browser: the client's error messages, the steering rules, the pictures, and the handlers
against a stub API (known answers) and against the real backend on a real uvicorn server (tiny random models:
never assert quality, only what the studio guarantees)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from test_api_support import running_server, truncated_png_b64
from test_frontend_support import GRID, SIZE, K, StubApi, inferred, owner_columns

from flam.frontend import imaging, steering
from flam.frontend.client import ApiError, ClientConfig, FlamClient, decode_png, encode_png
from flam.frontend.studio import MAX_SLIDERS, SCENE_PX, STRIP_PX, Controls, Session, Studio

ROOT = Path(__file__).resolve().parent.parent


def sliders(*values: float) -> tuple[float, ...]:
    return tuple(values) + (0.0,) * (MAX_SLIDERS - len(values))


# --- no torch, no phoning home ------------------------------------------------------------------------------


def test_frontend_imports_no_torch_and_disables_gradio_network_calls() -> None:
    code = (
        "import os, sys\n"
        "import flam.frontend.app, flam.frontend.studio, flam.frontend.client\n"
        "assert 'torch' not in sys.modules, 'the frontend imported torch'\n"
        "assert not any(m.startswith('flam.backend') or m.startswith('flam.models') for m in sys.modules)\n"
        "assert os.environ['GRADIO_ANALYTICS_ENABLED'] == 'False' and os.environ['HF_HUB_OFFLINE'] == '1'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_output_images_are_png_and_nothing_is_shared() -> None:
    from flam.frontend.app import build_studio

    demo = build_studio("http://127.0.0.1:1", FlamClient(ClientConfig("http://127.0.0.1:1")))
    images = [b for b in demo.blocks.values() if type(b).__name__ in ("Image", "Gallery") and b.format]
    assert images and all(b.format == "png" for b in images if getattr(b, "type", "") != "filepath")
    assert "share=True" not in (ROOT / "frontend" / "app.py").read_text()


# --- client -------------------------------------------------------------------------------------------------


def client_for(handler: object) -> FlamClient:
    return FlamClient(ClientConfig("http://api.test"), transport=httpx.MockTransport(handler))


def test_client_turns_the_api_error_body_into_the_message() -> None:
    message = "edits[0].delta: the action vector has 3 values; this model needs 2"
    client = client_for(lambda request: httpx.Response(422, json={"error": message, "details": []}))
    with pytest.raises(ApiError) as caught:
        client.rollout({"context": {"episode": 0}, "horizon": 2})
    assert caught.value.message == message and caught.value.status == 422


def test_client_explains_non_json_errors_and_busy_servers() -> None:
    client = client_for(lambda request: httpx.Response(502, text="<html><body>upstream   down</body></html>"))
    with pytest.raises(ApiError, match=r"HTTP 502 Bad Gateway: <html><body>upstream down"):
        client.health()
    busy = client_for(lambda r: httpx.Response(503, json={"error": "the server is busy"}, headers={"Retry-After": "1"}))
    with pytest.raises(ApiError, match=r"the server is busy \(the server asks to retry in 1 s\)"):
        busy.models()


def test_client_explains_network_failures() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ApiError, match=r"cannot reach the FLAM API at http://api.test \(Connection refused\)"):
        client_for(refuse).health()
    with pytest.raises(ApiError, match=r"did not answer GET /models within 60 s"):
        client_for(hang).models()
    with pytest.raises(ApiError, match="not JSON"):
        client_for(lambda r: httpx.Response(200, text="hello")).health()


def test_client_against_a_closed_port_says_where_it_looked() -> None:
    with pytest.raises(ApiError, match=r"cannot reach the FLAM API at http://127.0.0.1:9"):
        FlamClient(ClientConfig("http://127.0.0.1:9", timeout_s=5)).health()


# --- steering rules -----------------------------------------------------------------------------------------


def test_sliders_round_trip_on_both_axes() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    axes = steering.SlotAxes(rng.standard_normal(4), q.T, np.full(4, 0.25))
    vector = rng.standard_normal(4)
    for principal in (True, False):
        values = steering.to_sliders(vector, axes, principal)
        np.testing.assert_allclose(steering.from_sliders(values, axes, principal), vector, atol=1e-12)
    np.testing.assert_allclose(steering.to_sliders(axes.directions[1], axes, True), np.eye(4)[1], atol=1e-12)


def test_directions_are_named_after_the_actions_they_point_to() -> None:
    axes = steering.SlotAxes(
        np.zeros(2),
        np.array([[1.0, 0.0], [0.0, 1.0]]),
        np.array([0.7, 0.3]),
        {"forward": np.array([2.0, 0.1]), "turn left": np.array([0.0, -1.0])},
    )
    assert steering.direction_names(axes) == ["forward", "-turn left"]
    assert steering.shortcut_keys(["turn left", "turn right", "forward", "stay", "jump"]) == ["A", "D", "W", "S", "1"]


def test_edit_steps() -> None:
    assert steering.edit_steps("all", 3, 5) is None
    assert steering.edit_steps("from", 3, 5) == [3, 4]
    assert steering.edit_steps("one", 9, 5) == [4]


def test_baseline_and_edit_differ_only_in_the_selected_slot() -> None:
    plan = inferred(4)
    context = steering.Context("m", {"episode": 0, "start": 0, "length": 1}, 4, plan)
    edit = steering.SlotEdit(1, "delta", (0.5, -0.25), "from", 2)
    for others in ("keep", "zero", "sample"):
        base = steering.base_request(context, others, 7, 1)
        edited = steering.edited_request(context, others, 7, edit)
        assert edited["edits"][: len(base["edits"])] == base["edits"]
        assert edited["edits"][len(base["edits"]) :] == [{"slot": 1, "steps": [2, 3], "delta": [0.5, -0.25]}]
        assert {e["slot"] for e in edited["edits"]} == {1}
        assert {k: v for k, v in edited.items() if k != "edits"} == {k: v for k, v in base.items() if k != "edits"}
    zero = steering.base_request(context, "zero", 7, 1)
    assert zero["actions"] == "zero" and [e["set"] for e in zero["edits"]] == plan[:, 1].round(6).tolist()
    noop = steering.SlotEdit(1, "delta", (0.0, 0.0))
    assert steering.edited_request(context, "keep", 0, noop) == steering.base_request(context, "keep", 0, 1)
    upload = steering.Context("m", {"frames": ["x"]}, 4, None)
    assert steering.base_request(upload, "keep", 0, 1)["actions"] == "zero"
    assert steering.base_request(upload, "sample", 0, 1)["actions"] == "prior"


def test_monolithic_edit_moves_the_one_scene_action() -> None:
    flam = steering.SlotAxes(np.array([1.0, 0.0]), np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.5, 0.5]))
    mono = steering.SlotAxes(np.arange(6.0), np.eye(6)[::-1], np.full(6, 1 / 6))
    delta = steering.monolithic_edit(steering.SlotEdit(2, "delta", (3.0, 2.0)), flam, mono)
    assert delta.slot == 0 and delta.vector == (0.0, 0.0, 0.0, 0.0, 3.0, 2.0)
    setting = steering.monolithic_edit(steering.SlotEdit(2, "set", (1.0, 0.0)), flam, mono)
    assert setting.vector == tuple(np.arange(6.0))  # the slot's mean maps to the baseline's mean


def test_correspondence_counts_visible_frames() -> None:
    owners = np.array([[0, 2], [0, -1], [1, 2], [0, 2]])
    share = steering.correspondence(owners, 3)
    np.testing.assert_allclose(share, [[0.75, 0.0], [0.25, 0.0], [0.0, 1.0]])


# --- pictures -----------------------------------------------------------------------------------------------


def test_a_click_picks_the_slot_that_wins_at_that_pixel() -> None:
    masks = np.full((3, 4, 4), 1 / 3)
    masks[:, 1, 3] = [0.05, 0.05, 0.9]
    masks[:, 0, 0] = [0.2, 0.7, 0.1]
    assert imaging.slot_at(masks, x=300, y=100, width=320, height=320) == 2
    assert imaging.slot_at(masks, x=10, y=10, width=320, height=320) == 1
    assert imaging.slot_at(masks, x=320, y=320, width=320, height=320) == 0  # the far edge stays on the grid


def test_cells_left_to_a_background_sink_belong_to_no_slot() -> None:
    masks = np.full((3, 4, 4), 0.02)  # the sink holds 0.94 of every cell ...
    masks[:, 1, 3] = [0.05, 0.05, 0.8]  # ... but these two, which slots 2 and 1 win
    masks[:, 0, 0] = [0.1, 0.6, 0.1]
    masks[:, 3, 0] = [0.0, 0.0, 0.45]  # an entity covering part of a token: the sink holds more, the slot enough
    won = imaging.owners(masks)
    assert won[1, 3] == 2 and won[0, 0] == 1 and won[3, 0] == 2 and (won >= 0).sum() == 3
    np.testing.assert_array_equal(imaging.owned_cells(masks), [0, 1, 2])
    assert imaging.slot_at(masks, x=300, y=100, width=320, height=320) == 2
    assert imaging.slot_at(masks, x=200, y=200, width=320, height=320) is None


def test_overlay_and_thumbnails_keep_the_frame_geometry() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    masks = np.zeros((2, 4, 4))
    masks[0, :, :2] = 1.0
    masks[1, :, 2:] = 1.0
    shown = imaging.overlay(frame, masks, selected=1, scale=5)
    assert shown.shape == (80, 80, 3)
    assert (shown[:, -1] == imaging.OUTLINE).all() and not (shown[:, 0] == imaging.OUTLINE).all(axis=-1).any()
    thumb = imaging.slot_thumbnail(frame, masks, 0, 4)
    assert thumb.shape == (64, 64, 3) and (thumb[0, 0] == imaging.slot_color(0)).all()


def test_change_share_measures_the_change_on_the_region() -> None:
    base = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    edited = base.copy()
    edited[0, 0, 0] = 30  # inside: 90 units
    edited[1, 3, 3] = 10  # outside: 30 units
    region = np.zeros((2, 4, 4), dtype=bool)
    region[:, 0, 0] = True
    share, total = imaging.change_share(base, edited, region)
    assert total == 120 and share == pytest.approx(0.75)
    assert math.isnan(imaging.change_share(base, base, region)[0])


def test_filmstrip_cells_hold_the_exact_frames() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    strip = imaging.filmstrip([("a", frames), ("b", frames[::-1])], ["x", "y", "z"], scale=3)
    top, left = imaging.strip_origin(1, 2, 24)
    np.testing.assert_array_equal(strip[top : top + 24 : 3, left : left + 24 : 3], frames[0])


def test_playback_gif_plays_every_step(tmp_path: Path) -> None:
    steps = np.arange(4, dtype=np.uint8)[:, None, None, None] * 60  # [4, 1, 1, 1]: every step differs
    panels = [np.broadcast_to(steps + v, (4, 8, 8, 3)).astype(np.uint8) for v in (0, 10, 20)]
    region = np.zeros((4, 8, 8), dtype=bool)
    region[:, 2:6, 2:6] = True
    play = imaging.Playback(panels, ["a", "b", "c"], 4, outlines={2: region})
    path = imaging.write_gif(play, tmp_path / "p.gif", 100)
    frames = iio.imread(path, index=None)[..., :3]
    assert frames.shape[:2] == (4, imaging.PLAY_HEADER_H + 32)
    np.testing.assert_array_equal(frames, play.frames())
    body = frames[:, imaging.PLAY_HEADER_H :]
    first_panel = body[:, 16, 8:12].astype(int)  # [4, 4, 3]: one colour per step (GIF palettes are approximate)
    assert np.abs(first_panel - steps[:, 0].astype(int)).max() <= 12
    left = 2 * (8 + max(1, imaging.PANEL_GAP // 4)) * 4  # the third panel, gaps scaled with the frames
    assert (body[:, 8, left + 8] == imaging.OUTLINE).all() and (body[:, 16, left + 16] != imaging.OUTLINE).any()


def test_upload_warnings_compare_with_the_training_frames() -> None:
    grid = np.zeros((64, 64, 3), dtype=np.uint8)
    grid[::8] = 90
    grid[20:28, 20:28] = (66, 133, 244)
    reference = imaging.FrameStats.of([grid])
    assert imaging.upload_warnings([grid.copy()], reference, 64) == []
    photo = np.random.default_rng(0).integers(100, 256, (48, 80, 3), dtype=np.uint8)
    notes = " ".join(imaging.upload_warnings([photo], reference, 64))
    assert "not square" in notes and "mean colour" in notes and "distinct colours" in notes


# --- handlers against the stub API (known answers) ----------------------------------------------------------


@pytest.fixture
def stub() -> StubApi:
    return StubApi()


@pytest.fixture
def studio(stub: StubApi, tmp_path: Path) -> Studio:
    return Studio(FlamClient(ClientConfig("http://stub.test"), transport=stub.transport()), tmp_path)


def test_load_opens_the_default_model_with_its_first_episode(studio: Studio) -> None:
    session = Session()
    out = studio.load(session)
    assert out["model"] == {"choices": ["stub/flam"], "value": "stub/flam"}
    assert len(out["episodes"]) == 1 and len(out["legend"]["value"]) == K
    assert out["scene"].shape == (SCENE_PX, SCENE_PX, 3)
    assert session.scene.context.horizon == 8  # the stub's episodes have 9 frames: 8 steps after the first
    assert session.scene.context.inferred.shape == (8, K, 2)
    assert "connected to http://stub.test" in out["status"]
    assert [out[f"slider_{i}"]["visible"] for i in range(3)] == [True, True, False]
    assert out["slider_0"]["label"].startswith("PC1 · 80% of variance")
    assert out["named_2"]["value"] == "forward  [W]"
    assert "agent 1" in out["correspondence"] and "100%" in out["correspondence"]
    assert "episode 0 of stub/flam (trained 4,000 of 20,000 steps)" in out["slot_badge"]  # an unfinished model says so
    ownership = session.scene.ownership  # [K, N]: the first selection is the slot that holds an entity most
    assert ownership[session.slot].max() == ownership.max() > 0


def test_clicking_an_entity_selects_its_slot(studio: Studio) -> None:
    session = Session()
    studio.load(session)
    column = int(np.flatnonzero(owner_columns() == 2)[0])
    x = (column + 0.5) * SCENE_PX / GRID
    out = studio.click_scene(session, x, 10, Controls(sliders()))
    assert session.slot == 2 and out["legend"]["selected_index"] == 2 and "Slot 2" in out["slot_badge"]
    studio.select_slot(session, 1, Controls(sliders()))
    assert session.slot == 1


def test_a_slider_edit_changes_only_the_selected_slot_and_the_meter_says_so(studio: Studio, stub: StubApi) -> None:
    session = Session()
    studio.load(session)
    studio.select_slot(session, 1, Controls(sliders()))
    out = studio.release(session, Controls(sliders(0.0, 1.0)))  # PC2 is the raw a[0] in the stub's axes
    recipe = json.loads(out["recipe"])
    assert recipe["edits"] == [{"slot": 1, "delta": [1.0, 0.0]}]
    assert "<b style='color:#16a34a'>100%</b>" in out["locality"]  # the stub changes only slot 1's band
    strip = np.asarray(Image.open(out["filmstrip"]).convert("RGB"))
    top, left = imaging.strip_origin(1, 1, SIZE)  # the edited row, step 0 (cells hold the 64 px frames as they are)
    edited = decode_png(stub.rollout(recipe)["frames"][0])
    np.testing.assert_array_equal(strip[top : top + SIZE, left : left + SIZE], edited)
    gif = iio.imread(out["playback"], index=None)
    assert gif.shape[0] == session.scene.context.horizon + 1


def test_presets_set_the_sliders_and_the_edit(studio: Studio) -> None:
    session = Session()
    studio.load(session)
    studio.select_slot(session, 0, Controls(sliders()))
    out = studio.preset(session, "name:forward", Controls(sliders()))
    assert json.loads(out["recipe"])["edits"] == [{"slot": 0, "set": [1.5, 0.0]}]
    assert (out["slider_0"]["value"], out["slider_1"]["value"]) == (0.0, 1.5)  # principal axes swap a[0], a[1]
    assert "<b>set</b>" in out["mode_note"]
    out = studio.preset(session, "zero", Controls(sliders(0.0, 1.5)))
    assert json.loads(out["recipe"])["edits"] == [{"slot": 0, "set": [0.0, 0.0]}]
    out = studio.preset(session, "reset", Controls(sliders(0.3, 0.2)))
    assert json.loads(out["recipe"])["edits"] == [] and "<b>add</b>" in out["mode_note"]
    out = studio.preset(session, "sample", Controls(sliders()))
    assert json.loads(out["recipe"])["edits"][0]["set"] != [0.0, 0.0]
    out = studio.set_axes(session, False, Controls(sliders(out["slider_0"]["value"], out["slider_1"]["value"])))
    assert out["slider_0"]["label"] == "a[0]"
    with pytest.raises(ApiError, match="no learned action"):
        studio.select_slot(session, 1, Controls(sliders()))
        studio.preset(session, "name:forward", Controls(sliders()))


def test_other_slots_and_steps_reach_the_request(studio: Studio) -> None:
    session = Session()
    studio.load(session)
    studio.select_slot(session, 2, Controls(sliders()))
    out = studio.release(session, Controls(sliders(0.5), steps="one", step=3, others="zero"))
    recipe = json.loads(out["recipe"])
    assert recipe["actions"] == "zero"
    assert recipe["edits"][-1] == {"slot": 2, "steps": [3], "delta": [0.0, 0.5]}
    assert all(e["slot"] == 2 for e in recipe["edits"])


def test_export_renders_playable_files_and_the_recipe(studio: Studio) -> None:
    session = Session()
    studio.load(session)
    studio.release(session, Controls(sliders(0.5, 0.5)))
    out = studio.export(session)
    assert out["mp4_file"]["interactive"] and out["gif_file"]["interactive"]
    assert iio.imread(out["mp4_file"]["value"], index=None).shape[0] == session.scene.context.horizon
    assert iio.imread(out["gif_file"]["value"], index=None).shape[0] == session.scene.context.horizon
    assert json.loads(Path(out["recipe_file"]).read_text()) == session.recipe


def test_backend_errors_surface_as_their_message(studio: Studio, stub: StubApi) -> None:
    session = Session()
    studio.load(session)
    stub.fail_rollout = (422, "horizon: 40 steps is above this server's limit of 32")
    with pytest.raises(ApiError, match="above this server's limit of 32"):
        studio.release(session, Controls(sliders(1.0)))


def test_wired_handlers_show_the_api_message_and_keep_the_page(stub: StubApi) -> None:
    from flam.frontend.app import build_studio

    client = FlamClient(ClientConfig("http://stub.test"), transport=stub.transport())
    demo = build_studio("http://stub.test", client)
    functions = {fn.name: fn.fn for fn in demo.fns.values()}
    session = Session()
    loaded = functions["on_load"](session)
    assert len(loaded) == len(demo.fns[0].outputs) and session.scene is not None
    names = [block.elem_id for block in demo.fns[0].outputs]
    stub.fail_rollout = (422, "edits[0].slot: slot 7 is <out> of range")
    with pytest.warns(UserWarning, match="slot 7 is <out> of range"):
        result = functions["release"](session, *sliders(1.0), "all", 0, "keep", False)
    shown = dict(zip(names, result, strict=True))
    assert "slot 7 is &lt;out&gt; of range" in shown["flam-error"]
    assert all(v == {"__type__": "update"} for k, v in shown.items() if k != "flam-error")  # the page is kept
    stub.fail_rollout = None
    result = dict(zip(names, functions["release"](session, *sliders(1.0), "all", 0, "keep", False), strict=True))
    assert result["flam-error"] == "" and "data-run" in result["flam-latency"]


# --- handlers against the real backend ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tiny_checkpoints, tmp_path_factory.mktemp("api") / "server.log") as server:
        yield server.url


@pytest.fixture
def real(api: str, tmp_path: Path) -> Studio:
    return Studio(FlamClient(ClientConfig(api)), tmp_path)


def test_real_backend_edit_touches_one_slot_and_the_recipe_replays_the_frames(real: Studio) -> None:
    session = Session()
    real.load(session)
    scene = session.scene
    slot = (session.slot + 1) % scene.model.n_slots
    real.select_slot(session, slot, Controls(sliders()))
    out = real.release(session, Controls(sliders(3.0, -2.0), steps="from", step=1))
    recipe = json.loads(out["recipe"])
    assert len(recipe["edits"]) == 1 and recipe["edits"][0]["slot"] == slot
    assert recipe["edits"][0]["steps"] == list(range(1, scene.context.horizon))
    client = real.client
    replay = client.rollout(recipe)
    baseline = client.rollout(steering.base_request(scene.context, "keep", 0, slot))
    assert steering.changed_slots(baseline.actions, replay.actions) == [slot]
    assert replay.recipe == recipe
    scale = max(1, STRIP_PX // scene.model.image_size)
    cell = scene.model.image_size * scale
    strip = np.asarray(Image.open(out["filmstrip"]).convert("RGB"))
    for step in range(scene.context.horizon):
        top, left = imaging.strip_origin(1, step + 1, cell)
        np.testing.assert_array_equal(strip[top : top + cell : scale, left : left + cell : scale], replay.frames[step])
        top, left = imaging.strip_origin(0, step + 1, cell)
        np.testing.assert_array_equal(
            strip[top : top + cell : scale, left : left + cell : scale], baseline.frames[step]
        )


def test_real_backend_export_and_monolithic_comparison(real: Studio) -> None:
    session = Session()
    real.load(session)
    out = real.release(session, Controls(sliders(2.0), monolithic=True))
    assert out["mono_group"] == {"visible": session.scene.mono is not None}
    if session.scene.mono is not None:
        assert "Locality" in out["mono_locality"] and Path(out["mono_playback"]).is_file()
    files = real.export(session)
    size = session.scene.model.image_size
    assert iio.imread(files["mp4_file"]["value"], index=None).shape == (session.scene.context.horizon, size, size, 3)
    gif = iio.imread(files["gif_file"]["value"], index=None)  # repeated frames are merged into longer ones
    assert 1 <= gif.shape[0] <= session.scene.context.horizon and gif.shape[1:3] == (size, size)


def test_real_backend_uploads_warn_and_bad_files_get_the_api_message(real: Studio, tmp_path: Path) -> None:
    session = Session()
    real.load(session)
    own = tmp_path / "a_frame.png"
    Image.fromarray(session.scene.frame).save(own)
    out = real.upload(session, [str(own)], session.scene.model.name)
    assert out["upload_note"].startswith("✓") and session.scene.context.inferred is None
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(noise)
    out = real.upload(session, [str(noise)], session.scene.model.name)
    assert out["upload_note"].startswith("**Warning") and "not square" in out["upload_note"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(base64.b64decode(truncated_png_b64()))
    with pytest.raises(ApiError, match=r"context\.frames\[0\]") as caught:
        real.upload(session, [str(broken)], session.scene.model.name)
    assert "Traceback" not in caught.value.message and "/" not in caught.value.message.split(":")[0]


# --- mounting -----------------------------------------------------------------------------------------------


def test_the_backend_mounts_the_studio_under_ui(tiny_checkpoints: Path) -> None:
    from fastapi.testclient import TestClient

    from flam.backend.app import create_app
    from flam.backend.settings import Settings

    app = create_app(Settings(checkpoints=tiny_checkpoints, warmup=False), api_base_url="http://127.0.0.1:1")
    with TestClient(app) as client:
        page = client.get("/ui/")
        assert page.status_code == 200 and "FLAM Studio" in page.text
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui"


def test_standalone_ui_app_and_cli(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from flam.frontend.app import create_ui_app
    from flam.main import main

    with TestClient(create_ui_app("http://127.0.0.1:1")) as client:
        assert client.get("/ui/").status_code == 200
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
    assert main(["ui", "--api", "not a url"]) == 2


def test_png_helpers_round_trip() -> None:
    frame = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(frame)), frame)
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    assert imaging.png_bytes(frame)[:8] == buffer.getvalue()[:8]
