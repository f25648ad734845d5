"""DVC stage `pretrain`: augmented 300-W crops -> models/pretrain/model.pt + reports/pretrain.json (MLflow child run)."""

from facelandmarks.train.pretrain_stage import main

if __name__ == "__main__":
    main()
