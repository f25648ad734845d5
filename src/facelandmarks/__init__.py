"""facelandmarks: find every face in a photo or video and put 68 iBUG landmarks on it.

Trained, measured, registered and served by one reproducible pipeline (``dvc repro``).
"""

__version__ = "0.1.0"
