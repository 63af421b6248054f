"""The example workflows: in sync with their source, read right by every recorded host's frontend,
carrying their model links, notes, thumbnails, a layout with room for previews, official settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import pytest

from scripts import example_workflows as ew
from scripts import workflow_ui as ui

ROOT = Path(__file__).resolve().parents[1]

NAMES = sorted(ew.TEMPLATES)
# official FantasyTalking infer.py: prompt_cfg_scale 5, audio_cfg_scale 5, 30 steps, seed 1111, fps 23,
# FlowMatchScheduler(shift=5) stepped like Euler, max_num_frames 81
OFFICIAL = {"cfg_text": 5.0, "cfg_audio": 5.0, "steps": 30, "seed": 1111, "sampler_name": "euler", "shift": 5.0}
# the folder the frontend (1.49.6, modelToNode store) files each core loader's model under
FRONTEND_FOLDER = {"UNETLoader": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae",
                   "CLIPVisionLoader": "clip_vision", "LoraLoaderModelOnly": "loras"}
# our loaders: the folders they read (nodes/loaders.py), the first one is where downloads go
PACK_FOLDERS = {"FantasyTalkingModelLoader": ("model_patches", "diffusion_models"),
                "FantasyTalkingWav2VecLoader": ("audio_encoders",)}
DOWNLOADABLE = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")  # what 1.49.6 offers a Download button for
# combos listing the user's files: the template's value is a file to get, not one of today's choices
FILE_WIDGETS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadVideo", "file"), ("UNETLoader", "unet_name"),
                ("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"), ("CLIPVisionLoader", "clip_name"),
                ("LoraLoaderModelOnly", "lora_name"), ("FantasyTalkingModelLoader", "model_name"),
                ("FantasyTalkingWav2VecLoader", "model_name"), ("FantasyTalkingFaceEmbed", "insightface_pack")}
RENAMED = {"wav2vec2-base-960h.safetensors": "model.safetensors"}  # saved under a clearer name than its URL's


@pytest.fixture(scope="module")
def infos():
    return {host: ui.object_info(host) for host in ui.HOSTS}


def ui_file(name: str) -> dict:
    return json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())


def graph_nodes(wf: dict) -> list[dict]:
    return [n for n in wf["nodes"] if n["type"] != "MarkdownNote"]


def test_files_match_their_source():
    assert ew.main(["--check"]) == 0
    assert sorted(p.name for p in (ROOT / "example_workflows").glob("*.json")) == sorted(ew.render())


@pytest.mark.parametrize("name", NAMES)
def test_each_template_has_a_square_jpeg_thumbnail_beside_it(name):
    from PIL import Image

    with Image.open(ROOT / "example_workflows" / f"{name}.jpg") as img:  # /api/workflow_templates/<pack>/<name>.jpg
        assert img.format == "JPEG" and img.size[0] == img.size[1] >= 224


def _valid(spec, value) -> bool:
    choices = ui.choices(spec)
    if choices is not None:
        return value in choices
    opts = ui.options(spec)
    if spec[0] in ("INT", "FLOAT"):
        return isinstance(value, (int, float)) and opts.get("min", -1e300) <= value <= opts.get("max", 1e300)
    return True


def frontend_reads(decl_input: Mapping, widgets_values: list) -> dict[str, tuple[list, Any]]:
    """What a frontend with this declaration reads from ``widgets_values`` by position:
    {widget name: (spec, value)}; a dynamic combo's children follow the option it read; trailing
    values it has no widget for are ignored and missing ones get the default, as it does."""
    out, pos = {}, 0

    def walk(decl: Mapping, prefix: str) -> None:
        nonlocal pos
        for section in ("required", "optional"):
            for name, spec in decl.get(section, {}).items():
                if not ui.is_widget(spec):
                    continue
                value = widgets_values[pos] if pos < len(widgets_values) else ui.default_value(spec)
                out[prefix + name] = (spec, value)
                pos += len(ui.stored_values(spec, None))
                if spec[0] == ui.DYNAMIC_COMBO:
                    option = next((o for o in ui.options(spec)["options"] if o["key"] == value), None)
                    walk(option["inputs"] if option else {}, f"{prefix}{name}.")

    walk(decl_input, "")
    return out


@pytest.mark.parametrize("host", ui.HOSTS)
@pytest.mark.parametrize("name", NAMES)
def test_each_host_reads_every_widget_right(name, host, infos):
    """Links typed and complete; the values a frontend with this host's declarations reads by
    position are the graph's (no shifted widget), valid for that host."""
    info, graph, wf = infos[host], ew.api_graphs()[name], ui_file(name)
    nodes = graph_nodes(wf)
    by_id = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] == max(by_id) and wf["last_link_id"] == len(wf["links"])
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        assert by_id[src]["outputs"][src_slot]["type"] == typ and link_id in by_id[src]["outputs"][src_slot]["links"]
        target = by_id[dst]["inputs"][dst_slot]
        assert target["link"] == link_id and target["type"] == typ
        assert info[by_id[src]["type"]]["output"][src_slot] == typ, (host, by_id[src]["type"])
    assert len(nodes) == len(graph)  # no node missing or extra in the UI file
    for key, n in zip(graph, nodes):
        assert n["type"] == graph[key]["class_type"] and n["type"] in info, f"{n['type']} unknown on {host}"
        decl = info[n["type"]]["input"]
        linked = {i["name"] for i in n["inputs"] if i["link"] is not None}
        for inp, spec in decl.get("required", {}).items():
            assert ui.is_widget(spec) or inp in linked, f"{n['type']}.{inp} is required and not linked on {host}"
        values = {k: v for k, v in graph[key]["inputs"].items() if not ui.is_link(v)}
        for wname, (spec, seen) in frontend_reads(decl, n["widgets_values"]).items():
            if wname in linked:
                continue
            expected = next(v for w, _, v in ui.widgets(decl, values) if w == wname)
            assert seen == expected, f"{host}: {n['type']}.{wname} reads {seen!r}, the graph says {expected!r}"
            if (n["type"], wname) not in FILE_WIDGETS:
                assert _valid(spec, seen), f"{host}: {n['type']}.{wname}={seen!r}"


