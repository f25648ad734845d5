"""Is there still a face in a track's box? MTCNN's O-net as a per-frame check between detector runs.

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks",
IEEE SPL 2016) ends with the O-net, a face / non-face classifier on 48 x 48 crops of candidate boxes. A
tracker that carries boxes from frame to frame without the detector can ask the same network about its
own boxes: about 0.5 ms per face on one CPU thread, against ~75 ms for a detector pass on a 640 x 360
frame. The weights are facenet-pytorch's (inside its wheel, as for :mod:`facelandmarks.detect.mtcnn`), and
the crop is cut as MTCNN's third stage cuts it: the box squared about its centre, black beyond the image,
48 x 48 (here with the crop stage's own :func:`~facelandmarks.crop.geometry.crop_square`: bilinear, Gaussian
low-pass before shrinking), pixels scaled by ``(v - 127.5) / 128``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from facelandmarks.crop.geometry import crop_square, square_box
from facelandmarks.device import resolve_device

__all__ = ["FaceVerifier"]

_SIZE = 48  # the O-net's input side (MTCNN's third stage)


class FaceVerifier:
    """MTCNN's O-net on given boxes: the probability that each holds a face.

    Args:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
    Example:
        >>> FaceVerifier().face_scores(frame, boxes)   # frame (H, W, 3) uint8 RGB, boxes (n, 4) -> (n,) float32
    """

    def __init__(self, device: str = "auto") -> None:
        from importlib.resources import files

        from facenet_pytorch.models.mtcnn import ONet

        self.device = resolve_device(device)
        self._onet = ONet(pretrained=False)
        weights = files("facenet_pytorch") / "data" / "onet.pt"  # the file MTCNN(pretrained) loads, tensors only
        self._onet.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
        self._onet.eval().to(self.device)
        if self.device == "cpu":  # channels-last: 2.3x faster on the CPU (0.59 vs 1.34 ms per crop, one thread)
            self._onet.to(memory_format=torch.channels_last)

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def shared(device: str = "cpu") -> "FaceVerifier":
        """One verifier per device for the whole process (the service makes a tracker per request; inference
        on one network from several threads is safe: nothing in it changes)."""
        return FaceVerifier(device)

    def face_scores(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Face probabilities of boxes in one image.

        Args:
            image: ``(H, W, 3) uint8`` RGB.
            boxes: ``(n, 4)`` x0, y0, x1, y1 in image pixels (any aspect: squared about the centre on the
                longer side, as MTCNN squares its candidates).
        Returns:
            ``(n,) float32`` in [0, 1]; 0 for a degenerate box (side under 2 px, not finite) or one wholly
            outside the image.
        Raises:
            ValueError: an image that is not ``(H, W, 3) uint8``.
        """
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"FaceVerifier: expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.zeros(len(b), np.float32)
        h, w = img.shape[:2]
        patches, idx = [], []
        for i, box in enumerate(b):
            x0, y0, x1, y1 = box
            if not np.all(np.isfinite(box)) or max(x1 - x0, y1 - y0) < 2 or x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                continue
            patch, _ = crop_square(img, square_box(box, 1.0), _SIZE, border_value=0, anti_alias=True)
            patches.append(patch)
            idx.append(i)
        if patches:
            x = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float().sub_(127.5).mul_(0.0078125)
            if self.device == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                prob = self._onet(x.to(self.device))[2][:, 1]
            out[idx] = prob.float().cpu().numpy()
        return out
