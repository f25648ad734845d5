"""DVC stage `download`: the data sets named in params.yaml -> data/interim/annotations.parquet."""

from facelandmarks.data.stage import main

if __name__ == "__main__":
    main()
