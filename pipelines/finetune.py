"""DVC stage `finetune`: models/pretrain + augmented InfAnFace crops -> models/finetune/model.pt + reports/finetune.json."""

from facelandmarks.train.distributed import stage_entry
from facelandmarks.train.finetune_stage import main

if __name__ == "__main__":
    stage_entry(main, __file__)  # under torchrun when train.distributed.nproc_per_node > 1
