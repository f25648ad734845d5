"""facelandmarks: find every face in a photo or video and put 68 iBUG landmarks on it.

Trained, measured, registered and served by one reproducible pipeline (``dvc repro``).

    >>> from facelandmarks import FaceLandmarker
    >>> landmarker = FaceLandmarker.load("models:/facelandmarks@champion")
    >>> faces = landmarker(image)   # (H, W, 3) uint8 RGB -> [Face(box, score, landmarks (68, 2))]

``FaceLandmarker`` and ``Face`` are imported lazily (torch and MTCNN load on first use), so
``import facelandmarks`` stays cheap for the command line and the pipeline stages.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FaceLandmarker", "Face", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from facelandmarks.inference import Face, FaceLandmarker


def __getattr__(name: str) -> Any:
    if name in ("FaceLandmarker", "Face"):
        from facelandmarks import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'facelandmarks' has no attribute {name!r}")
