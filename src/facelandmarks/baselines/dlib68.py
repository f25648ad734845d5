"""dlib's 68-point face landmarks, the de-facto default users pick instead of this product.

* Detector: dlib's HOG + linear SVM frontal face detector (``dlib.get_frontal_face_detector``; Dalal &
  Triggs, CVPR 2005), the detector the predictor was trained with.
* Landmarks: dlib's ``shape_predictor`` (an ensemble of regression trees; Kazemi & Sullivan, "One
  Millisecond Face Alignment with an Ensemble of Regression Trees", CVPR 2014) with the model file
  ``shape_predictor_68_face_landmarks.dat`` that the PyPI package ``face_recognition_models`` ships. That
  model was trained by dlib's author on the iBUG 300-W training images (AFW, HELEN train, LFPW train,
  iBUG) with boxes from the HOG detector, so (a) the AFW and HELEN faces of this project's 300-W test split
  were in ITS training set, and (b) it expects boxes in the HOG detector's convention:
  :class:`BoxConversion` maps another detector's boxes into that convention, fitted on training faces.
  Its licence follows 300-W's: research use only.

Coordinates follow the annotation table: 0-based pixels, pixel centres at integers; boxes are
``x0, y0, x1, y1`` EDGES (a box covering pixels 0..99 is ``(-0.5, ..., 99.5, ...)``). dlib rectangles are
inclusive integer pixel indices (``left .. right``); :func:`box_to_rect` and :func:`rect_to_box` convert.
dlib returns integer landmark positions (its Python API rounds), so its points carry up to half a
pixel of rounding error.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelandmarks.crop.geometry import square_box

__all__ = [
    "PREDICTOR_FILE",
    "predictor_path",
    "box_to_rect",
    "rect_to_box",
    "BoxConversion",
    "DlibLandmarker",
]

#: File name of dlib's 68-point model inside the ``face_recognition_models`` package.
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


def predictor_path() -> Path:
    """Path of dlib's 68-point predictor shipped by the ``face_recognition_models`` package.

    The file is located without importing the package: its ``__init__`` needs ``pkg_resources``, which
    setuptools >= 81 no longer provides (``face_recognition_models.pose_predictor_model_location()`` then
    raises ``ModuleNotFoundError``); the path is the one that function would return.

    Raises:
        FileNotFoundError: the package or the model file is missing (the message says what to install).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "dlib's 68-point predictor: package face_recognition_models is not installed "
            "(pip install -e '.[bench]' installs dlib-bin and face_recognition_models)"
        )
    for folder in spec.submodule_search_locations:
        p = Path(folder) / "models" / PREDICTOR_FILE
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"dlib's 68-point predictor: {PREDICTOR_FILE} not found under {list(spec.submodule_search_locations)}"
    )


def box_to_rect(box: np.ndarray):
    """Edge box ``(4,)`` x0, y0, x1, y1 (photo pixels) -> ``dlib.rectangle`` of the pixels it covers.

    The first pixel is the centre nearest to ``x0 + 0.5`` and the last the centre nearest to ``x1 - 0.5``
    (ties round up): ``left = floor(x0 + 1)``, ``right = floor(x1)``; e.g. ``(-0.5, -0.5, 99.5, 99.5)`` ->
    ``[(0, 0) (99, 99)]``.

    Raises:
        ValueError: a box with non-finite values.
    """
    import dlib

    b = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.all(np.isfinite(b)):
        raise ValueError(f"box_to_rect: non-finite box {b.tolist()}")
    left, top = (int(np.floor(v + 1.0)) for v in b[:2])
    right, bottom = (int(np.floor(v)) for v in b[2:])
    return dlib.rectangle(left, top, max(right, left), max(bottom, top))


def rect_to_box(rect) -> np.ndarray:
    """``dlib.rectangle`` (inclusive pixel indices) -> ``(4,) float32`` edge box x0, y0, x1, y1."""
    return np.array([rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5], np.float32)


