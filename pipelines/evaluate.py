"""DVC stage ``evaluate``: NME, failure rate, AUC and CED of the trained models (see facelandmarks.evaluate.stage)."""

from facelandmarks.evaluate.stage import main

if __name__ == "__main__":
    main()
