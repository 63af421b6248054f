"""How close the MediaPipe Tasks backend on a current mediapipe wheel comes to the bundled models.

Google's .task files cannot be fetched here, so the Tasks files are assembled from the mediapipe
0.10.14 wheel's own networks (tests/test_mediapipe_backend.py `assemble_task_files`): differences
then come from the two APIs and the wheel versions, not from newer networks. Three steps, each in
the venv that has the right mediapipe:

    # venv with mediapipe 0.10.14: the Tasks files, the inputs and the bundled-model reference
    python -m scripts.mediapipe_tasks_check reference --tasks-dir /tmp/mp_tasks --out /tmp/ref.npz
    # venv with a current mediapipe (e.g. 1.2.3): the same inputs through the Tasks backend
    python -m scripts.mediapipe_tasks_check run --tasks-dir /tmp/mp_tasks --inputs /tmp/ref.npz --out /tmp/new.npz
    # either venv: the table
    python -m scripts.mediapipe_tasks_check compare /tmp/ref.npz /tmp/new.npz

Measured: face mesh px error on two photos, lip-mask IoU per frame of a tracked talking video,
and the motion variances raw_l / raw_b of a moving clip. Run from the repository root (it uses the
test helpers in tests/, scripts/__init__.py says how the scripts are run).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
from pathlib import Path

import numpy as np


def _inputs() -> dict[str, np.ndarray]:
    from skimage import data

    from tests._media_helpers import open_mouth, portrait, warp
    from fantasytalking_core import lipmask as L

    out = {"still_astronaut": data.astronaut()}
    try:
        from tests._media_helpers import insightface_image

        out["still_tom"] = insightface_image("Tom_Hanks_54745.png")
    except BaseException:  # pytest.skip without insightface: one photo less
        pass
    face = portrait(256)
    pts = L.face_mesh_track(face[None], static_image_mode=True, backend="solutions").landmarks[0]
    mouth, width = pts[[13, 14]].mean(0), float(np.ptp(pts[:, 0]))
    out["talk"] = np.stack([open_mouth(face, mouth, 0.08 * width * abs(p), 0.25 * width)
                            for p in np.sin(np.arange(12) * 0.7)])
    phase = np.sin(np.linspace(0, 2 * np.pi, 8))
    out["moving"] = np.stack([warp(face, 12 * p, 6 * p, angle=3 * p) for p in phase])
    return out


def _measure(inputs: dict[str, np.ndarray], backend, mesh_backend=None) -> dict[str, np.ndarray]:
    """Face meshes of the stills, lip masks of the tracked video, raw motion of the moving clip."""
    from fantasytalking_core import lipmask as L
    from fantasytalking_core import motion as M

    res = {}
    for name in (k for k in inputs if k.startswith("still_")):
        track = L.face_mesh_track(inputs[name][None], refine_landmarks=True, static_image_mode=True,
                                  backend=mesh_backend or backend)
        res[f"mesh_{name}"] = track.landmarks[0]
    track = L.face_mesh_track(inputs["talk"], refine_landmarks=True, backend=mesh_backend or backend)
    t, h, w = inputs["talk"].shape[:3]
    res["lips_talk"] = L.lip_masks(None, track=L.FaceMeshTrack(track.landmarks[:, :468], track.found, h, w)).masks
    moving = inputs["moving"]
    mesh = L.face_mesh_track(moving, refine_landmarks=True, static_image_mode=True, backend=mesh_backend or backend)
    m = M.measure_motion(moving, track=L.FaceMeshTrack(mesh.landmarks[:, :468], mesh.found, *moving.shape[1:3]),
                         backend=backend)
    res["raw"] = np.array([m.raw_l, m.raw_b])
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("reference", help="mediapipe 0.10.14: assemble the Tasks files, save inputs + bundled results")
    p.add_argument("--tasks-dir", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("run", help="any mediapipe with the Tasks API: the inputs through the Tasks backend")
    p.add_argument("--tasks-dir", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("compare", help="print the table")
    p.add_argument("ref")
    p.add_argument("new")
    args = ap.parse_args(argv)
    import mediapipe

    from fantasytalking_core import mediapipe_backend as B

    if args.cmd == "reference":
        from tests.test_mediapipe_backend import assemble_task_files

        assemble_task_files(Path(args.tasks_dir))
        inputs = _inputs()
        ref = _measure(inputs, "solutions")
        local = _measure(inputs, B.get_backend("tasks", args.tasks_dir))  # the same files on 0.10.14's Tasks API
        np.savez_compressed(args.out, version=mediapipe.__version__, **{f"in_{k}": v for k, v in inputs.items()},
                            **{f"ref_{k}": v for k, v in ref.items()}, **{f"tasks01014_{k}": v for k, v in local.items()})
    elif args.cmd == "run":
        data = np.load(args.inputs)
        inputs = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
        res = _measure(inputs, B.get_backend("tasks", args.tasks_dir))
        np.savez_compressed(args.out, version=mediapipe.__version__, **{f"new_{k}": v for k, v in res.items()})
    else:
        ref, new = np.load(args.ref), np.load(args.new)
        rows = [("tasks on mediapipe " + str(ref["version"]), "tasks01014_"), ("tasks on mediapipe " + str(new["version"]),
                                                                              "new_")]
        print(f"reference: bundled models (solutions) on mediapipe {ref['version']}")
        print("| backend | face mesh max px (per photo) | lip-mask IoU min / mean (tracked video) | raw_l | raw_b |")
        print("|---|---|---|---|---|")
        for label, prefix in rows:
            src = ref if prefix == "tasks01014_" else new
            mesh = ", ".join(f"{k[len('ref_mesh_still_'):]} {np.abs(src[prefix + k[4:]] - ref[k]).max():.3f}"
                             for k in ref.files if k.startswith("ref_mesh_"))
            a, b = src[prefix + "lips_talk"] > 0.5, ref["ref_lips_talk"] > 0.5
            iou = (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)
            rl, rb = src[prefix + "raw"] / ref["ref_raw"] - 1
            print(f"| {label} | {mesh} | {iou.min():.3f} / {iou.mean():.3f} | {rl:+.2%} | {rb:+.2%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
