"""Training: data sets of crops with online augmentation, the fit loop (warm-up + cosine AdamW, early
stopping, best checkpoint by validation NME, resume) and the ``pretrain`` / ``finetune`` stages.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: torch's
OpenMP threads then sleep instead of spinning while they wait. On a machine whose cores are busy with other
work this is worth several times the training speed (measured on 2 shared cores: 4 -> 60 images/s); it only
takes effect when torch is imported after this package (as in the ``pipelines/`` entry points).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
