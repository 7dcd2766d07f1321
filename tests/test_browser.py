"""The studio end to end in real headless Chromium (Debian's package; never a downloaded browser), driven by
Playwright against `flam serve` (the API with the studio under /ui) on 127.0.0.1.

The models are the tiny random fixture set, so nothing here is about model quality: the tests check what the page
guarantees (the clicked pixel's slot is selected; a slider edit changes only that slot's actions; the displayed
frames are the API's frames for the recipe; exports play and replay; errors read as messages).
Screenshots go to $FLAM_STUDIO_SCREENSHOTS when set (`FLAM_STUDIO_SCREENSHOTS=docs/img` refreshes the README's),
else to a temporary folder; $FLAM_STUDIO_CHECKPOINTS serves other checkpoints (e.g. checkpoints/) instead.
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from test_api_support import free_port, serving, truncated_png_b64

from flam.frontend import imaging, steering
from flam.frontend.studio import MAX_SLIDERS, PLAYBACK_PX, SCENE_PX, STRIP_PX

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
UPDATE_TIMEOUT_MS = 60_000
LATENCY_TARGET_MS = 300.0

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package (dev extra)")


@pytest.fixture(scope="module")
def studio_url(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`flam serve` on a free loopback port: the embedded default (the UI calls the API on the same server)."""
    checkpoints = os.environ.get("FLAM_STUDIO_CHECKPOINTS") or str(tiny_checkpoints)
    port = free_port()
    log = tmp_path_factory.mktemp("studio") / "serve.log"
    env = {**os.environ, "FLAM_CHECKPOINTS": checkpoints, "FLAM_UI": "1"}
    command = [sys.executable, "-m", "flam", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level",
               "warning"]  # fmt: skip
    with serving(command, env, log, "/ui/", port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api(studio_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=studio_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def browser(studio_url: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, studio_url: str) -> Iterator[Any]:
    """A fresh tab on the studio, loaded with the default model's first episode."""
    context = browser.new_context(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
    tab = context.new_page()
    tab.hosts = set()
    tab.on("request", lambda request: tab.hosts.add(request.url.split("/")[2]))
    tab.goto(f"{studio_url}/ui/")
    tab.wait_for_selector("#flam-latency [data-run]", timeout=UPDATE_TIMEOUT_MS)
    wait_images(tab)
    yield tab
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("FLAM_STUDIO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- page helpers -------------------------------------------------------------------------------------------


def run_number(page: Any) -> int:
    return int(page.get_attribute("#flam-latency [data-run]", "data-run"))


IMAGES_LOADED = (
    "['#flam-playback img', '#flam-filmstrip img', '#flam-scene img'].every(s => {"
    " const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; })"
)


def wait_images(page: Any) -> None:
    page.wait_for_function(f"() => {IMAGES_LOADED}", timeout=UPDATE_TIMEOUT_MS)


def wait_run(page: Any, before: int) -> None:
    """Wait until the page shows a comparison newer than `before` with its pictures loaded; the page notes when
    (window.__shown, checked on every animation frame)."""
    page.wait_for_function(
        f"() => {{ const run = Number(document.querySelector('#flam-latency [data-run]').dataset.run);"
        f" if (run <= {before} || !({IMAGES_LOADED})) return false;"
        f" window.__shown = performance.now(); return true; }}",
        timeout=UPDATE_TIMEOUT_MS,
        polling="raf",
    )


def image(page: Any, selector: str) -> np.ndarray:
    """The pixels of a displayed image, fetched from the URL the page shows."""
    src = page.get_attribute(f"{selector} img", "src")
    response = page.request.get(src)
    assert response.ok, src
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def download(page: Any, selector: str) -> Path:
    """Click a download button; the file, saved under the name the page gave it."""
    with page.expect_download() as caught:
        page.click(selector)
    target = Path(caught.value.path()).with_name(caught.value.suggested_filename)
    caught.value.save_as(target)
    return target


def recipe_of(page: Any) -> dict[str, Any]:
    return json.loads(download(page, "#flam-recipe-file").read_text())


def strip_rows(strip: np.ndarray, horizon: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(original, edited) predicted frames [H, size, size, 3] read back from the filmstrip picture."""
    scale = max(1, STRIP_PX // size)
    cell = size * scale
    rows = []
    for row in (0, 1):
        frames = []
        for step in range(horizon):
            top, left = imaging.strip_origin(row, step + 1, cell)
            frames.append(strip[top : top + cell : scale, left : left + cell : scale])
        rows.append(np.stack(frames))
    return rows[0], rows[1]


def api_frames(api: httpx.Client, recipe: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(frames [H, H, W, 3], actions [H, K, A]) of a recipe replayed through POST /rollout."""
    response = api.post("/rollout", json=recipe)
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    frames = [np.asarray(Image.open(io.BytesIO(base64.b64decode(f))).convert("RGB")) for f in body["frames"]]
    return np.stack(frames), np.asarray(body["actions"])


def default_model(api: httpx.Client) -> dict[str, Any]:
    return next(m for m in api.get("/models").json() if m["default"])


def drag_slider(page: Any, index: int, fraction: float) -> float:
    """Drag slider `index` from its thumb to `fraction` of its track and release; returns the release time (ms)."""
    track = page.locator(f"#flam-slider-{index} input[type=range]")
    box = track.bounding_box()
    value = float(page.input_value(f"#flam-slider-{index} input[type=number]"))
    low, high = float(track.get_attribute("min")), float(track.get_attribute("max"))
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * (value - low) / (high - low), y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * fraction, y, steps=6)
    page.evaluate("() => { window.__released = performance.now(); }")
    page.mouse.up()
    return page.evaluate("() => window.__released")


def shown_at(page: Any) -> float:
    """performance.now() of the moment the latest comparison was on screen with its pictures loaded."""
    return page.evaluate("() => window.__shown")


# --- tests --------------------------------------------------------------------------------------------------


def test_page_loads_with_the_default_model(page: Any, api: httpx.Client, studio_url: str, shots: Path) -> None:
    model = default_model(api)
    assert page.input_value("#flam-model input") == model["name"]
    assert "connected to" in page.inner_text("#flam-header")
    assert page.locator("#flam-legend .thumbnail-item, #flam-legend button").count() >= model["n_slots"]
    assert page.get_attribute("#flam-playback img", "src").endswith(".gif")
    assert page.get_attribute("#flam-scene img", "src").endswith(".png")
    assert page.get_attribute("#flam-filmstrip img", "src").endswith(".png")
    visible = [page.locator(f"#flam-slider-{i}").is_visible() for i in range(MAX_SLIDERS)]
    assert visible == [i < model["action_dim"] for i in range(MAX_SLIDERS)]
    assert page.hosts == {studio_url.split("/")[2]}, f"the page reached out to {page.hosts}"
    page.screenshot(path=shots / "studio-overview.png", full_page=True)


def test_clicking_an_entity_selects_its_slot(page: Any, api: httpx.Client, shots: Path) -> None:
    episodes = api.get("/episodes").json()
    colours = episodes["entity_colors"]
    if not colours:
        pytest.skip("the default model's episodes carry no entity colours")
    frame = np.asarray(Image.open(io.BytesIO(base64.b64decode(episodes["episodes"][0]["thumbnail"]))).convert("RGB"))
    masks = np.asarray(api.post("/analyse", json={"context": {"episode": 0}}).json()["masks"][0])  # [K, h, w]
    size, grid = frame.shape[0], masks.shape[-1]
    box = page.locator("#flam-scene img").bounding_box()
    clicked = 0
    for colour in colours:
        ys, xs = np.nonzero((frame == np.asarray(colour, dtype=np.uint8)).all(axis=-1))
        if ys.size == 0:
            continue
        y, x = int(ys[ys.size // 2]), int(xs[xs.size // 2])
        expected = int(masks[:, y * grid // size, x * grid // size].argmax())
        before = run_number(page)
        page.mouse.click(box["x"] + (x + 0.5) * box["width"] / size, box["y"] + (y + 0.5) * box["height"] / size)
        wait_run(page, before)
        assert f"Slot {expected}" in page.inner_text("#flam-slot")
        clicked += 1
    assert clicked, "no entity of the first frame was found by its colour"
    before = run_number(page)
    other = (expected + 1) % len(masks)
    page.locator("#flam-legend .thumbnail-item").nth(other).click()
    wait_run(page, before)
    assert f"Slot {other}" in page.inner_text("#flam-slot")
    page.screenshot(path=shots / "studio-select.png", full_page=False)


def _visible_edit(api: httpx.Client) -> tuple[int, int, float]:
    """(slot, raw axis, fraction of the track) whose slider end changes the frames.

    Slots that hold an entity in the first frame come first, so a trained model's edit moves an entity."""
    model = default_model(api)
    stats = api.get("/action-stats").json()
    limit = steering.slider_range(steering.slot_axes(stats, model["n_slots"], model["action_dim"]))
    base = {"context": {"episode": 0}, "horizon": 10, "actions": "inferred"}
    frames, _ = api_frames(api, base)
    owners = api.post("/analyse", json={"context": {"episode": 0}}).json().get("entity_slots") or [[]]
    slots = dict.fromkeys([*(k for k in owners[0] if k >= 0), *range(model["n_slots"])])
    for slot in slots:
        for axis in range(model["action_dim"]):
            for sign, fraction in ((1.0, 1.02), (-1.0, -0.02)):
                delta = [0.0] * model["action_dim"]
                delta[axis] = sign * limit
                edited, _ = api_frames(api, {**base, "edits": [{"slot": slot, "delta": delta}]})
                if (edited != frames).any():
                    return slot, axis, fraction
    pytest.skip("no single slider end changes this model's frames")


def test_slider_release_changes_only_the_selected_slot(page: Any, api: httpx.Client, shots: Path) -> None:
    slot, axis, fraction = _visible_edit(api)
    size = default_model(api)["image_size"]
    before = run_number(page)
    page.locator("#flam-legend .thumbnail-item").nth(slot).click()
    wait_run(page, before)
    page.get_by_label("raw basis").check()
    page.wait_for_function(f"() => document.querySelector('#flam-slider-{axis}').innerText.includes('a[{axis}]')")
    before = run_number(page)
    original_strip = image(page, "#flam-filmstrip")
    released = drag_slider(page, axis, fraction)
    wait_run(page, before)
    latencies = [shown_at(page) - released]
    recipe = recipe_of(page)
    assert [e["slot"] for e in recipe["edits"]] == [slot] and "delta" in recipe["edits"][0]
    assert recipe["edits"][0]["delta"][axis] != 0.0
    assert all(v == 0.0 for i, v in enumerate(recipe["edits"][0]["delta"]) if i != axis)
    edited, edited_actions = api_frames(api, recipe)
    baseline, base_actions = api_frames(api, {**recipe, "edits": []})
    assert steering.changed_slots(base_actions, edited_actions) == [slot]
    shown_original, shown_edited = strip_rows(image(page, "#flam-filmstrip"), recipe["horizon"], size)
    np.testing.assert_array_equal(shown_edited, edited)
    np.testing.assert_array_equal(shown_original, baseline)
    assert (shown_edited != shown_original).any(), "the edit did not change the displayed video"
    assert (image(page, "#flam-filmstrip") != original_strip).any()
    playback = iio.imread(page.request.get(page.get_attribute("#flam-playback img", "src")).body(), index=None)
    assert playback.shape[2] >= 3 * max(1, PLAYBACK_PX // size) * size
    page.screenshot(path=shots / "studio-edit.png", full_page=True)
    for target in (0.75, 0.25, 0.6):  # more releases, for the latency figure
        before = run_number(page)
        released = drag_slider(page, axis, target)
        wait_run(page, before)
        latencies.append(shown_at(page) - released)
    median = statistics.median(latencies)
    readout = page.inner_text("#flam-latency")
    print(
        f"\nslider release -> edited video on screen: median {median:.0f} ms over {len(latencies)} releases "
        f"({', '.join(f'{v:.0f}' for v in latencies)} ms; target {LATENCY_TARGET_MS:.0f} ms); last readout: {readout}"
    )


def test_keyboard_shortcuts_and_presets(page: Any, api: httpx.Client) -> None:
    stats = api.get("/action-stats").json()
    names = stats.get("action_names") or []
    slot = next((s["slot"] for s in stats["slots"] if s.get("by_action_name")), None)
    if not names or slot is None:
        pytest.skip("the default model's episodes have no ground-truth action names")
    action = sorted(stats["slots"][slot]["by_action_name"])[0]
    key = steering.shortcut_keys(names)[names.index(action)]
    before = run_number(page)
    page.locator("#flam-legend .thumbnail-item").nth(slot).click()
    wait_run(page, before)
    before = run_number(page)
    page.locator("body").press(key)
    wait_run(page, before)
    recipe = recipe_of(page)
    mean = stats["slots"][slot]["by_action_name"][action]["mean"]
    [edit] = recipe["edits"]
    assert edit["slot"] == slot and set(edit) == {"slot", "set"}
    # The sliders hold the action on a 0.01 grid along orthonormal axes: at most 0.005 off along each of them.
    assert np.linalg.norm(np.subtract(edit["set"], mean)) <= 0.005 * np.sqrt(len(mean)) + 1e-6
    assert "set" in page.inner_text("#flam-mode")
    before = run_number(page)
    page.click("#flam-zero")
    wait_run(page, before)
    assert recipe_of(page)["edits"] == [{"slot": slot, "set": [0.0] * len(mean)}]
    before = run_number(page)
    page.click("#flam-reset")
    wait_run(page, before)
    assert recipe_of(page)["edits"] == []


def test_monolithic_comparison(page: Any, api: httpx.Client, shots: Path) -> None:
    if not any(m["kind"] == "monolithic" for m in api.get("/models").json()):
        pytest.skip("no monolithic baseline is served")
    before = run_number(page)
    page.get_by_label("Compare with the monolithic baseline").check()
    wait_run(page, before)
    page.wait_for_selector("#flam-mono-playback img")
    assert "Locality" in page.inner_text("#flam-mono-locality")
    page.locator("#flam-mono-playback").scroll_into_view_if_needed()
    page.screenshot(path=shots / "studio-monolithic.png", full_page=False)


def test_export_downloads_playable_files_and_a_replayable_recipe(page: Any, api: httpx.Client) -> None:
    before = run_number(page)
    page.click("#flam-sample")
    wait_run(page, before)
    page.click("#flam-render")
    page.wait_for_function("() => !document.querySelector('#flam-mp4').disabled", timeout=UPDATE_TIMEOUT_MS)
    recipe = recipe_of(page)
    size = default_model(api)["image_size"]
    mp4_file, gif_file = download(page, "#flam-mp4"), download(page, "#flam-gif")
    assert (mp4_file.suffix, gif_file.suffix) == (".mp4", ".gif")
    mp4 = iio.imread(mp4_file, index=None)
    assert mp4.shape == (recipe["horizon"], size, size, 3)
    gif = iio.imread(gif_file, index=None)
    assert 1 <= gif.shape[0] <= recipe["horizon"] and gif.shape[1:3] == (size, size)
    frames, _ = api_frames(api, recipe)
    _, shown = strip_rows(image(page, "#flam-filmstrip"), recipe["horizon"], size)
    np.testing.assert_array_equal(shown, frames)


def test_backend_errors_show_as_readable_messages(page: Any, tmp_path: Path, shots: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(base64.b64decode(truncated_png_b64()))
    page.get_by_role("tab", name="Upload frames").click()
    page.set_input_files("#flam-upload input[type=file]", str(broken))
    box = page.locator("#flam-error .flam-error-box")
    box.wait_for(timeout=UPDATE_TIMEOUT_MS)
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for(timeout=UPDATE_TIMEOUT_MS)
    for text in (box.inner_text(), toast.inner_text()):
        assert "context.frames[0]" in text and "Traceback" not in text and 'File "' not in text
    assert page.locator("#flam-playback img").is_visible()  # the last good comparison stays on the page
    page.screenshot(path=shots / "studio-error.png", full_page=False)


def test_uploaded_frames_unlike_the_training_data_get_a_warning(page: Any, tmp_path: Path, shots: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photo)
    before = run_number(page)
    page.get_by_role("tab", name="Upload frames").click()
    page.set_input_files("#flam-upload input[type=file]", str(photo))
    wait_run(page, before)
    note = page.inner_text("#flam-upload-note")
    assert "Warning" in note and "not square" in note
    assert page.locator("#flam-scene img").bounding_box()["width"] > SCENE_PX / 2
