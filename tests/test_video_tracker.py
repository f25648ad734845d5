"""VideoLandmarker: faces tracked through real video frames with stable ids, MTCNN only when needed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import RAW

VIDEO = RAW / "demo" / "video" / "face_recognition__short_hamilton_clip.mp4"  # a cut to the audience at frame 20
DEMO = RAW / "demo" / "images"
pytestmark = [pytest.mark.slow, pytest.mark.needs_data]  # every test here uses the briefly trained model (tiny_checkpoint) and data/raw


@pytest.fixture(scope="module")
def landmarker(tiny_checkpoint):
    """The conftest's briefly trained model: its points are NOT good enough to follow a face."""
    import torch

    from facelandmarks import FaceLandmarker

    torch.set_num_threads(1)
    return FaceLandmarker.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def follower(tmp_path_factory):
    """A model whose points follow a face: MobileNetV2 from its pinned ImageNet weights (offline file),
    trained 4 epochs on 800 real 300-W faces at 96 px (about a minute on 2 cores; validation NME ~0.11),
    by the benchmark's own stand-in trainer (:func:`benchmarks.video.stand_in_checkpoint`)."""
    import torch

    from benchmarks.video import stand_in_checkpoint
    from facelandmarks import FaceLandmarker

    torch.set_num_threads(1)
    path = stand_in_checkpoint(tmp_path_factory.mktemp("follower"), seconds=None, faces=800, epochs=4,
                               model={"backbone": "mobilenetv2_100", "pretrained": "imagenet", "head": "heatmap",
                                      "head_channels": 32, "flip_test": False}, input_size=96)
    return FaceLandmarker.load(path, device="cpu")


@pytest.fixture(scope="module")
def frames():
    """The first 30 frames of the speaker clip (640x360 RGB): a wide shot, then a cut at frame 20."""
    from facelandmarks.media import MediaLimits, open_clip

    clip = open_clip(VIDEO, MediaLimits(max_frames=30, fps=1000))
    assert clip.step == 1
    return list(clip.frames)


def _params(detect_every: int, smooth: bool = False, flip_test: bool = False, runtime: str = "torch", **tracker):
    from facelandmarks.video import SmoothingParams, TrackerParams, VideoParams

    return VideoParams(tracker=TrackerParams(detect_every=detect_every, **tracker), smoothing=SmoothingParams(enabled=smooth),
                       flip_test=flip_test, runtime=runtime)


@pytest.mark.parametrize("runtime, atol", [("torch", 1e-3), ("onnx", 0.05)])
def test_detection_on_every_frame_gives_the_photo_predictors_landmarks(landmarker, frames, runtime, atol):
    """With MTCNN on every frame and the detection box always taken, tracking is the photo path plus ids (on
    ONNX Runtime within the export's 0.05 px)."""
    from facelandmarks.video import VideoLandmarker

    video = VideoLandmarker(landmarker, _params(1, keep_iou=1.0, flip_test=True, runtime=runtime))
    assert video.landmarker.runtime == runtime
    results = list(video.track(frames[:6], fps=30.0))
    assert video.detector_runs == 6 and all(r.detector for r in results)
    assert [r.index for r in results] == list(range(6)) and results[3].time == pytest.approx(0.1)
    for r, frame in zip(results, frames[:6]):
        photo = landmarker(frame)
        assert len(r.faces) == len(photo) >= 1
        got = sorted(r.faces, key=lambda f: f.landmarks[:, 0].mean())
        want = sorted(photo, key=lambda f: f.landmarks[:, 0].mean())
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.landmarks, w.landmarks, atol=atol)
            assert g.detected and g.score == pytest.approx(w.score)
    first = {f.track_id for f in results[0].faces}
    assert first == set(range(1, len(results[0].faces) + 1))
    ids = [sorted(f.track_id for f in r.faces) for r in results]
    assert all(first <= set(i) for i in ids), ids  # the same faces keep their ids
    assert all(min(set(i) - first, default=99) > max(first) for i in ids), ids  # a face found later gets a new id


