"""The repository's tools (real-host smoke test, template generator, GPU and parity checks): a
package, not part of the node pack ComfyUI loads.

How they are run, and why: from the repository root, as modules of this package,

    python -m scripts.comfyui_smoke --list
    python -m scripts.example_workflows --check

so the repo root is on sys.path (Python puts the working directory there for ``-m``) and every
import is a package import: ``from scripts import workflow_ui``, ``from fantasytalking_core ...``,
``from benchmarks import dit_step``; no module edits sys.path (tests/test_scripts_imports.py
checks that, and that the imports between the modules here form no circle). ``python
scripts/comfyui_smoke.py`` still works from any folder: Python then puts scripts/, not the repo
root, on sys.path, so each runnable module's first lines run it again as ``python -m
scripts.<name>`` with the repo root on PYTHONPATH. benchmarks/ does the same.

Code that must import another tree's top-level modules (a ComfyUI's ``comfy``, ``nodes``,
``folder_paths``; the official FantasyTalking's ``model``, ``diffsynth``) runs from that tree's
folder, so its modules come first as they do for its own entry point, with this repo after them
on PYTHONPATH: ``comfy_host.run_from`` / ``continue_from``. comfy_host.py is also the one home of
the temporary ComfyUI base directory and server that the smoke test, ``example_workflows
--record-core`` and ``frontend_check`` start. Imports run one way: comfy_host and workflow_ui are
leaves; example_workflows uses them; the smoke's workflow modules use example_workflows; the
entry scripts (comfyui_smoke, frontend_check, gpu_check, ...) sit on top and nothing imports them.
"""
