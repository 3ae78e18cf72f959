"""A synthvlp CLIP checkpoint's text tower as a transformers ``CLIPTextModel`` and ``CLIPTokenizer``, so a diffusion
renderer can read captions with the text encoder a synthvlp pre-training run learned.

Why convert instead of wrapping the open_clip module: open_clip's own text transformer (token and position
embeddings, pre-LN blocks with causal self-attention, a final LayerNorm) is the architecture of transformers'
``CLIPTextModel``, and its BPE tokenizer is the one ``CLIPTokenizer`` implements. Converted, the pipeline folder
``synthvlp render train`` writes has the Stable Diffusion layout (``text_encoder/`` + ``tokenizer/``), loads with
``from_pretrained`` and needs no code of ours or pickled modules; a wrapper would need a custom class the
loader must import. Stable Diffusion 2 converted OpenCLIP's tower the same way, down to padding with token 0
(``!``) as open_clip does. The renderer reads the final LayerNorm's hidden states, what CLIP pools its
end-of-text token from, not the projected embedding.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from synthvlp.errors import UserError

HF_SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
"""open_clip's names of the start and end tokens -> CLIPTokenizer's (same ids)."""


def load_clip_text(path: Path):
    """(CLIPTokenizer, CLIPTextModel) of the CLIP checkpoint at ``path`` (``pretrain/checkpoint.pt``)."""
    from synthvlp.checkpoints import ClipCheckpoint, load
    from synthvlp.models import clip_from_checkpoint

    clip, _, tokenizer = clip_from_checkpoint(load(path, ClipCheckpoint))
    tower = _text_tower(clip, path)
    return _tokenizer(tokenizer, tower.positional_embedding.shape[0], path), _text_model(tower, path)


def _text_tower(clip, path: Path):
    """The module holding open_clip's own text transformer, or a ``UserError`` saying why it cannot convert."""
    tower = clip if hasattr(clip, "token_embedding") else getattr(clip, "text", None)
    where = f"model.text_encoder = {path}"
    if tower is None or not all(hasattr(tower, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
        raise UserError(f"{where}: its text tower ({type(getattr(clip, 'text', clip)).__name__}) is not open_clip's own text transformer "
                        "(a Hugging Face tower, text_cfg.hf_model_name, does not convert); point model.text_encoder at a CLIP text model folder instead")
    mask = getattr(tower, "attn_mask", None)
    if mask is None or not torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1)):
        raise UserError(f"{where}: its text transformer is not causal (text_cfg.no_causal_mask); CLIPTextModel attends causally")
    for block in tower.transformer.resblocks:
        if not (isinstance(block.ls_1, torch.nn.Identity) and isinstance(block.ls_2, torch.nn.Identity)):
            raise UserError(f"{where}: its text transformer uses layer scale (text_cfg.ls_init_value), which CLIPTextModel lacks")
    return tower


def _text_model(tower, path: Path):
    """A ``CLIPTextModel`` with the tower's weights (q, k, v split out of open_clip's packed projection)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    blocks = tower.transformer.resblocks
    width, layers = tower.positional_embedding.shape[1], len(blocks)
    activation = type(blocks[0].mlp.gelu).__name__
    if activation not in ("GELU", "QuickGELU"):
        raise UserError(f"model.text_encoder = {path}: its text transformer's activation {activation} has no CLIPTextModel equivalent")
    config = CLIPTextConfig(
        vocab_size=tower.token_embedding.num_embeddings, hidden_size=width, intermediate_size=blocks[0].mlp.c_fc.out_features,
        num_hidden_layers=layers, num_attention_heads=blocks[0].attn.num_heads, max_position_embeddings=tower.positional_embedding.shape[0],
        hidden_act="quick_gelu" if activation == "QuickGELU" else "gelu", layer_norm_eps=tower.ln_final.eps,
        bos_token_id=tower.token_embedding.num_embeddings - 2, eos_token_id=tower.token_embedding.num_embeddings - 1, pad_token_id=0,
    )  # fmt: skip
    state = {
        "embeddings.token_embedding.weight": tower.token_embedding.weight,
        "embeddings.position_embedding.weight": tower.positional_embedding,
        "final_layer_norm.weight": tower.ln_final.weight,
        "final_layer_norm.bias": tower.ln_final.bias,
    }
    for i, block in enumerate(blocks):
        ours = f"encoder.layers.{i}"
        for name, tensor in zip(("q_proj", "k_proj", "v_proj"), block.attn.in_proj_weight.chunk(3), strict=True):
            state[f"{ours}.self_attn.{name}.weight"] = tensor
        for name, tensor in zip(("q_proj", "k_proj", "v_proj"), block.attn.in_proj_bias.chunk(3), strict=True):
            state[f"{ours}.self_attn.{name}.bias"] = tensor
        parts = {"self_attn.out_proj": block.attn.out_proj, "layer_norm1": block.ln_1, "layer_norm2": block.ln_2, "mlp.fc1": block.mlp.c_fc, "mlp.fc2": block.mlp.c_proj}
        for name, module in parts.items():
            state[f"{ours}.{name}.weight"], state[f"{ours}.{name}.bias"] = module.weight, module.bias
    model = CLIPTextModel(config)
    inner = getattr(model, "text_model", model)  # transformers < 5 nests the transformer one level down
    missing, unexpected = inner.load_state_dict({k: v.detach().clone().float() for k, v in state.items()}, strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise UserError(f"model.text_encoder = {path}: the text tower did not convert (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def _tokenizer(tokenizer, context_length: int, path: Path):
    """open_clip's ``SimpleTokenizer`` as a ``CLIPTokenizer`` with the same vocabulary, merges and length, padding
    with id 0 as open_clip does."""
    from transformers import CLIPTokenizer

    if not hasattr(tokenizer, "bpe_ranks") or not set(HF_SPECIAL) <= set(tokenizer.encoder):
        raise UserError(f"model.text_encoder = {path}: its tokenizer ({type(tokenizer).__name__}) is not open_clip's BPE tokenizer; it does not convert")
    vocab = {HF_SPECIAL.get(token, token): index for token, index in tokenizer.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    pad = next(token for token, index in vocab.items() if index == 0)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"), pad_token=pad, model_max_length=context_length,
                             split_special_tokens=True)  # "!" (the pad) in a report is text, as in open_clip
