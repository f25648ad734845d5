"""Prefect flows: scheduled retraining (:func:`facelandmarks.flows.retrain.retrain`).

``facelandmarks schedule`` serves the flow on a cron or interval schedule against a Prefect server.
"""