@dataclass(frozen=True)
class BoxConversion:
    """Maps boxes of one convention (e.g. MTCNN's) onto another's (dlib's HOG detector's).

    The target box is the square ``square_box(src, scale, (dx, dy))``: side ``scale * max(w, h)`` of the
    source box, centre moved by ``(dx, dy) * max(w, h)``. HOG boxes are square, so a square target loses
    nothing.

    Attributes:
        scale: target side / source longer side.
        dx, dy: centre shift in units of the source longer side (positive right / down).
        n: number of box pairs it was fitted on (0 for the identity).
    """

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    n: int = 0

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray) -> "BoxConversion":
        """Fit on pairs of boxes of the same faces: per-pair ratios and shifts, then their medians.

        Args:
            src: ``(N, 4)`` boxes in the source convention.
            dst: ``(N, 4)`` boxes of the same faces in the target convention.
        Raises:
            ValueError: no pairs, shapes that differ, or degenerate source boxes.
        """
        s = np.asarray(src, dtype=np.float64).reshape(-1, 4)
        d = np.asarray(dst, dtype=np.float64).reshape(-1, 4)
        if len(s) == 0 or s.shape != d.shape:
            raise ValueError(f"BoxConversion.fit: need equal, non-empty (N, 4) arrays, got {s.shape} and {d.shape}")
        side = np.maximum(s[:, 2] - s[:, 0], s[:, 3] - s[:, 1])
        if not np.all(side > 0):
            raise ValueError("BoxConversion.fit: source boxes without positive extent")
        dside = np.maximum(d[:, 2] - d[:, 0], d[:, 3] - d[:, 1])
        scx, scy = (s[:, 0] + s[:, 2]) / 2, (s[:, 1] + s[:, 3]) / 2
        dcx, dcy = (d[:, 0] + d[:, 2]) / 2, (d[:, 1] + d[:, 3]) / 2
        return cls(
            scale=float(np.median(dside / side)),
            dx=float(np.median((dcx - scx) / side)),
            dy=float(np.median((dcy - scy) / side)),
            n=int(len(s)),
        )

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """``(4,)`` or ``(N, 4)`` source boxes -> target boxes, same shape, float32."""
        return square_box(boxes, self.scale, (self.dx, self.dy)).astype(np.float32)


class DlibLandmarker:
    """dlib's HOG face detector and 68-point shape predictor, as a user of dlib would run them.

    dlib runs single-threaded on the CPU (the ``dlib-bin`` wheel has no CUDA).

    Args:
        predictor: model file (:func:`predictor_path` when None).
        upsample: times the HOG detector upsamples the photo (1 finds faces down to about 40 px; the
            default of ``face_recognition.face_locations``).
    Raises:
        FileNotFoundError: no predictor file.
        RuntimeError: dlib cannot read the file.
    Example:
        >>> dl = DlibLandmarker()
        >>> boxes, scores = dl.detect(image)        # image (H, W, 3) uint8 RGB
        >>> pts = dl.landmarks(image, boxes)         # (n, 68, 2) float32 photo pixels
    """

    def __init__(self, predictor: str | os.PathLike | None = None, upsample: int = 1) -> None:
        import dlib

        path = Path(predictor) if predictor is not None else predictor_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: dlib shape predictor file not found")
        self.path = path
        self.upsample = int(upsample)
        self._predictor = dlib.shape_predictor(str(path))
        self._detector = dlib.get_frontal_face_detector()
        # the predictor does not expose its point count: ask one prediction on a blank patch
        probe = np.zeros((32, 32, 3), np.uint8)
        self.num_points = int(self._predictor(probe, dlib.rectangle(0, 0, 31, 31)).num_parts)

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"DlibLandmarker: expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
        return np.ascontiguousarray(img)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Faces found by the HOG detector.

        Args:
            image: ``(H, W, 3) uint8`` RGB.
        Returns:
            ``(boxes (n, 4) float32 edge boxes, scores (n,) float32 SVM scores)``, by descending score.
        """
        img = self._check(image)
        rects, scores, _ = self._detector.run(img, self.upsample, 0.0)
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes = np.stack([rect_to_box(r) for r in rects])
        s = np.asarray(scores, dtype=np.float32)
        order = np.argsort(-s, kind="stable")
        return boxes[order], s[order]

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """68 points for each box.

        Args:
            image: ``(H, W, 3) uint8`` RGB.
            boxes: ``(n, 4)`` edge boxes in the HOG detector's convention (see :class:`BoxConversion`).
        Returns:
            ``(n, 68, 2) float32`` photo pixels (integers: dlib rounds).
        """
        img = self._check(image)
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.zeros((len(b), self.num_points, 2), np.float32)
        for i, box in enumerate(b):
            shape = self._predictor(img, box_to_rect(box))
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detect and put landmarks on every face: ``(boxes (n, 4), scores (n,), landmarks (n, 68, 2))``."""
        boxes, scores = self.detect(image)
        return boxes, scores, self.landmarks(image, boxes)
