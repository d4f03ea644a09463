"""Training objectives: embeddings (and masks/labels) in, scalar out. No model code here."""

from omniret.losses.contrastive import InfoNCE
from omniret.losses.distributed import gather_with_grad, world
from omniret.losses.orthogonal import orthogonal_loss

__all__ = ["InfoNCE", "orthogonal_loss", "gather_with_grad", "world"]
