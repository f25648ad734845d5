"""The BentoML service (:mod:`facelandmarks.serving.service`) and its settings."""