def test_the_detector_runs_every_n_frames_and_tracks_keep_their_ids(follower, frames):
    from facelandmarks.video import VideoLandmarker

    video = VideoLandmarker(follower, _params(5))
    results = list(video.track(frames[:20], fps=30.0))  # one shot, before the cut
    ran = [r.index for r in results if r.detector]
    # never more than 5 frames without MTCNN, but most frames without it (a quality check may add a run)
    assert ran[0] == 0 and all(b - a <= 5 for a, b in zip(ran, ran[1:])) and 19 - ran[-1] < 5, ran
    assert len(ran) <= 8, ran
    first = {f.track_id for f in results[0].faces}
    ids = [{f.track_id for f in r.faces} for r in results]
    assert first and all(first <= i for i in ids), ids  # nobody lost, no id switch
    assert all(min(i - first, default=99) > max(first) for i in ids), ids  # faces found later get new ids
    for r in results:
        for f in r.faces:
            assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float32 and f.box.shape == (4,)
            assert f.detected == r.detector or (r.detector and f.track_id not in first)  # tracked, not detected


def test_a_cut_ends_the_old_tracks_and_new_faces_get_new_ids(follower, frames):
    from facelandmarks.video import VideoLandmarker

    video = VideoLandmarker(follower, _params(5))
    results = {r.index: r for r in video.track(frames[10:30], fps=30.0, start=10)}
    before = {f.track_id for f in results[19].faces}
    after = {f.track_id for f in results[29].faces}
    assert before and after and not before & after
    assert min(after) > max(before)  # ids are never reused
    assert not any(f.track_id in before for i in range(22, 30) for f in results[i].faces)  # ended within 2 frames


def test_a_face_that_leaves_the_frame_ends_its_track(follower):
    """A real face slides out of a black 480x360 frame: its track ends, and nothing is tracked on the empty frame."""
    from facelandmarks.io.images import read_image
    from facelandmarks.media import resize_max_side
    from facelandmarks.video import VideoLandmarker

    face = resize_max_side(read_image(DEMO / "face_recognition__obama.jpg"), 240)
    h, w = face.shape[:2]
    seq, xs = [], [120] * 6 + list(range(120, 481, 8)) + [480] * 8  # 8 px per frame, about 1/9 of the face box
    for x in xs:
        canvas = np.zeros((360, 480, 3), np.uint8)
        if x < 480:
            canvas[60 : 60 + h, x : min(480, x + w)] = face[:, : min(w, 480 - x)]
        seq.append(canvas)
    video = VideoLandmarker(follower, _params(4))
    results = list(video.track(seq, fps=25.0))
    assert [f.track_id for f in results[0].faces] == [1]
    in_view = [k for k, x in enumerate(xs) if x + w <= 480]
    assert all(1 in {f.track_id for f in results[k].faces} for k in in_view)  # followed while in view
    assert not any(f.track_id == 1 for r in results[xs.index(480) :] for f in r.faces)  # ended when it left
    gone = xs.index(480)  # first frame without the face
    assert all(not r.faces for r in results[gone + 4 + 2 :])  # nothing left by the next detector run (+ confirmation)


def test_the_crop_follows_a_moving_face_by_constant_velocity_prediction(follower):
    """A real face crosses a black 640x360 frame at 8 px per frame (about a tenth of its box), MTCNN only
    every 10 frames, smoothing on. The stand-in network reports only part of a face's offset in its crop,
    so a crop left where the face was (``motion`` 0) falls behind; predicted where the face will be
    (``motion`` 1), it stays much closer."""
    from facelandmarks.io.images import read_image
    from facelandmarks.media import resize_max_side
    from facelandmarks.video import SmoothingParams, TrackerParams, VideoLandmarker, VideoParams

    face = resize_max_side(read_image(DEMO / "face_recognition__obama.jpg"), 160)
    h, w = face.shape[:2]
    xs = list(range(20, 640 - w, 8))
    seq = []
    for x in xs:
        canvas = np.zeros((360, 640, 3), np.uint8)
        canvas[100 : 100 + h, x : x + w] = face
        seq.append(canvas)
    first = follower.detector.detect([seq[0]])[0]
    assert len(first) == 1
    centre = [float(first.boxes[0][0] + first.boxes[0][2]) / 2 + x - xs[0] for x in xs]  # the face's true centre x
    side = float(first.boxes[0][2] - first.boxes[0][0])

    def behind(motion: float) -> np.ndarray:
        """Per frame: how far the closest track's box centre is from the face's, in box sides."""
        params = VideoParams(tracker=TrackerParams(detect_every=10, motion=motion), smoothing=SmoothingParams(enabled=True),
                             flip_test=False, runtime="torch")
        results = list(VideoLandmarker(follower, params).track(seq, fps=25.0))
        assert all(r.faces for r in results)  # the face is never without a track
        return np.array([min(abs(float(f.box[0] + f.box[2]) / 2 - c) for f in r.faces) / side for r, c in zip(results, centre)])

    still, predicted = behind(0.0), behind(1.0)
    assert predicted.mean() < 0.7 * still.mean(), (predicted.mean(), still.mean())
    assert predicted.max() < still.max()


