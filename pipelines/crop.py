"""DVC stage `crop`: data/interim/annotations.parquet -> MTCNN face crops + data/interim/crops.parquet."""

from facelandmarks.crop.stage import main

if __name__ == "__main__":
    main()
