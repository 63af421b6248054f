"""Several speakers in a dub (issue 26): one full-frame speaker is today's dub bit for bit; with a tiny DiT
whose self-attention output is zero (nothing mixes tokens), changing one speaker's new audio changes the
dubbed video only inside that speaker's region, through the three guidance passes, the inpainting and the
segments; automatic regions are found on the first source frame and follow the faces frame by frame; the
command line dubs with several --audio and --mask, its length following fit and its sound the mix."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from _dub_helpers import talking_source
from _media_helpers import portrait, warp
from fantasytalking_core import dub as D
from fantasytalking_core.__main__ import main
from fantasytalking_core.dub_speakers import DubSpeakers, SegmentRegions, dub_speakers
from fantasytalking_core.pipeline import FantasyTalkingPipeline, GenerationConfig, tiny_components
from fantasytalking_core.speakers import SpeakerRegions, Speakers, Timing, arrange_tracks, full_frame, head_regions
from fantasytalking_core.face import FaceDetection
from test_speakers import _quiet_self_attention, _two_speaker_masks, tone

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
SR = 16000


@pytest.fixture(scope="module")
def components():
    return tiny_components(seed=0)


def _dub(pipe, frames, masks, audio, seconds, segment_frames=9, size=None, cfg_audio=5.0):
    plan = D.plan_dub(len(frames), 23.0, seconds, segment_frames=segment_frames)
    job = D.DubJob(frames, masks, plan, size=size or max(frames.shape[1:3]))
    config = GenerationConfig(size=job.width if job.width >= job.height else job.height, steps=2,
                              segment_frames=segment_frames, cfg_audio=cfg_audio)
    return torch.cat(list(D.dub_frames(pipe, job, audio, config, "two people", "", progress=False))), job


# ------------------------------------------------------------------------------------- bit for bit


def test_one_full_frame_speaker_dubs_todays_video_bit_for_bit(components, speech):
    pipe = FantasyTalkingPipeline(components)
    frames = talking_source(14)
    masks = D.mouth_masks(frames, dilation=2, feather=3).masks
    today, _ = _dub(pipe, frames, masks, speech, 14 / 23, size=64)  # the model at half the source's size
    one = dub_speakers(Speakers(arrange_tracks([(speech.numpy(), SR)], Timing("together"))), frames[0])
    assert torch.equal(one.tracks.tracks[0], speech) and one.regions.source == "the whole picture" and one.boxes is None
    dubbed, job = _dub(pipe, frames, masks, one, 14 / 23, size=64)
    assert len(job.plan.plans) == 2 and (job.width, job.height) == (64, 64) and torch.equal(dubbed, today)


# ------------------------------------------------------------------------------------- routing


def _band_masks(n: int, h: int = 64, w: int = 96) -> torch.Tensor:
    """The dub's mask: rows 16..47 of every frame, across both speakers and the background between them."""
    m = torch.zeros(n, h, w)
    m[:, 16:48] = 1.0
    return m


@pytest.mark.parametrize("region_guidance, speakers", [(False, (0, 1)), (True, (1,))])
def test_each_new_voice_moves_only_its_own_region_of_the_dub(components, region_guidance, speakers):
    pipe = FantasyTalkingPipeline(_quiet_self_attention(components))
    frames = np.random.default_rng(0).integers(0, 255, (14, 64, 96, 3), dtype=np.uint8)
    band = _band_masks(14)
    masks = _two_speaker_masks()

    def run(a, b):
        tracks = arrange_tracks([(a, SR), (b, SR)], Timing("together"))
        voices = dub_speakers(Speakers(tracks, masks, region_guidance=region_guidance), frames[0])
        return _dub(pipe, frames, band, voices, tracks.seconds)

    a, b = tone(0.6, 200, 1), tone(0.6, 300, 2)
    base, job = run(a, b)
    assert len(job.plan.plans) == 2 and base.shape == (14, 64, 96, 3) and (job.width, job.height) == (96, 64)
    assert job.plan.generated == 17
    weights = SpeakerRegions(torch.from_numpy(np.stack(masks))).weights(4, 6)[:, 0]  # [3, 4, 6]
    for k in speakers:
        other, _ = run(tone(0.6, 260, 7), b) if k == 0 else run(a, tone(0.6, 410, 8))
        diff = (other - base).abs().amax(-1)  # [T, H, W]
        region = (weights[k] > 0).repeat_interleave(16, 0).repeat_interleave(16, 1) & (band[0] > 0)
        assert diff[:, ~region].max() == 0, f"speaker {k + 1}'s new audio moved pixels outside its region"
        assert (diff[:, region].amax(-1) > 0).all(), f"speaker {k + 1}'s audio must move its region in every frame"


# ------------------------------------------------------------------------------------- regions


def _face(x: float, y: float, side: float = 20.0) -> np.ndarray:
    """Face-mesh landmarks [4, 2] spanning a face box of ``side`` pixels at (x, y)."""
    return np.array([[x, y], [x + side, y], [x, y + side], [x + side, y + side]], np.float32)


