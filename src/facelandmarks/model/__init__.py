"""The landmark model: a timm backbone with a landmark head, its losses, input preprocessing and checkpoints.

* :mod:`facelandmarks.model.config`: :class:`ModelConfig`, everything needed to rebuild a network.
* :mod:`facelandmarks.model.heads`: coordinate regression and heatmap heads (``HEADS`` name table).
* :mod:`facelandmarks.model.codecs`: the heatmap codec (Gaussian target encoding, soft-argmax decoding).
* :mod:`facelandmarks.model.pretrained`: offline, sha256-pinned ImageNet initialisation of backbones.
* :mod:`facelandmarks.model.network`: :func:`build_model`, backbone + head -> ``(B, K, 2)`` crop pixels.
* :mod:`facelandmarks.model.losses`: L1, L2, Wing, Adaptive Wing, masked by point visibility (``LOSSES``).
* :mod:`facelandmarks.model.preprocess`: ``uint8`` RGB crops -> normalised float tensors.
* :mod:`facelandmarks.model.checkpoint`: save / load ``models/<stage>/model.pt``.
"""
