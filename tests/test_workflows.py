"""The example workflows: in sync with their source, and valid against every node's declaration."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import example_workflows as ew  # noqa: E402

FILE_COMBOS = {"LoadImage", "LoadAudio", "LoadVideo", "UNETLoader", "CLIPLoader", "VAELoader", "CLIPVisionLoader",
               "FantasyTalkingModelLoader", "FantasyTalkingWav2VecLoader", "FantasyTalkingFaceEmbed"}


@pytest.fixture(scope="module")
def info():
    return ew.object_info()


def test_files_match_their_source():
    assert ew.main(["--check"]) == 0
    assert sorted(p.name for p in (ROOT / "example_workflows").glob("*.json")) == sorted(ew.render())


def _choices(spec):
    return spec[0] if isinstance(spec[0], list) else (spec[1] or {}).get("options") if spec[0] == "COMBO" else None


@pytest.mark.parametrize("name", sorted(ew.api_graphs()))
def test_ui_workflow_is_valid(name, info):
    wf = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
    by_id = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] == max(by_id) and wf["last_link_id"] == len(wf["links"])
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        assert by_id[src]["outputs"][src_slot]["type"] == typ and link_id in by_id[src]["outputs"][src_slot]["links"]
        target = by_id[dst]["inputs"][dst_slot]
        assert target["link"] == link_id and target["type"] == typ
    for n in wf["nodes"]:
        assert n["type"] in info, f"{n['type']} is neither ours nor a recorded core node"
        decl = info[n["type"]]["input"]
        specs = {**decl.get("required", {}), **decl.get("optional", {})}
        linked = {i["name"] for i in n["inputs"] if i["link"] is not None}
        for key, spec in decl.get("required", {}).items():
            assert ew.is_widget(spec) or key in linked, f"{n['type']}.{key} is required and not linked"
        expected = sum(len(ew.widget_values(s, None)) for s in specs.values() if ew.is_widget(s))
        assert len(n["widgets_values"]) == expected, n["type"]
        if n["type"] not in FILE_COMBOS:
            values = iter(n["widgets_values"])
            for key, spec in specs.items():
                if ew.is_widget(spec):
                    vals = [next(values) for _ in ew.widget_values(spec, None)]
                    choices = _choices(spec)
                    if choices and key not in linked:
                        assert vals[0] in choices, f"{n['type']}.{key}={vals[0]!r}"


@pytest.mark.parametrize("name", sorted(ew.api_graphs()))
def test_api_graph_inputs_exist_and_links_have_matching_types(name, info):
    graph = ew.api_graphs()[name]
    for key, node in graph.items():
        decl = info[node["class_type"]]["input"]
        specs = {**decl.get("required", {}), **decl.get("optional", {})}
        for inp, value in node["inputs"].items():
            assert inp in specs, f"{node['class_type']} has no input {inp!r}"
            if isinstance(value, list):
                out_type = info[graph[value[0]]["class_type"]]["output"][value[1]]
                assert specs[inp][0] == out_type, (key, inp, out_type)


def test_an_unknown_node_type_is_reported(info):
    graph = ew.api_graphs()["04_lip_mask_preview"]
    graph["lips"]["class_type"] = "FantasyTalkingLipMaskTypo"
    with pytest.raises(KeyError, match="FantasyTalkingLipMaskTypo"):
        ew.to_ui(graph, info)