def test_smoothing_steadies_the_points_and_keeps_the_ids(follower, frames):
    """One Euro smoothing: the same faces with the same ids, points that move less from frame to frame,
    close to the network's own points (kept in ``raw``)."""
    from facelandmarks.video import VideoLandmarker, frame_record

    raw = list(VideoLandmarker(follower, _params(5)).track(frames[:20], fps=30.0))
    smooth = list(VideoLandmarker(follower, _params(5, smooth=True)).track(frames[:20], fps=30.0))
    for run in (raw, smooth):
        first = {f.track_id for f in run[0].faces}
        assert first and all(first <= {f.track_id for f in r.faces} for r in run)

    def moves(results):
        by_id: dict[int, list] = {}
        for r in results:
            for f in r.faces:
                by_id.setdefault(f.track_id, []).append(f.landmarks)
        return np.mean([np.linalg.norm(np.diff(np.stack(v), axis=0), axis=-1).mean() for v in by_id.values()])

    assert moves(smooth) < 0.8 * moves(raw)
    for r in raw:  # without smoothing the output is the network's points
        assert all(np.array_equal(f.landmarks, f.raw) for f in r.faces)
    # smoothed vs the network's points, in box sides, for faces tracked since the previous frame. An exponential
    # smoother (One Euro is one, with an adaptive alpha) gives gap_t = (1 - alpha) (move_t + gap_t-1) per
    # coordinate: it may trail a fast move, but never by more than the network's own move plus the last gap.
    # (A fixed bound on the worst frame fails on a small, drifting track of this stand-in model: 0.106 box sides
    # on a 21-px face whose raw points moved 0.129 box sides in that frame.)
    gaps = []
    for prev, r in zip(smooth, smooth[1:]):
        earlier = {f.track_id: f for f in prev.faces}
        for f in r.faces:
            if f.track_id not in earlier:
                continue
            side, p = float(f.box[2] - f.box[0]), earlier[f.track_id]
            gap = np.linalg.norm(f.landmarks - f.raw, axis=-1).mean() / side
            move = np.linalg.norm(f.raw - p.raw, axis=-1).mean() / side
            last_gap = np.linalg.norm(p.landmarks - p.raw, axis=-1).mean() / side
            assert gap <= move + last_gap + 1e-6, (f.track_id, gap, move, last_gap)
            gaps.append(gap)
    assert 0 < np.mean(gaps) < 0.05  # close to the network's points on average (0.026 box sides measured)
    rec = json.loads(json.dumps(frame_record(smooth[3])))
    assert rec["frame"] == 3 and rec["time"] == pytest.approx(0.1) and isinstance(rec["detector"], bool)
    face = rec["faces"][0]
    assert set(face) == {"track", "box", "score", "detected", "landmarks"} and len(face["landmarks"]) == 68


def test_video_mode_skips_the_models_flip_test_unless_asked(tiny_checkpoint, frames):
    """``video.flip_test: false`` runs the plain pass of the SAME weights (half the cost); true keeps the model's."""
    from facelandmarks import FaceLandmarker
    from facelandmarks.video import VideoLandmarker

    plain = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    flipping = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    flipping.model.config = flipping.config = flipping.config.model_copy(update={"flip_test": True})
    boxes = np.array([f.box for f in plain(frames[0])])
    want_plain, want_flip = plain.landmarks_in_boxes(frames[0], boxes), flipping.landmarks_in_boxes(frames[0], boxes)
    assert np.abs(want_plain - want_flip).max() > 1e-3  # the flip test does change the points
    fast = VideoLandmarker(flipping, _params(5, flip_test=False)).landmarker
    assert fast.model.inner is flipping.model  # shared weights, no copy
    np.testing.assert_allclose(fast.landmarks_in_boxes(frames[0], boxes), want_plain, atol=1e-4)
    same = VideoLandmarker(flipping, _params(5, flip_test=True)).landmarker
    np.testing.assert_allclose(same.landmarks_in_boxes(frames[0], boxes), want_flip, atol=1e-4)
    assert flipping.config.flip_test and flipping.model.config.flip_test  # the shared predictor is untouched


