"""Pre-training stage: CLIP/ConVIRT and GLoRIA MedVLP models on synthetic, real or mixed data.

``engine.train`` is the entry point (one process or torchrun); ``losses``, ``towers``, ``data``, ``sampling``,
``checkpoint``, ``distributed`` and ``logs`` each hold one piece of it. See docs/pretrain.md.
"""