def test_automatic_regions_are_numbered_on_the_first_frame_and_follow_the_faces():
    first = np.zeros((64, 128, 3), np.uint8)
    tracks = arrange_tracks([(tone(0.3, 200), SR), (tone(0.3, 300), SR)], Timing("turns"))
    # the mesh lists the right face first; they walk towards each other, cross, and one turns away
    faces = [np.stack([_face(90, 10), _face(10, 12)]), np.stack([_face(70, 10), _face(30, 12)]),
             np.stack([_face(45, 12), _face(55, 10)]), np.stack([_face(60, 10)])]
    voices = dub_speakers(Speakers(tracks, grow=1.0, feather=0.0), first, faces)
    assert voices.regions.boxes == [(10.0, 12.0, 30.0, 32.0), (90.0, 10.0, 110.0, 30.0)]  # left to right
    assert "numbered left to right" in voices.regions.source and "followed on every source frame" in voices.regions.source
    assert voices.boxes[1] == [(30.0, 12.0, 50.0, 32.0), (70.0, 10.0, 90.0, 30.0)]
    assert voices.boxes[2] == [(45.0, 12.0, 65.0, 32.0), (55.0, 10.0, 75.0, 30.0)]  # each the face nearest its own
    assert voices.boxes[3] == voices.boxes[2]  # a face turned away: the previous regions stay
    # a segment's regions at the model's size (half the source's): each frame's heads, per latent frame averaged
    seg = voices.segment(torch.tensor([0, 1, 1, 1, 1]), 64, 32)
    assert seg.masks.shape == (5, 2, 32, 64)
    want0 = head_regions([FaceDetection((5.0, 6.0, 15.0, 16.0), 1.0), FaceDetection((45.0, 5.0, 55.0, 15.0), 1.0)],
                         32, 64, 1.0, 0.0).masks
    assert torch.equal(seg.masks[0], want0)
    w = seg.weights(2, 4)
    assert w.shape == (3, 2, 2, 4)
    torch.testing.assert_close(w.sum(0), torch.ones(2, 2, 4))
    torch.testing.assert_close(w[:, 1], SpeakerRegions(seg.masks[1]).weights(2, 4)[:, 0])  # frames 1..4: one place
    assert not torch.equal(w[:, 0], w[:, 1])  # the regions moved between frame 0 and frame 1
    torch.testing.assert_close(seg.latent_mask(4, 8)[:, ::2, ::2], w[:2].sum(0))


def test_held_regions_are_stretched_to_the_model_size_and_a_full_frame_one_stays_exact():
    tracks = arrange_tracks([(tone(0.3, 200), SR), (tone(0.3, 300), SR)], Timing("turns"))
    voices = dub_speakers(Speakers(tracks, _two_speaker_masks()), np.zeros((64, 96, 3), np.uint8))
    seg = voices.segment(torch.arange(5), 48, 32)
    assert isinstance(seg, SegmentRegions) and seg.masks is None and seg.regions.size == (48, 32)
    w = seg.weights(2, 3)[:, 0]  # each token now covers 32x32 source pixels, stretched as the frames are
    want = torch.tensor([[1.0, 0.125, 0.0], [0.0, 0.0, 1.0], [0.0, 0.875, 0.0]])[:, None].expand(3, 2, 3)
    torch.testing.assert_close(w, want, atol=0.02, rtol=0)  # the antialiased stretch blurs the edges a little
    whole = DubSpeakers(tracks, full_frame(96, 64)).segment(torch.arange(5), 48, 32)
    assert torch.equal(whole.weights(2, 3)[0], torch.ones(1, 2, 3))


def test_dub_speaker_errors_say_what_to_give():
    tracks = arrange_tracks([(tone(0.3, 200), SR), (tone(0.3, 300), SR)], Timing("turns"))
    first = np.zeros((64, 96, 3), np.uint8)
    with pytest.raises(ValueError, match=r"found 1 face\(s\) on the video's first frame but there are 2 speakers: "
                                         r"give one --mask FILE per speaker .* at the video's 96x64"):
        dub_speakers(Speakers(tracks), first, [np.stack([_face(10, 10)])])
    with pytest.raises(ValueError, match=r"--mask 2 is 48x64 but the source video is 96x64: draw the masks on a frame "
                                         r"of the video itself"):
        dub_speakers(Speakers(tracks, [_two_speaker_masks()[0], _two_speaker_masks()[1][:, :48]]), first)
    with pytest.raises(ValueError, match=r"mask 2 is empty"):
        dub_speakers(Speakers(tracks, [_two_speaker_masks()[0], np.zeros((64, 96), np.float32)]), first)


