"""Model families: per-backbone input formatting + pooling + normalisation, each registered in ``FAMILIES``.

* ``qwen2vl``: GME and VLM2Vec (Qwen2-VL / Qwen2.5-VL, last-token pooling);
* ``rematch``: ReMatch-style K learnable tokens, mean of their last-layer states;
* ``mmembed``: MM-Embed (LLaVA-Next + bidirectional Mistral + latent attention).

CLIP and SigLIP live in :mod:`omniret.encoders.dual`. Importing a module registers its families and its known
checkpoints; ``omniret.encoders._BUILTIN_MODULES`` lists them so ``load_encoder`` finds them lazily.
"""
