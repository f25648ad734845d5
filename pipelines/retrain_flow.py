"""Prefect flow ``retrain``: scheduled retraining (``facelandmarks schedule`` serves it).

Run once now, on Prefect's temporary server: ``python pipelines/retrain_flow.py``.
"""

from facelandmarks.flows.retrain import retrain

if __name__ == "__main__":
    retrain()