def test_points_that_disagree_with_their_box_make_the_tracker_detect_instead_of_losing_the_face(landmarker, frames):
    """The conftest model's points collapse inside the crop: every track fails the quality check, so MTCNN
    runs on every frame and the faces keep their ids and detection boxes instead of shrinking away."""
    from facelandmarks.video import VideoLandmarker

    results = list(VideoLandmarker(landmarker, _params(5)).track(frames[:8], fps=30.0))
    assert all(r.detector for r in results[1:])  # frame 0 detects anyway; then every frame asks again
    ids = [sorted(f.track_id for f in r.faces) for r in results]
    assert ids[0] and all(i == ids[0] for i in ids), ids
    photo = landmarker(frames[7])
    tracked = sorted((f.box for f in results[7].faces), key=lambda b: b[0])
    for got, want in zip(tracked, sorted((f.box for f in photo), key=lambda b: b[0])):
        np.testing.assert_allclose(got, want, atol=0.5)  # the box is the detection's, not the collapsed points'


def test_video_detection_thresholds_are_the_trackers_own_and_keep_the_confident_faces(landmarker, frames):
    """``video.detect_thresholds`` gives the tracker its own MTCNN stage thresholds (the photo predictor keeps
    the model's); on a real frame the stricter stages still find every face the model's settings score
    >= 0.9, and null keeps the landmarker's detector itself."""
    from facelandmarks.video import VideoLandmarker, VideoParams

    assert landmarker.detector.config.thresholds != (0.6, 0.7, 0.7)
    strict = VideoLandmarker(landmarker, VideoParams(detect_thresholds=(0.6, 0.7, 0.7)))
    assert strict.detector.config.thresholds == (0.6, 0.7, 0.7)
    assert landmarker.detector.config.thresholds != (0.6, 0.7, 0.7)  # the shared predictor is untouched
    plain = VideoLandmarker(landmarker, VideoParams(detect_thresholds=None, rotated_retry=True))
    assert plain.detector is landmarker.detector
    from facelandmarks.detect.matching import match_boxes

    model_dets = landmarker.detector.detect([frames[0]])[0]
    confident = model_dets.boxes[model_dets.scores >= 0.9]
    assert len(confident)
    index, _ = match_boxes(confident, strict.detector.detect([frames[0]])[0].boxes, 0.5)
    assert (index >= 0).all()


def test_the_benchmarks_smoothing_sweep_measures_the_tracker_as_it_runs_with_each_setting(follower, frames):
    """Each One Euro setting of the sweep is its own tracking run (the crop's motion prediction uses the
    smoothed points): its jitter is that of the tracker run with that setting, and a lower cutoff gives
    steadier points."""
    from benchmarks.video import _largest_sequences, jitter, smoothing_sweep
    from facelandmarks.video import SmoothingParams, VideoLandmarker

    clip = [(k, k / 30.0, f) for k, f in enumerate(frames[:20])]
    params = _params(5)
    rows = smoothing_sweep(follower, params, clip, 30.0, 1.0, min_cutoffs=(0.5, 8.0), betas=(0.0,))
    assert [(r["min_cutoff"], r["beta"]) for r in rows] == [(0.5, 0.0), (8.0, 0.0)]
    for r in rows:
        smooth = params.model_copy(update={"smoothing": SmoothingParams(min_cutoff=r["min_cutoff"], beta=0.0)})
        run = list(VideoLandmarker(follower, smooth).track(frames[:20], fps=30.0))
        assert r["jitter"] == pytest.approx(jitter(_largest_sequences([x.faces for x in run]))["mean"], rel=1e-6)
        assert r["ratio"] == r["jitter"]  # baseline 1.0
    assert rows[0]["jitter"] < rows[1]["jitter"]


