"""DVC stage `finetune`: models/pretrain + augmented InfAnFace crops -> models/finetune/model.pt + reports/finetune.json."""

from facelandmarks.train.finetune_stage import main

if __name__ == "__main__":
    main()
