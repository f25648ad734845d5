"""Inference: :class:`FaceLandmarker` (photo -> faces with landmarks) and :class:`Face`."""

from facelandmarks.inference.landmarker import Face, FaceLandmarker

__all__ = ["Face", "FaceLandmarker"]