def test_save_video_stores_what_frontend_1_49_6_writes(infos):
    """0.33's SaveVideo format is a dynamic combo: the values 1.49.6 serialises for it (read back
    from the browser) are prefix, format, format.codec, its encoding, the hidden codec."""
    graph = ew.api_graphs()["01_portrait_audio_to_talking_video"]
    save = next(n for n in graph_nodes(ui_file("01_portrait_audio_to_talking_video")) if n["type"] == "SaveVideo")
    assert save["widgets_values"] == ["video/FantasyTalking", "mp4", "h264", "auto", "auto"]
    assert ui.choices(infos["0.3.64"]["SaveVideo"]["input"]["required"]["format"]) == ["auto", "mp4"]
    assert graph["save"]["inputs"]["codec"] == "h264"  # what 0.3.64 reads at position 3


@pytest.mark.parametrize("name", NAMES)
def test_api_graph_inputs_exist_and_links_have_matching_types(name, infos):
    graph = ew.api_graphs()[name]
    for host in ui.HOSTS:
        if ew.version_tuple(host) < ew.version_tuple(ew.TEMPLATES[name].min_comfyui):
            continue
        info = infos[host]
        for key, node in graph.items():
            decl = info[node["class_type"]]["input"]
            specs = {**decl.get("required", {}), **decl.get("optional", {})}
            for inp, value in node["inputs"].items():
                assert inp in specs, f"{host}: {node['class_type']} has no input {inp!r}"
                if ui.is_link(value):
                    out_type = info[graph[value[0]]["class_type"]]["output"][value[1]]
                    assert specs[inp][0] == out_type, (host, key, inp, out_type)


def test_an_unknown_node_type_is_reported(infos):
    graph = ew.api_graphs()["04_lip_mask_preview"]
    graph["lips"]["class_type"] = "FantasyTalkingLipMaskTypo"
    with pytest.raises(KeyError, match="FantasyTalkingLipMaskTypo"):
        ui.to_ui("x", graph, infos[ui.HOSTS[-1]])


def test_a_new_input_of_our_nodes_gets_its_declared_default(monkeypatch):
    declared = ui.pack_declarations()
    declared["FantasyTalkingSampler"]["input"]["required"]["new_switch"] = ("BOOLEAN", {"default": True})
    monkeypatch.setattr(ui, "pack_declarations", lambda: declared)
    graphs = ew.api_graphs()
    assert all(g["sampler"]["inputs"]["new_switch"] is True for g in graphs.values() if "sampler" in g)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_file_carries_its_download_for_the_missing_models_panel(name):
    for n in graph_nodes(ui_file(name)):
        files = [v for v in n["widgets_values"] if isinstance(v, str) and v.lower().endswith(ui.MODEL_EXTENSIONS)]
        models = {m["name"]: m for m in n["properties"].get("models", [])}
        assert sorted(models) == sorted(files), n["type"]
        for f, m in models.items():
            folder = FRONTEND_FOLDER.get(n["type"]) or PACK_FOLDERS[n["type"]][0]
            assert m["directory"] == folder and f.endswith(DOWNLOADABLE), (n["type"], m)
            if m["url"].startswith("https://huggingface.co/"):
                assert re.fullmatch(r"https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/main/\S+", m["url"]), m["url"]
                assert m["url"].rsplit("/", 1)[1] == RENAMED.get(f, f)
            else:  # no public weights: the link is the docs section that says how to get one
                page, anchor = m["url"].split("#")
                assert page == f"{ew.REPOSITORY}/blob/main/docs/templates.md"
                heading = anchor.replace("-", " ")
                assert re.search(rf"^#+ {heading}$", (ROOT / "docs" / "templates.md").read_text(), re.M | re.I)