def test_turning_the_output_smoothing_off_changes_the_output_only_not_the_tracking(follower, frames):
    """The crop's motion estimate always uses the smoothed points: an unsmoothed run returns exactly the
    network's points of the smoothed run (same crops, same ids, same detector runs)."""
    from facelandmarks.video import VideoLandmarker

    plain = VideoLandmarker(follower, _params(5))
    smooth = VideoLandmarker(follower, _params(5, smooth=True))
    a, b = list(plain.track(frames[:20], fps=30.0)), list(smooth.track(frames[:20], fps=30.0))
    assert plain.detector_runs == smooth.detector_runs
    for x, y in zip(a, b):
        assert [f.track_id for f in x.faces] == [f.track_id for f in y.faces]
        for f, g in zip(x.faces, y.faces):
            np.testing.assert_array_equal(f.landmarks, g.raw)
    assert any(not np.array_equal(g.landmarks, g.raw) for y in b for g in y.faces)  # the smoothed output differs


def test_video_detection_pyramid_is_the_trackers_own_and_keeps_the_confident_faces(landmarker, frames):
    """``video.detect_factor`` gives the tracker's MTCNN a coarser image pyramid (fewer scales, a cheaper run);
    the photo predictor keeps the model's; on a real frame it still finds the faces the model's detector
    scores >= 0.9."""
    from facelandmarks.detect.matching import match_boxes
    from facelandmarks.video import VideoLandmarker, VideoParams

    model_factor = landmarker.detector.config.factor
    assert model_factor != 0.55
    coarse = VideoLandmarker(landmarker, VideoParams(detect_thresholds=(0.6, 0.7, 0.7), detect_factor=0.55))
    assert coarse.detector.config.factor == 0.55 and coarse.detector.config.thresholds == (0.6, 0.7, 0.7)
    assert landmarker.detector.config.factor == model_factor  # the shared predictor is untouched
    model_dets = landmarker.detector.detect([frames[0]])[0]
    confident = model_dets.boxes[model_dets.scores >= 0.9]
    assert len(confident)
    index, _ = match_boxes(confident, coarse.detector.detect([frames[0]])[0].boxes, 0.5)
    assert (index >= 0).all()
    with pytest.raises(ValueError, match="detect_factor"):
        VideoParams(detect_factor=1.5)


def _canvas(*faces: tuple[np.ndarray, int, int]) -> np.ndarray:
    """A 640x360 grey frame with photos pasted at (x, y)."""
    canvas = np.full((360, 640, 3), 90, np.uint8)
    for img, x, y in faces:
        canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
    return canvas


def test_the_detector_backs_off_while_its_runs_only_confirm_the_tracks(follower):
    """Back-off (``detect_every_max``): on a still scene MTCNN runs at frames 0, 5, 15, 30 (the interval grows by
    ``detect_every`` up to 15); a face entering at frame 32 is found at the next run (45), which resets the
    interval to 5 (50), and it grows again."""
    from facelandmarks.io.images import read_image
    from facelandmarks.media import resize_max_side
    from facelandmarks.video import VideoLandmarker

    a = resize_max_side(read_image(DEMO / "face_recognition__obama.jpg"), 150)
    b = resize_max_side(read_image(DEMO / "face_recognition__biden.jpg"), 150)
    seq = [_canvas((a, 60, 100)) if k < 32 else _canvas((a, 60, 100), (b, 400, 100)) for k in range(62)]
    video = VideoLandmarker(follower, _params(5, detect_every_max=15))
    results = list(video.track(seq, fps=30.0))
    assert [r.index for r in results if r.detector] == [0, 5, 15, 30, 45, 50, 60]
    assert [len(r.faces) for r in results] == [1] * 45 + [2] * 17
    assert len({f.track_id for r in results for f in r.faces}) == 2
    # without the back-off: every 5 frames, the same faces
    fixed = list(VideoLandmarker(follower, _params(5)).track(seq, fps=30.0))
    assert [r.index for r in fixed if r.detector] == list(range(0, 62, 5))
    assert [len(r.faces) for r in fixed] == [1] * 35 + [2] * 27


