"""MLflow ``python_function`` loader of a registered facelandmarks model.

A registered version holds the checkpoint file as its pyfunc ``data``
(:func:`facelandmarks.registry.models.log_landmark_model`), so both of these work:

    >>> FaceLandmarker.load("models:/facelandmarks@champion")            # the product's API
    >>> mlflow.pyfunc.load_model("models:/facelandmarks@champion").predict(image)   # MLflow's generic one

MLflow calls :func:`_load_pyfunc` (the ``loader_module`` protocol) with the checkpoint's local path.
Nothing is unpickled from the registry but the checkpoint itself, and that with
``torch.load(..., weights_only=True)`` (:func:`facelandmarks.model.checkpoint.read_checkpoint`): loading a
registered model never executes code from its files; a tampered one raises ``CheckpointError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LandmarkerPyfunc"]


class LandmarkerPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict(images)`` -> faces as JSON-ready dicts.

    Args:
        landmarker: a :class:`facelandmarks.inference.FaceLandmarker`.
    """

    def __init__(self, landmarker: Any) -> None:
        self.landmarker = landmarker

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        """Faces of one photo or a list of photos.

        Args:
            model_input: an ``(H, W, 3) uint8`` RGB array, or a list of them.
            params: unused.
        Returns:
            one list of ``Face.to_dict()`` per photo (``box``, ``score``, ``landmarks`` in photo pixels).
        """
        images = [model_input] if isinstance(model_input, np.ndarray) and model_input.ndim == 3 else list(model_input)
        return [[f.to_dict() for f in faces] for faces in self.landmarker.predict([np.asarray(im) for im in images])]


def _load_pyfunc(data_path: str) -> LandmarkerPyfunc:
    """MLflow's loader hook: ``data_path`` is the registered checkpoint file."""
    from facelandmarks.inference import FaceLandmarker

    return LandmarkerPyfunc(FaceLandmarker.load(data_path))