@pytest.mark.parametrize("name", NAMES)
def test_the_note_says_which_files_to_get_and_where(name):
    wf, graph = ui_file(name), ew.api_graphs()[name]
    (note,) = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    text = note["widgets_values"][0]
    for n in graph_nodes(wf):
        for m in n["properties"].get("models", []):
            assert f"[{m['name']}]({m['url']}) in `models/{m['directory']}/`" in text
    if any(n["class_type"] == "FantasyTalkingFaceEmbed" for n in graph.values()):
        assert f"{ew.INSIGHTFACE}/antelopev2.zip" in text and "models/insightface/models/antelopev2/" in text
    assert f"Needs ComfyUI {ew.TEMPLATES[name].min_comfyui} or newer" in text


@pytest.mark.parametrize("name", NAMES)
def test_no_node_covers_another_with_previews_grown(name):
    nodes = ui_file(name)["nodes"]
    for n in nodes:
        assert n["size"][1] >= ui.MIN_HEIGHT.get(n["type"], 0)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not ui.boxes_overlap(a, b), (a["type"], a["id"], b["type"], b["id"])
        if a["type"] in ("SaveVideo", "PreviewImage"):  # nothing below: its preview may grow further
            assert not [b for b in nodes if b["pos"][0] == a["pos"][0] and b["pos"][1] > a["pos"][1]], a["type"]


def _sampler(name: str) -> dict:
    return ew.api_graphs()[name]["sampler"]["inputs"]


@pytest.mark.parametrize("name", [n for n in NAMES if "sampler" in ew.api_graphs()[n] and n != "05_fast_distill_lora"])
def test_templates_carry_the_official_settings(name):
    graph = ew.api_graphs()[name]
    assert {k: _sampler(name)[k] for k in OFFICIAL} == OFFICIAL
    assert graph["enc"]["inputs"]["fps"] == graph["video"]["inputs"]["fps"] == 23.0
    assert graph["enc"]["inputs"]["max_frames"] == (0 if name.startswith("03") else 81)
    assert graph["apply"]["inputs"]["audio_scale"] == 1.0
    assert _sampler(name).get("two_pass_shortcut", False) is False


def test_distill_template_runs_few_steps_with_audio_guidance_on_most_of_them():
    graph, s = ew.api_graphs()["05_fast_distill_lora"], _sampler("05_fast_distill_lora")
    assert graph["apply"]["inputs"]["model"] == ["lora", 0] and graph["lora"]["inputs"]["model"] == ["wan", 0]
    assert graph["lora"]["class_type"] == "LoraLoaderModelOnly" and graph["lora"]["inputs"]["lora_name"] == ew.DISTILL_LORA
    assert 4 <= s["steps"] <= 8 and s["cfg_text"] == 1.0 and s["cfg_audio"] > 1.0
    assert s["audio_guidance_end"] - s["audio_guidance_start"] >= 0.7
    assert "untested with real weights" in ew.TEMPLATES["05_fast_distill_lora"].about


def test_context_window_template_windows_the_whole_audio_on_0_33():
    graph = ew.api_graphs()["03b_long_audio_context_windows"]
    windows = graph["windows"]["inputs"]
    assert graph["sampler"]["inputs"]["model"] == ["windows", 0] and windows["model"] == ["apply", 0]
    assert (windows["context_length"] - 1) % 4 == 0 and 0 < windows["context_overlap"] < windows["context_length"]
    assert graph["enc"]["inputs"]["max_frames"] == 0
    assert ew.TEMPLATES["03b_long_audio_context_windows"].min_comfyui == "0.33.0"


@pytest.mark.parametrize("host", ui.HOSTS)
def test_recorded_core_declarations_name_their_host_and_hold_every_core_node_used(host):
    recorded = json.loads((ui.DATA / f"comfy_core_nodes_{host}.json").read_text())
    assert f"ComfyUI {host} " in recorded["_about"]
    assert set(ew.core_node_types()) <= set(recorded)


def test_long_audio_template_makes_the_whole_recording_in_segments():
    graph = ew.api_graphs()["03_long_audio"]
    long = graph["long"]["inputs"]
    assert graph["long"]["class_type"] == "FantasyTalkingLongVideoSampler" and not {"i2v", "apply", "sampler"} & set(graph)
    assert {k: long[k] for k in OFFICIAL} == OFFICIAL and long["model"] == ["wan", 0]  # adapters attached inside
    assert graph["enc"]["inputs"]["max_frames"] == 0 and graph["enc"]["inputs"]["fps"] == graph["video"]["inputs"]["fps"]
    assert long["start_image"] == ["image", 0] and long["clip_vision_output"] == ["clipv_enc", 0]
    assert graph["video"]["inputs"]["images"] == ["long", 0] and graph["video"]["inputs"]["audio"] == ["long", 1]
    assert (long["segment_frames"], long["motion_frames"], long["color_match"], long["audio_scale"]) == (81, 1, True, 1.0)
    assert "03c_short_audio_one_pass" in ew.TEMPLATES and "03_long_audio_one_pass" not in ew.TEMPLATES
