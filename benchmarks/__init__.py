"""Benchmarks against what users would pick instead (dlib's 68-point predictor), in one run.

``python -m benchmarks.run`` (or ``make bench``) measures, on the same faces and the same machine:

* :mod:`benchmarks.accuracy`: NME (inter-ocular), failure rate and AUC of the champion and of dlib on the
  held-out test faces of both data sets, given the same face boxes;
* :mod:`benchmarks.speed`: landmark model per face at batch 1 and 32, end to end per video frame (MTCNN +
  landmarks vs dlib HOG + shape predictor), on the CPU (and the GPU when there is one);
* :mod:`benchmarks.serving_load`: requests per second and latency of ``bentoml serve`` under concurrent
  clients, adaptive batching on and off;
* :mod:`benchmarks.training_speed`: training images per second and the wall time of a full ``dvc repro``;

and :mod:`benchmarks.report` writes ``benchmarks/results.json``, ``benchmarks/results.md`` and the README's
results block.
"""
