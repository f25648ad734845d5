"""Baselines the product is compared with (``benchmarks/``): what users would pick instead.

* :mod:`facelandmarks.baselines.dlib68`: dlib's HOG face detector and 68-point shape predictor.
"""