def test_mouth_masks_cover_every_speakers_mouth():
    img = portrait(96)
    two = np.concatenate([img, img[:, ::-1]], axis=1)  # two faces side by side, 96 x 192
    frames = np.stack([warp(two, dx=math.sin(i / 3)) for i in range(5)])
    one = D.mouth_masks(frames, dilation=2, feather=0)
    both = D.mouth_masks(frames, dilation=2, feather=0, faces=2)
    halves = lambda m: (int((m[:, :, :96] > 0).sum()), int((m[:, :, 96:] > 0).sum()))  # noqa: E731
    assert min(halves(both.masks)) > 0.8 * max(halves(both.masks))  # both mouths, about equally large
    assert min(halves(one.masks)) == 0  # one face's mouth only, as a one-speaker dub has always done
    assert bool((both.masks >= one.masks).all())
    with pytest.raises(ValueError, match="faces must be an int >= 1"):
        D.mouth_masks(frames, faces=0)


# ------------------------------------------------------------------------------------- command line


def test_cli_dubs_several_voices_with_masks_its_length_following_fit_and_its_sound_the_mix(tmp_path, capsys):
    from fantasytalking_core.video import probe, read_video, write_video
    from fantasytalking_core.audio import read_audio

    img = portrait(64)
    two = np.concatenate([img, img[:, ::-1]], axis=1)  # 64 x 128
    video = write_video(np.stack([warp(two, dx=math.sin(i / 3)) for i in range(10)]), tmp_path / "in.mp4", 25.0)
    args = ["dub", "--preset", "tiny", "--video", str(video), "--steps", "1", "--segment-frames", "13",
            "--attention", "sdpa"]
    voices = (tone(0.4, 200, 1), tone(0.3, 300, 2))
    for k, voice in enumerate(voices):
        import soundfile

        soundfile.write(tmp_path / f"a{k}.wav", voice, SR)
        mask = np.zeros((64, 128), np.uint8)
        mask[:, 64 * k:64 * k + 64] = 255
        Image.fromarray(mask).save(tmp_path / f"m{k}.png")
        args += ["--audio", str(tmp_path / f"a{k}.wav"), "--mask", str(tmp_path / f"m{k}.png")]
    out = tmp_path / "out.mp4"
    assert main(args + ["--timing", "turns:0.1", "--fit", "hold", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "new audio 0.80 s -> 20 frames" in text and "speaker 2 from 0.50 s" in text
    assert "speaker regions: given masks" in text and "mouth regenerated in 10 of 10 source frames" in text
    data, info = read_video(out), probe(out)
    assert data.frames.shape == (20, 64, 128, 3) and data.fps == 25.0  # 0.8 s at 25 fps: the last frame held
    assert abs(info["audio"]["duration"] - 0.8) < 0.5 / 25, info
    sound = read_audio(out).to_16k()[:12800].numpy()
    mix = np.zeros(12800, np.float32)
    mix[:6400], mix[8000:12800] = voices[0], voices[1]
    assert np.corrcoef(sound, mix)[0, 1] > 0.9  # the mix: speaker 1, a gap, speaker 2
    # fit cut: the video's length (10 frames), the mix cut to it
    assert main(args + ["--timing", "turns:0.1", "--out", str(tmp_path / "cut.mp4")]) == 0
    assert read_video(tmp_path / "cut.mp4").frames.shape[0] == 10
    # no masks: the two faces found on the first frame, numbered left to right, followed frame by frame
    auto = [a for a in args if not a.endswith(".png") and a != "--mask"]
    assert main(auto + ["--out", str(tmp_path / "auto.mp4")]) == 0
    text = capsys.readouterr().out
    found = re.search(r"speaker regions: 2 face\(s\) found, numbered left to right \(1: face at x (\d+)-(\d+), "
                      r"2: face at x (\d+)-(\d+)\), followed on every source frame", text)
    assert found and int(found[2]) < 64 <= int(found[3]), text  # speaker 1 the left person, speaker 2 the right
    bad = args[:-1] + [str(tmp_path / "none.png")]
    assert main(bad + ["--out", str(tmp_path / "x.mp4")]) == 2
    assert "--mask file not found" in capsys.readouterr().err


def test_cli_dub_with_one_audio_and_a_timing_is_todays_dub(tmp_path, speech_path, monkeypatch):
    from fantasytalking_core.video import write_video

    made, real = [], D.dub_frames  # the frames the writer gets (its mp4 encoding is not bit-stable run to run)

    def spy(*args, **kwargs):
        made.append(torch.cat(list(real(*args, **kwargs))))
        yield made[-1]

    monkeypatch.setattr(D, "dub_frames", spy)
    video = write_video(talking_source(9, 64), tmp_path / "in.mp4", 23.0)
    args = ["dub", "--preset", "tiny", "--video", str(video), "--audio", str(speech_path), "--steps", "1",
            "--segment-frames", "9", "--attention", "sdpa"]
    assert main(args + ["--out", str(tmp_path / "today.mp4")]) == 0
    assert main(args + ["--timing", "together", "--out", str(tmp_path / "one.mp4")]) == 0  # one speaker's path
    today, one = made
    assert today.shape == (9, 64, 64, 3) and torch.equal(today, one)