def test_a_face_that_is_covered_ends_its_track_at_once_with_the_onet_check(follower):
    """A face covered by a textured patch at frame 10, detector every 50 frames: MTCNN's O-net scores the track's
    box below ``min_face_score`` on that frame, so the detector runs there, misses the face and the track ends
    (``max_misses`` 1: one confirming run on the next frame). While the face shows, each frame's score is the
    O-net's on that frame's box. The landmark-box checks (``max_scale_change``, ``max_shift``) are loosened in both
    runs: whether they fire on a noise patch depends on the network's guesses there (a stand-in trained on another
    CPU differs), and the test is about what the O-net check adds."""
    import cv2

    from facelandmarks.io.images import read_image
    from facelandmarks.media import resize_max_side
    from facelandmarks.video import VideoLandmarker
    from facelandmarks.video.verify import FaceVerifier

    a = resize_max_side(read_image(DEMO / "face_recognition__obama.jpg"), 150)
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    cover = cv2.GaussianBlur(noise, (0, 0), 3)
    seq = [_canvas((a if k < 10 else cover, 200, 100)) for k in range(20)]
    loose = {"max_scale_change": 100.0, "max_shift": 100.0}
    results = list(VideoLandmarker(follower, _params(50, min_face_score=0.8, **loose)).track(seq, fps=30.0))
    assert [r.index for r in results if r.detector] == [0, 10]
    assert all(len(r.faces) == 1 for r in results[:10]) and not any(r.faces for r in results[10:])
    without = list(VideoLandmarker(follower, _params(50, **loose)).track(seq, fps=30.0))
    assert [r.index for r in without if r.detector] == [0] and all(r.faces for r in without[10:13])  # without: it lingers
    for r in results[1:10]:  # per frame, the O-net's on that frame's box (not the detection's score carried along)
        f = r.faces[0]
        assert f.score >= 0.8 and not f.detected
        assert f.score == pytest.approx(float(FaceVerifier().face_scores(seq[r.index], f.box[None])[0]), abs=1e-4)


def test_the_crop_hold_keeps_one_crop_on_a_still_face_and_still_follows_a_moving_one(follower):
    """``hold``: a still face (one real photo, fresh camera noise of 3 grey levels per frame) keeps one crop, so the
    network's points move far less from frame to frame than when the crop follows every frame's noisy points; on
    identical frames the points are then exactly the same. A face moving 8 px a frame (a fifth of its box) still
    has its crop moved with it."""
    from facelandmarks.io.images import read_image
    from facelandmarks.media import resize_max_side
    from facelandmarks.video import VideoLandmarker

    face = resize_max_side(read_image(DEMO / "face_recognition__obama.jpg"), 150)
    still = _canvas((face, 200, 100))
    rng = np.random.default_rng(0)
    noisy = [np.clip(still + rng.normal(0, 3.0, still.shape), 0, 255).astype(np.uint8) for _ in range(40)]

    def face_points(seq, **tracker) -> np.ndarray:
        """``(T, 68, 2)`` network points of the face's track (MTCNN, with no score floor here, also reports a
        false face at 0.42 in some frames: the face is the first frame's most confident one)."""
        results = list(VideoLandmarker(follower, _params(10, **tracker)).track(seq, fps=30.0))
        face_id = max(results[0].faces, key=lambda f: f.score).track_id
        faces = [[f for f in r.faces if f.track_id == face_id] for r in results]
        assert all(len(f) == 1 for f in faces)  # followed in every frame
        return np.stack([f[0].raw for f in faces])

    def jitter(pts: np.ndarray) -> float:
        return float(np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean())

    follow, held = jitter(face_points(noisy, hold=0.0)), jitter(face_points(noisy, hold=0.05))
    assert held < 0.6 * follow, (held, follow)
    pts = face_points([still] * 12, hold=0.05)
    assert (pts[3:] == pts[3]).all()  # one crop, one answer
    # moving: the crop is not held back (the points stay on the face, as without the hold)
    xs = list(range(20, 640 - face.shape[1], 8))
    pts = face_points([_canvas((face, x, 100)) for x in xs], hold=0.05)
    shift = pts[:, :, 0].mean(axis=1) - np.array(xs)  # the points' place relative to the face's
    assert np.ptp(shift) < 15.0, shift
