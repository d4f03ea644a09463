"""Training objectives: embeddings (and masks/labels) in, scalar out; composed by config from named terms
(:mod:`omniret.losses.terms`). No model code here."""

from omniret.losses.contrastive import InfoNCE
from omniret.losses.distributed import gather_with_grad, world
from omniret.losses.orthogonal import orthogonal_loss
from omniret.losses.terms import LOSS_TERMS, CompositeLoss, LossInputs, LossTerm, build_loss

__all__ = ["InfoNCE", "orthogonal_loss", "gather_with_grad", "world", "LOSS_TERMS", "LossTerm", "LossInputs",
           "CompositeLoss", "build_loss"]
