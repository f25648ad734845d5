"""dlib ``imglab`` XML landmark files.

The format of dlib's ``training_with_face_landmarks.xml`` and of its public
``ibug_300W_large_face_landmark_dataset`` (``labels_ibug_300W_train.xml`` and friends)::

    <dataset><images>
      <image file='path/relative/to/xml.jpg' width='500' height='375'>
        <box top='90' left='194' width='37' height='37' [ignore='1']>
          <part name='00' x='201' y='107'/> ...

Coordinates are integer, 0-based pixels (dlib's convention). A ``<part>`` that is absent marks a
point that is not annotated: it is returned with ``visible=False`` and placed at the box centre.
Boxes with ``ignore='1'`` are skipped.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelandmarks.io.pts import AnnotationError

__all__ = ["DlibFace", "read_dlib_xml"]


@dataclass
class DlibFace:
    """One annotated face of a dlib XML file.

    Attributes:
        image_path: absolute path of the photo (``file`` resolved against the XML's folder).
        image_width, image_height: from the XML when present, else ``None``.
        box: ``(4,) float32`` x0, y0, x1, y1 of dlib's face box (pixels).
        landmarks: ``(K, 2) float32`` 0-based pixels.
        visible: ``(K,) bool``, False for parts missing from the file.
    """

    image_path: Path
    image_width: int | None
    image_height: int | None
    box: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray


def read_dlib_xml(path: str | os.PathLike, num_points: int = 68) -> tuple[list[DlibFace], list[dict]]:
    """Read every face of a dlib imglab XML file.

    Args:
        path: the XML file.
        num_points: K, the number of points of the scheme (parts are named ``"00"``..``"K-1"``).
    Returns:
        ``(faces, problems)``: the faces read, and one ``{"file", "reason"}`` dict per box that was
        skipped (a part name out of range, or a box with no parts).
    Raises:
        AnnotationError: the file is not well-formed XML or has no ``<images>``.
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        raise AnnotationError(f"{p}: not well-formed XML ({e})") from e
    images = root.find("images")
    if images is None:
        raise AnnotationError(f"{p}: no <images> element (not a dlib imglab file)")
    faces: list[DlibFace] = []
    problems: list[dict] = []
    for image in images.findall("image"):
        file = image.get("file")
        if not file:
            problems.append({"file": str(p), "reason": "<image> without a file attribute"})
            continue
        img_path = (p.parent / file).resolve()
        width = int(image.get("width")) if image.get("width") else None
        height = int(image.get("height")) if image.get("height") else None
        for k, box in enumerate(image.findall("box")):
            where = f"{p}: {file} box {k}"
            if box.get("ignore") == "1":
                continue
            try:
                top, left = float(box.get("top")), float(box.get("left"))
                bw, bh = float(box.get("width")), float(box.get("height"))
            except (TypeError, ValueError):
                problems.append({"file": where, "reason": "box lacks numeric top/left/width/height"})
                continue
            x0, y0, x1, y1 = left, top, left + bw - 1, top + bh - 1
            pts = np.empty((num_points, 2), dtype=np.float32)
            pts[:] = ((x0 + x1) / 2, (y0 + y1) / 2)
            vis = np.zeros(num_points, dtype=bool)
            bad = None
            for part in box.findall("part"):
                try:
                    idx = int(part.get("name"))
                    x, y = float(part.get("x")), float(part.get("y"))
                except (TypeError, ValueError):
                    bad = f"part {part.get('name')!r} is not numeric"
                    break
                if not 0 <= idx < num_points:
                    bad = f"part index {idx} outside 0..{num_points - 1}"
                    break
                pts[idx] = (x, y)
                vis[idx] = True
            if bad is None and not vis.any():
                bad = "box has no parts"
            if bad is not None:
                problems.append({"file": where, "reason": bad})
                continue
            faces.append(
                DlibFace(img_path, width, height, np.array([x0, y0, x1, y1], np.float32), pts, vis)
            )
    return faces, problems
