"""DVC stage `pretrain`: augmented 300-W crops -> models/pretrain/model.pt + reports/pretrain.json (MLflow child run)."""

from facelandmarks.train.distributed import stage_entry
from facelandmarks.train.pretrain_stage import main

if __name__ == "__main__":
    stage_entry(main, __file__)  # under torchrun when train.distributed.nproc_per_node > 1
