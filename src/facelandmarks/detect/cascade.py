"""The MTCNN cascade with vectorised resampling: facenet-pytorch's ``detect_face``, bit for bit, faster.

MTCNN (Zhang et al., IEEE SPL 2016) resamples the photo many times: once per image-pyramid level for the
P-net, and once per candidate box for the R-net (24x24) and the O-net (48x48). facenet-pytorch 2.5.3
(``facenet_pytorch.models.utils.detect_face.detect_face``) does each of those with
``torch.nn.functional.interpolate(mode="area")`` (adaptive average pooling), one call per box: about 350 calls
per photo at the project's low stage thresholds, 30 % of the detection time on the CPU.

:func:`area_resample` computes the same adaptive average pooling for many rectangles at once (the candidate
boxes, or the whole photo for a pyramid level) from one summed-area table of the photo. Its output is identical
to PyTorch's CPU kernel's, not merely close: the pixel sums are exact integers, the bins are PyTorch's (start
``floor(i * L / n)``, end ``ceil((i + 1) * L / n)``), and the mean is ``float32(sum) / kh / kw``, PyTorch's order.
:func:`detect_face` is facenet-pytorch's cascade with those resampling calls replaced; the networks, thresholds,
NMS and box regression are facenet-pytorch's own functions. The tests check equality with facenet-pytorch's
``MTCNN.detect`` on real photos (on the CPU; on a GPU facenet-pytorch pools with CUDA's kernel instead).

Exactness needs every bin's pixel sum below 2**24 (float32 integers): bins of fewer than 65 793 pixels, i.e.
boxes under about 6 000 pixels per side, far above any detection image (``crop.detector.max_side``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

__all__ = ["area_resample", "summed_area_table", "detect_face"]


def summed_area_table(images: np.ndarray) -> np.ndarray:
    """Summed-area table (integral image) of uint8 photos.

    Args:
        images: ``(N, H, W, C) uint8``.
    Returns:
        ``(N, H + 1, W + 1, C)`` int32 (``cv2.integral``; int64 when a photo's total could overflow int32) with
        ``T[n, y, x] = images[n, :y, :x].sum((0, 1))`` (a zero first row and column).
    """
    n, h, w, c = images.shape
    if h * w * 255 < 2**31:  # OpenCV's integral image, exact in int32
        return np.stack([cv2.integral(im, sdepth=cv2.CV_32S).reshape(h + 1, w + 1, c) for im in images])
    table = np.zeros((n, h + 1, w + 1, c), np.int64)
    np.cumsum(images, axis=1, dtype=np.int64, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    return table


def _bins(start: np.ndarray, length: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive-pooling bins of ``n`` cells over ``[start, start + length)``: ``(K, n) int64`` start and
    end (exclusive) indices (``aten/src/ATen/native/AdaptivePooling.h`` start_index / end_index)."""
    i = np.arange(n, dtype=np.int64)[None, :]
    length = length.astype(np.int64)[:, None]
    lo = (i * length) // n
    hi = -((-(i + 1) * length) // n)
    return start.astype(np.int64)[:, None] + lo, start.astype(np.int64)[:, None] + hi


def area_resample(table: np.ndarray, image: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray,
                  x1: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area-resample (adaptive average pooling) K rectangles of photos to ``out_h x out_w``, all at once.

    Equal, bit for bit, to ``torch.nn.functional.interpolate(photo[:, :, y0:y1, x0:x1], (out_h, out_w),
    mode="area")`` of each rectangle (float32, CPU), shrinking or enlarging (a box under 24 px: PyTorch's
    adaptive pooling bins then repeat pixels, and so do these).

    Args:
        table: :func:`summed_area_table` of the photos, ``(N, H + 1, W + 1, C)`` int32 or int64.
        image: ``(K,)`` the photo of each rectangle (index into ``table``).
        y0, y1, x0, x1: ``(K,)`` int rectangle rows ``[y0, y1)`` and columns ``[x0, x1)`` in photo pixels,
            non-empty and inside the photo.
        out_h, out_w: output size in pixels.
    Returns:
        ``(K, out_h, out_w, C) float32``: the mean grey level of each output cell (0..255).
    """
    r0, r1 = _bins(np.asarray(y0), np.asarray(y1) - np.asarray(y0), out_h)
    c0, c1 = _bins(np.asarray(x0), np.asarray(x1) - np.asarray(x0), out_w)
    n, th, tw, ch = table.shape
    flat = table.reshape(n * th * tw, ch)
    row = (np.asarray(image, np.int64)[:, None] * th)  # (K, 1): first table row of each rectangle's photo
    a, b = ((row + r0) * tw)[:, :, None], ((row + r1) * tw)[:, :, None]
    c, d = c0[:, None, :], c1[:, None, :]
    sums = flat.take(b + d, axis=0)  # (K, out_h, out_w, C): corner look-ups, one contiguous C-vector each
    sums -= flat.take(a + d, axis=0)
    sums -= flat.take(b + c, axis=0)
    sums += flat.take(a + c, axis=0)
    kh = (r1 - r0).astype(np.float32)[:, :, None, None]
    kw = (c1 - c0).astype(np.float32)[:, None, :, None]
    return sums.astype(np.float32) / kh / kw


def _box_inputs(table: np.ndarray, image_inds: torch.Tensor, boxes: torch.Tensor, w: int, h: int,
                size: int) -> torch.Tensor:
    """The R-net (24) or O-net (48) inputs of candidate boxes: facenet-pytorch's ``pad`` + per-box ``imresample``,
    normalised, as a contiguous ``(K, 3, size, size) float32`` tensor (the layout facenet-pytorch feeds)."""
    from facenet_pytorch.models.utils.detect_face import pad

    y, ey, x, ex = pad(boxes, w, h)
    keep = (ey > (y - 1)) & (ex > (x - 1))  # facenet-pytorch skips empty boxes the same way
    inds = image_inds.cpu().numpy()[keep]
    crops = area_resample(table, inds, y[keep] - 1, ey[keep], x[keep] - 1, ex[keep], size, size)
    data = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    return (data - 127.5) * 0.0078125


def detect_face(images: np.ndarray, minsize: int, pnet: torch.nn.Module, rnet: torch.nn.Module,
                onet: torch.nn.Module, threshold: list[float], factor: float, device: Any) -> tuple[np.ndarray, np.ndarray]:
    """facenet-pytorch 2.5.3's ``detect_face`` with vectorised resampling (same inputs, same outputs).

    Args:
        images: ``(N, H, W, 3) uint8`` RGB photos of one size.
        minsize: smallest face searched for, pixels.
        pnet, rnet, onet: facenet-pytorch's networks (``MTCNN.pnet`` ...).
        threshold: the three stage score thresholds.
        factor: image pyramid scale step.
        device: torch device of the networks.
    Returns:
        ``(batch_boxes, batch_points)``: object arrays of N entries, ``(n, 5) float32`` boxes (x0, y0, x1, y1,
        score) and ``(n, 5, 2) float32`` points, as facenet-pytorch returns them.
    Raises:
        ValueError: ``images`` is not ``(N, H, W, 3) uint8``.
    """
    from facenet_pytorch.models.utils.detect_face import (
        batched_nms, batched_nms_numpy, bbreg, fixed_batch_process, generateBoundingBox, rerec)

    images = np.ascontiguousarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"detect_face: expected (N, H, W, 3) uint8 photos, got {images.shape} {images.dtype}")
    table = summed_area_table(images)
    batch_size, h, w = images.shape[:3]
    model_dtype = next(pnet.parameters()).dtype
    m = 12.0 / minsize
    minl = min(h, w) * m
    scales = []
    scale_i = m
    while minl >= 12:
        scales.append(scale_i)
        scale_i *= factor
        minl *= factor

    every = np.arange(batch_size)
    full_y0, full_x0 = np.zeros(batch_size, np.int64), np.zeros(batch_size, np.int64)
    boxes_l, inds_l, picks = [], [], []
    offset = 0
    for scale in scales:  # first stage: P-net on each pyramid level (channels-last, as facenet-pytorch's)
        level = area_resample(table, every, full_y0, full_y0 + h, full_x0, full_x0 + w,
                              int(h * scale + 1), int(w * scale + 1))
        im_data = torch.from_numpy(level).to(device=device, dtype=model_dtype).permute(0, 3, 1, 2)
        im_data = (im_data - 127.5) * 0.0078125
        reg, probs = pnet(im_data)
        boxes_scale, inds_scale = generateBoundingBox(reg, probs[:, 1], scale, threshold[0])
        boxes_l.append(boxes_scale)
        inds_l.append(inds_scale)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], inds_scale, 0.5)
        picks.append(pick + offset)
        offset += boxes_scale.shape[0]
    boxes, image_inds = torch.cat(boxes_l, dim=0), torch.cat(inds_l, dim=0)
    scale_picks = torch.cat(picks, dim=0)
    boxes, image_inds = boxes[scale_picks], image_inds[scale_picks]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]]).permute(1, 0)
    boxes = rerec(boxes)

    if len(boxes) > 0:  # second stage: R-net on 24x24 crops
        out = fixed_batch_process(_box_inputs(table, image_inds, boxes, w, h, 24).to(device, model_dtype), rnet)
        out0, out1 = out[0].permute(1, 0), out[1].permute(1, 0)
        score = out1[1, :]
        ipass = score > threshold[1]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds = image_inds[ipass]
        mv = out0[:, ipass].permute(1, 0)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
        boxes = rerec(bbreg(boxes, mv))

    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes) > 0:  # third stage: O-net on 48x48 crops, points, final "Min" NMS
        out = fixed_batch_process(_box_inputs(table, image_inds, boxes, w, h, 48).to(device, model_dtype), onet)
        out0, out1, out2 = out[0].permute(1, 0), out[1].permute(1, 0), out[2].permute(1, 0)
        score = out2[1, :]
        ipass = score > threshold[2]
        points = out1[:, ipass]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds = image_inds[ipass]
        mv = out0[:, ipass].permute(1, 0)
        w_i = boxes[:, 2] - boxes[:, 0] + 1
        h_i = boxes[:, 3] - boxes[:, 1] + 1
        points_x = w_i.repeat(5, 1) * points[:5, :] + boxes[:, 0].repeat(5, 1) - 1
        points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
        points = torch.stack((points_x, points_y)).permute(2, 1, 0)
        boxes = bbreg(boxes, mv)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    boxes_np, points_np, inds_np = boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()
    batch_boxes = np.empty(batch_size, dtype=object)
    batch_points = np.empty(batch_size, dtype=object)
    for b in range(batch_size):
        sel = inds_np == b
        batch_boxes[b], batch_points[b] = boxes_np[sel].copy(), points_np[sel].copy()
    return batch_boxes, batch_points
