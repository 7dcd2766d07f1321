"""The Gradio page of FLAM Studio: `build_studio(api_url)` lays it out and wires it to `Studio`'s handlers;
`mount(app, api_base_url)` serves it under /ui of a FastAPI app (what `flam serve` does); `create_ui_app` serves it
alone (what `flam ui` and the docker frontend do).

Gradio's background network calls are off (analytics, the Hugging Face hub) before gradio is imported, images
leave as PNG (Gradio's default WebP is lossy), and the page never asks for a public share link.
"""

from __future__ import annotations

import html
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Callable  # noqa: E402 - gradio must see the variables above
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import RedirectResponse  # noqa: E402

from flam.frontend.client import ApiError, ClientConfig, FlamClient  # noqa: E402
from flam.frontend.studio import MAX_NAMED, MAX_SLIDERS, SLIDER_STEP, Controls, Session, Studio  # noqa: E402

UI_PATH = "/ui"
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
STEPS = [("all steps", "all"), ("from step j on", "from"), ("only step j", "one")]
OTHERS = [("keep inferred", "keep"), ("zero", "zero"), ("sample from prior", "sample")]
AXES = [("principal directions", True), ("raw basis", False)]

CSS = """
.gradio-container { max-width: 1480px !important; }
.flam-pixel img, .flam-pixel canvas, .flam-legend img, .flam-episodes img { image-rendering: pixelated; }
#flam-header { padding: 14px 18px; border-radius: 12px;
  background: linear-gradient(120deg, #111827 0%, #1e1b4b 60%, #312e81 100%); color: #e5e7eb; }
#flam-header h1 { margin: 0; font-size: 1.55rem; color: #fff; letter-spacing: .01em; }
#flam-header p { margin: 4px 0 0 0; color: #c7d2fe; font-size: .92rem; }
.flam-status { font-size: .85rem; color: #16a34a; margin-top: 6px; }
.flam-status.flam-bad { color: #f87171; }
.flam-error-box { margin-top: 8px; padding: 10px 14px; border-radius: 10px; background: #fef2f2;
  border: 1px solid #fecaca; color: #991b1b; font-size: .92rem; }
.flam-badge { display: flex; align-items: center; gap: 8px; font-size: 1rem; padding: 4px 2px; }
.flam-swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; margin-right: 6px;
  vertical-align: middle; border: 1px solid rgba(0,0,0,.25); }
.flam-dim { color: #6b7280; font-weight: normal; font-size: .88rem; }
.flam-note { color: #6b7280; font-size: .85rem; margin: 2px 0; }
.flam-meter-label { font-size: .92rem; margin-bottom: 4px; }
.flam-meter-bar { height: 10px; border-radius: 5px; background: #e5e7eb; overflow: hidden; }
.flam-meter-bar > div { height: 100%; border-radius: 5px; }
.flam-latency { font-size: .85rem; color: #4b5563; font-variant-numeric: tabular-nums; }
.flam-table { border-collapse: collapse; font-size: .85rem; }
.flam-table th, .flam-table td { padding: 4px 10px; text-align: center; border: 1px solid #e5e7eb; }
.flam-table th:first-child { text-align: left; }
.flam-section h3 { margin: 0 0 2px 0; }
.flam-sliders .form { display: grid !important; grid-template-columns: 1fr 1fr; gap: 0; }
.flam-sliders .form > * { min-width: 0 !important; }
"""

# Keyboard shortcuts: a key (or arrow) clicks the visible named-action button whose label ends in "[KEY]".
HEAD = """
<script>
(() => {
  const arrows = {ArrowUp: 'W', ArrowLeft: 'A', ArrowRight: 'D', ArrowDown: 'S'};
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    const tag = (target && target.tagName || '').toLowerCase();
    const typing = tag === 'textarea' || target.isContentEditable ||
      (tag === 'input' && !['range', 'checkbox', 'radio', 'button'].includes(target.type));
    if (typing || (tag === 'input' && target.type === 'range' && event.key in arrows)) return;
    const key = arrows[event.key] || (event.key.length === 1 ? event.key.toUpperCase() : null);
    if (!key) return;
    for (const button of document.querySelectorAll('button.flam-named')) {
      if (button.offsetParent !== null && !button.disabled && button.textContent.trim().endsWith('[' + key + ']')) {
        event.preventDefault();
        button.click();
        return;
      }
    }
  });
})();
</script>
"""

