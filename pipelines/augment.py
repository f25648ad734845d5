"""DVC stage `augment`: training crops -> landmark-aware variants in data/processed/augmented(.parquet)."""

from facelandmarks.augment.stage import main

if __name__ == "__main__":
    main()
