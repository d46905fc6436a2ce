"""The shipped tiny preference extractor: a small multimodal transformer.

It reads a user the way PrefGen's multimodal LLM does: one token per reference image
(features from a **frozen copy** of the ``mini`` encoder's vision tower, plus a learned
"liked" or "disliked" marker), then question tokens (the question form, an attribute word
for yes/no questions, up to two candidate images), then a read-out token whose states the
answer heads and the probes read::

    [img+liked] ... [img+disliked] ... [mean liked] [mean disliked]
    [form] [attribute] [candidate A] [candidate B] [read]

The two mean tokens (the average features of each set, with their own markers) give the
model a direct path to "what the liked images share": without them, 300 training steps
left every answer at chance, while a linear probe on the two means already reads most
styles (docs/PREFGEN.md).

The transformer is a transformers ``LlamaModel`` (causal, so the last token has seen
everything, as in a decoder VLM) fed with ``inputs_embeds``; "layer i" is
``hidden_states[i]`` exactly as transformers returns it (0 = input embeddings, L = after
the last block *and* the final norm), the same convention as
:mod:`finexl.prefgen.vlm_features`, so probes and layer bands mean one thing for the tiny
and the real extractor.

Answers come from two heads on the final read-out state: one logit for the binary forms
(yes/no, A/B, +/-) and one logit per vocabulary attribute for the list forms.

The vision tower is frozen and never trained here; image features are computed once per
image and cached by the training code (:mod:`finexl.prefgen.features`), so VQA training
costs only the small transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# Question forms: the first four have a binary answer, the last two a list of attributes.
LIKES, DISLIKES, WHICH, SCORE, LIST_LIKED, LIST_DISLIKED = range(6)
FORMS = ("likes", "dislikes", "which", "score", "list_liked", "list_disliked")
BINARY_FORMS = (LIKES, DISLIKES, WHICH, SCORE)
LIST_FORMS = (LIST_LIKED, LIST_DISLIKED)
# Token kinds (a learned embedding each) added to an image's projected features.
LIKED_IMAGE, DISLIKED_IMAGE, CANDIDATE_A, CANDIDATE_B, LIKED_MEAN, DISLIKED_MEAN = range(6)
QUESTION_TOKENS = 7  # liked mean, disliked mean, form, attribute, candidate A, B, read-out


@dataclass
class ExtractorOutput:
    """``states``: ``(batch, num_layers + 1, hidden)`` read-out states of every layer;
    ``binary``: ``(batch,)`` logit of "yes" / "A" / "+"; ``lists``: ``(batch, n_attributes)``."""

    states: torch.Tensor
    binary: torch.Tensor
    lists: torch.Tensor


class TinyPreferenceExtractor(ModelMixin, ConfigMixin):
    """Image-feature tokens + question tokens -> per-layer read-out states and answers.

    Parameters
    ----------
    feature_dim
        Width of one image's features (:class:`finexl.prefgen.features.ImageTower`).
    attributes
        The vocabulary the yes/no and list questions use (names, in order).
    hidden_size, num_layers, num_heads, intermediate_size
        The transformer's shape.
    """

    config_name = "extractor_config.json"

    @register_to_config
    def __init__(self, feature_dim: int, attributes: list[str], hidden_size: int = 128,
                 num_layers: int = 6, num_heads: int = 4, intermediate_size: int = 256) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaModel

        self.image_in = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden_size))
        self.kind = nn.Embedding(6, hidden_size)
        self.form = nn.Embedding(len(FORMS), hidden_size)
        self.attribute = nn.Embedding(len(attributes) + 1, hidden_size)  # last: no attribute
        self.empty = nn.Parameter(torch.zeros(2, hidden_size))  # absent candidate A / B
        self.read = nn.Parameter(torch.zeros(hidden_size))
        self.summary = nn.Sequential(nn.Linear(6 * hidden_size, hidden_size), nn.GELU(),
                                     nn.Linear(hidden_size, hidden_size))
        nn.init.normal_(self.empty, std=0.02)
        nn.init.normal_(self.read, std=0.02)
        self.transformer = LlamaModel(LlamaConfig(
            vocab_size=1, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads,
            num_key_value_heads=num_heads, max_position_embeddings=128, bos_token_id=None,
            eos_token_id=None, pad_token_id=None))
        self.binary_head = nn.Linear(hidden_size, 1)
        self.list_head = nn.Linear(hidden_size, len(attributes))

    @property
    def num_readable_layers(self) -> int:
        return self.config.num_layers + 1

    def embed(self, features: torch.Tensor, kinds: torch.Tensor, form: torch.Tensor,
              attribute: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """The input sequence ``(batch, n_images + QUESTION_TOKENS, hidden)``.

        ``features``: ``(b, n, feature_dim)``; ``kinds``: ``(b, n)`` of LIKED_IMAGE /
        DISLIKED_IMAGE; ``form``: ``(b,)``; ``attribute``: ``(b,)``, -1 for none;
        ``candidates``: ``(b, 2, feature_dim)`` with NaN rows for an absent candidate, or None.
        """
        batch = features.shape[0]
        context = self.image_in(features) + self.kind(kinds)
        means = []
        for kind, mean_kind in ((LIKED_IMAGE, LIKED_MEAN), (DISLIKED_IMAGE, DISLIKED_MEAN)):
            weight = (kinds == kind).float().unsqueeze(-1)
            mean = (features * weight).sum(1) / weight.sum(1).clamp_min(1.0)
            means.append(self.image_in(mean) + self.kind.weight[mean_kind])
        none = len(self.config.attributes)
        attribute_tokens = self.attribute(torch.where(attribute < 0, none, attribute))
        slots = []
        for slot, kind in ((0, CANDIDATE_A), (1, CANDIDATE_B)):
            empty = self.empty[slot].expand(batch, -1)
            if candidates is None:
                slots.append(empty)
                continue
            present = ~torch.isnan(candidates[:, slot]).any(dim=-1, keepdim=True)
            image = self.image_in(torch.nan_to_num(candidates[:, slot])) + self.kind.weight[kind]
            slots.append(torch.where(present, image, empty))
        # The read-out token starts as a summary of everything (both means, the question,
        # the candidates), so its residual stream can answer from layer 1 on; attention to
        # the single images refines it.
        read = self.read + self.summary(torch.cat([*means, self.form(form), attribute_tokens,
                                                   *slots], dim=-1))
        question = torch.stack([*means, self.form(form), attribute_tokens, *slots, read], dim=1)
        return torch.cat([context, question], dim=1)

    def forward(self, features: torch.Tensor, kinds: torch.Tensor, form: torch.Tensor,
                attribute: torch.Tensor, candidates: torch.Tensor | None = None
                ) -> ExtractorOutput:
        inputs = self.embed(features, kinds, form, attribute, candidates)
        out = self.transformer(inputs_embeds=inputs, output_hidden_states=True)
        states = torch.stack([h[:, -1] for h in out.hidden_states], dim=1)
        last = out.last_hidden_state[:, -1]
        return ExtractorOutput(states, self.binary_head(last).squeeze(-1), self.list_head(last))


def load_extractor(directory: str | Path) -> TinyPreferenceExtractor:
    """A saved extractor (``save_pretrained`` folder), in eval mode."""
    model = TinyPreferenceExtractor.from_pretrained(str(directory))
    return model.eval()


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()
