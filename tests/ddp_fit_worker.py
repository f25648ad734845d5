"""Helper script of tests/test_train_distributed.py: :func:`facelandmarks.train.loop.fit` on 24 real HELEN faces,
as one process or as each process of ``torchrun``, with BatchNorm in eval mode (running statistics), so that
data-parallel training is the same computation as one process up to float summation order.

Usage: ``python tests/ddp_fit_worker.py OUT_DIR`` or ``torchrun --nproc_per_node 2 tests/ddp_fit_worker.py OUT_DIR``.
Rank 0 writes ``OUT_DIR/result.json`` (per-epoch train loss and validation NME, world size) and ``OUT_DIR/weights.pt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from conftest import RAW, _landmark_box_crops

from facelandmarks.io.pts import read_pts
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import build_model
from facelandmarks.schemes import get_scheme
from facelandmarks.train.dataset import FaceDataset, OnlineAugment
from facelandmarks.train.distributed import process_group
from facelandmarks.train.loop import FitOptions, fit


def main(out: Path) -> None:
    torch.set_num_threads(1)
    with process_group("gloo", "cpu") as ctx:
        paths = sorted((RAW / "300w" / "helen_train").glob("*.pts"))[:24]
        faces = _landmark_box_crops((f"300w/helen/{p.stem}", p.with_suffix(".jpg"), read_pts(p)) for p in paths)
        train, val = faces.subset(slice(0, 16)), faces.subset(slice(16, 24))
        cfg = ModelConfig(backbone="mobilenetv3_small_050", pretrained=False, head="heatmap", head_channels=16,
                          num_points=68, scheme="ibug68", input_size=64, crop={"size": 64})
        torch.manual_seed(0)
        model = build_model(cfg)
        augment = OnlineAugment(flip=0.5, rotate_deg=10, scale=0.05, shift=0.03)
        result = fit(model, FaceDataset(train, get_scheme("ibug68"), augment, seed=0), val,
                     [{"params": list(model.parameters()), "lr": 3e-3}],
                     FitOptions(epochs=3, batch_size=8, warmup_epochs=0.5, device="cpu", progress=False, resume=False,
                                patience=0, seed=0),
                     out / "model.pt", out / "last.pt", train_mode=lambda m: m.eval())
        if ctx.is_main:
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "weights.pt")
            (out / "result.json").write_text(json.dumps({
                "world_size": ctx.world_size,
                "train_loss": [h.train_loss for h in result.history],
                "val_nme": [h.val_nme for h in result.history],
            }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