INTRO = """<div id="flam-header"><h1>FLAM Studio</h1>
<p>Pick an entity, nudge its own latent action, and watch only that entity change. Each slot of a Factored Latent
Action Model holds one part of the scene and has its own action.</p>{status}</div>"""


def theme() -> gr.themes.Base:
    """A calm indigo theme on system fonts (no web-font downloads)."""
    return gr.themes.Soft(
        primary_hue="indigo", secondary_hue="sky", neutral_hue="slate", font=SYSTEM_FONTS, font_mono=MONO_FONTS
    )


def _update(value: Any) -> Any:
    """A handler's value for one output as Gradio wants it (dicts become gr.update)."""
    return gr.update(**value) if isinstance(value, dict) else value


def build_studio(api_url: str, client: FlamClient | None = None) -> gr.Blocks:
    """The studio page over the FLAM API at api_url (or over `client`, for tests)."""
    studio = Studio(client or FlamClient(ClientConfig(api_url)))
    with gr.Blocks(title="FLAM Studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        session = gr.State(Session())
        status = gr.HTML(INTRO.format(status="<div class='flam-status'>connecting…</div>"), elem_id="flam-top")
        error = gr.HTML(elem_id="flam-error")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=360):
                gr.Markdown("### 1 · Scene", elem_classes="flam-section")
                with gr.Row():
                    model = gr.Dropdown(label="Model", choices=[], interactive=True, scale=3, elem_id="flam-model")
                    horizon = gr.Slider(
                        1, 32, value=10, step=1, label="Horizon (steps)", scale=2, elem_id="flam-horizon"
                    )
                with gr.Tabs():
                    with gr.Tab("Bundled episodes"):
                        episodes = gr.Gallery(
                            label="Episodes", show_label=False, columns=6, height=130, allow_preview=False,
                            fit_columns=False, buttons=[], format="png", object_fit="contain",
                            elem_classes="flam-episodes", elem_id="flam-episodes",
                        )  # fmt: skip
                    with gr.Tab("Upload frames"):
                        uploads = gr.File(
                            label="PNG frames, oldest first (sorted by file name)", file_count="multiple",
                            file_types=[".png"], type="filepath", elem_id="flam-upload",
                        )  # fmt: skip
                upload_note = gr.Markdown(elem_id="flam-upload-note")
                scene = gr.Image(
                    label="Click an entity to select its slot", format="png", interactive=False, height=340,
                    buttons=[], elem_classes="flam-pixel", elem_id="flam-scene",
                )  # fmt: skip
                legend = gr.Gallery(
                    label="Slots (click to select)", columns=4, height=190, allow_preview=False, format="png",
                    buttons=[], object_fit="contain", elem_classes="flam-legend", elem_id="flam-legend",
                )  # fmt: skip
                with gr.Accordion("Slot × entity correspondence (ground truth)", open=True):
                    correspondence = gr.HTML(elem_id="flam-correspondence")
            with gr.Column(scale=7, min_width=520):
                gr.Markdown("### 2 · Watch", elem_classes="flam-section")
                playback = gr.Image(
                    show_label=False, type="filepath", interactive=False, buttons=[], height=230,
                    elem_classes="flam-pixel", elem_id="flam-playback",
                )  # fmt: skip
                with gr.Row():
                    locality = gr.HTML(elem_id="flam-locality")
                    latency = gr.HTML(elem_id="flam-latency")
                with gr.Group(visible=False) as mono_group:
                    gr.HTML(
                        "<div class='flam-note'><b>Monolithic baseline</b>: the same edit through one action for the "
                        "whole scene (original · edited · difference).</div>"
                    )
                    mono_playback = gr.Image(
                        show_label=False, type="filepath", interactive=False, buttons=[], height=230,
                        elem_classes="flam-pixel", elem_id="flam-mono-playback",
                    )  # fmt: skip
                    mono_locality = gr.HTML(elem_id="flam-mono-locality")
                gr.Markdown("### 3 · Steer", elem_classes="flam-section")
                slot_badge = gr.HTML(elem_id="flam-slot")
                with gr.Row():
                    axes = gr.Radio(AXES, value=True, label="Slider axes", scale=2)
                    mono_toggle = gr.Checkbox(label="Compare with the monolithic baseline", value=False, scale=2)
                mode_note = gr.HTML(elem_id="flam-mode")
                with gr.Column(elem_classes="flam-sliders"):
                    sliders = [
                        gr.Slider(
                            -4,
                            4,
                            value=0.0,
                            step=SLIDER_STEP,
                            label=f"a[{index}]",
                            visible=False,
                            elem_id=f"flam-slider-{index}",
                            buttons=[],
                        )  # fmt: skip
                        for index in range(MAX_SLIDERS)
                    ]
                with gr.Row():
                    reset = gr.Button("↺ Reset to inferred", size="sm", elem_id="flam-reset")
                    sample = gr.Button("Sample prior", size="sm", elem_id="flam-sample")
                    zero = gr.Button("Zero", size="sm", elem_id="flam-zero")
                named_note = gr.HTML()
                with gr.Row():
                    named = [
                        gr.Button(visible=False, size="sm", elem_classes="flam-named", elem_id=f"flam-named-{i}")
                        for i in range(MAX_NAMED)
                    ]
                with gr.Row():
                    steps = gr.Radio(STEPS, value="all", label="The edit applies to", scale=3)
                    step = gr.Slider(0, 9, value=0, step=1, label="Step j", scale=2)
                others = gr.Radio(OTHERS, value="keep", label="Other slots")
                gr.Markdown("### 4 · Inspect and export", elem_classes="flam-section")
                gr.HTML(
                    "<div class='flam-note'>Every step as exact pixels (ctx: the context frame, then rollout steps "
                    "0, 1, …): original, edited, and the difference with the selected slot outlined.</div>"
                )
                filmstrip = gr.Image(
                    show_label=False, format="png", interactive=False, buttons=["download"],
                    elem_classes="flam-pixel", elem_id="flam-filmstrip",
                )  # fmt: skip
                with gr.Row():
                    render = gr.Button("Render video", variant="primary", elem_id="flam-render")
                    mp4_file = gr.DownloadButton("⬇ MP4", interactive=False, elem_id="flam-mp4")
                    gif_file = gr.DownloadButton("⬇ GIF", interactive=False, elem_id="flam-gif")
                    recipe_file = gr.DownloadButton("⬇ Recipe (JSON)", elem_id="flam-recipe-file")
                with gr.Accordion("Recipe: POST it to /rollout to get the same frames", open=False):
                    recipe = gr.Code(language="json", show_label=False, elem_id="flam-recipe")

        outputs: dict[str, gr.components.Component | gr.blocks.BlockContext] = {
            "session": session,
            "status": status,
            "error": error,
            "model": model,
            "episodes": episodes,
            "upload_note": upload_note,
            "horizon": horizon,
            "scene": scene,
            "legend": legend,
            "correspondence": correspondence,
            "playback": playback,
            "locality": locality,
            "latency": latency,
            "mono_group": mono_group,
            "mono_playback": mono_playback,
            "mono_locality": mono_locality,
            "mono_toggle": mono_toggle,
            "slot_badge": slot_badge,
            "mode_note": mode_note,
            "named_note": named_note,
            "step": step,
            "filmstrip": filmstrip,
            "recipe": recipe,
            "recipe_file": recipe_file,
            "mp4_file": mp4_file,
            "gif_file": gif_file,
            **{f"slider_{i}": s for i, s in enumerate(sliders)},
            **{f"named_{i}": b for i, b in enumerate(named)},
        }
        names = list(outputs)
        targets = list(outputs.values())
        control_inputs = [*sliders, steps, step, others, mono_toggle]

        def controls(values: tuple[Any, ...]) -> Controls:
            *slider_values, steps_value, step_value, others_value, mono_value = values
            return Controls(
                tuple(float(v or 0.0) for v in slider_values),
                steps_value,
                int(step_value or 0),
                others_value,
                bool(mono_value),
            )

        def wired(handler: Callable[..., dict[str, Any]], name: str) -> Callable[..., tuple[Any, ...]]:
            """A Studio handler as a Gradio function named `name`: every output in order, API errors as readable
            messages (a toast with the API's own words, never a traceback)."""

            def run(*args: Any) -> tuple[Any, ...]:
                try:
                    result = {"error": "", **handler(*args)}
                except ApiError as failure:
                    gr.Warning(failure.message, duration=15, title="The FLAM API says")
                    result = {"error": _error_html(failure.message)}
                return tuple(_update(result[n]) if n in result else gr.skip() for n in names)

            run.__name__ = name
            return run

        def on_load(state: Session) -> tuple[Any, ...]:
            try:
                result = studio.load(state)
            except ApiError as failure:
                gr.Warning(failure.message, duration=15, title="The FLAM API says")
                offline = "<div class='flam-status flam-bad'>● not connected</div>"
                result = {"session": state, "status": INTRO.format(status=offline)}
                result["error"] = _error_html(failure.message)
                return tuple(_update(result[n]) if n in result else gr.skip() for n in names)
            result["status"] = INTRO.format(status=result["status"])
            return tuple(_update(result[n]) if n in result else gr.skip() for n in names)

        quiet = {"show_progress": "hidden"}
        demo.load(on_load, [session], targets, **quiet)
        model.input(wired(studio.select_model, "select_model"), [session, model], targets, **quiet)
        uploads.upload(wired(studio.upload, "upload"), [session, uploads, model], targets, **quiet)

        def episode_selected(state: Session, evt: gr.SelectData) -> tuple[Any, ...]:
            return wired(studio.select_episode, "select_episode")(state, evt.index)

        def scene_clicked(state: Session, evt: gr.SelectData, *values: Any) -> tuple[Any, ...]:
            x, y = evt.index
            return wired(studio.click_scene, "click_scene")(state, x, y, controls(values))

        def legend_picked(state: Session, evt: gr.SelectData, *values: Any) -> tuple[Any, ...]:
            return wired(studio.select_slot, "select_slot")(state, evt.index, controls(values))

        episodes.select(episode_selected, [session], targets, **quiet)
        scene.select(scene_clicked, [session, *control_inputs], targets, **quiet)
        legend.select(legend_picked, [session, *control_inputs], targets, **quiet)
        axes.input(
            wired(lambda state, principal, *values: studio.set_axes(state, principal, controls(values)), "axes"),
            [session, axes, *control_inputs],
            targets,
            **quiet,
        )
        gr.on(
            [s.release for s in sliders] + [steps.input, step.release, others.input, mono_toggle.input],
            wired(lambda state, *values: studio.release(state, controls(values)), "release"),
            [session, *control_inputs],
            targets,
            trigger_mode="always_last",
            **quiet,
        )
        horizon.release(
            wired(lambda state, h, *values: studio.set_horizon(state, h, controls(values)), "horizon"),
            [session, horizon, *control_inputs],
            targets,
            **quiet,
        )
        for button, which in ((reset, "reset"), (sample, "sample"), (zero, "zero")):
            button.click(
                wired(lambda state, *values, w=which: studio.preset(state, w, controls(values)), which),
                [session, *control_inputs],
                targets,
                **quiet,
            )
        for button in named:
            button.click(
                wired(
                    lambda state, label, *values: studio.preset(state, "name:" + _action(label), controls(values)),
                    "named_action",
                ),
                [session, button, *control_inputs],
                targets,
                **quiet,
            )
        render.click(wired(studio.export, "export"), [session], targets, **quiet)
    return demo


def _error_html(message: str) -> str:
    """A failed request's message, shown under the header until the next action succeeds."""
    return f"<div class='flam-error-box'><b>The FLAM API says:</b> {html.escape(message)}</div>"


def _action(label: str) -> str:
    """'forward  [W]' -> 'forward'."""
    return label.rsplit("[", 1)[0].strip() if label.rstrip().endswith("]") else label.strip()


def _mount_options() -> dict[str, Any]:
    return {
        "theme": theme(),
        "css": CSS,
        "head": HEAD,
        "footer_links": [],
        "run_history": False,
        "show_error": True,
        "ssr_mode": False,
        "mcp_server": False,
    }


def mount(app: FastAPI, api_base_url: str, path: str = UI_PATH) -> FastAPI:
    """Serve the studio under `path` of `app`, talking to the API at api_base_url (the hook `flam serve` uses)."""
    demo = build_studio(api_base_url)
    demo.queue(default_concurrency_limit=8)
    return gr.mount_gradio_app(app, demo, path=path, **_mount_options())


def create_ui_app(api_base_url: str) -> FastAPI:
    """The studio alone (under /ui, with / redirecting there): `flam ui` and the docker frontend serve this."""
    app = FastAPI(title="FLAM Studio", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse(UI_PATH + "/")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "api": api_base_url}

    return mount(app, api_base_url)
