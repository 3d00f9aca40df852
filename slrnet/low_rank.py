"""The cross-view low-rank module of SLRNet (Pan et al., IJCV 2022, Sec. 3.2).

Features of the two views of an image are concatenated along the token axis, X in R^{N x C}
(N = N1 + N2), and approximated by a rank-K factorisation X ≈ Cᵀ D with a dictionary
D in R^{K x C} (one atom per class, background included) and soft codes C in R^{K x N}. The
dictionary starts from class-weighted means of the features given by an auxiliary head, so the
atoms are class prototypes shared by both views; one (T = 1 in the paper) step of the
EM-like alternation

    C = softmax_K(D Xᵀ / τ)                          (codes, column-stochastic)
    D = l2norm(normalise_N(C) X)                      (code-weighted mean of the tokens)

is run, and the reconstruction relu(Cᵀ D) is added back through a linear layer with a residual
connection. Because both views are coded with the same atoms, consistency between their codes
and between their masks can be enforced (the collective matrix factorisation of the paper).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def init_dictionary(features: Tensor, class_logits: Tensor) -> Tensor:
    """Class prototypes: softmax-over-classes weighted means of the features over all positions.

    Args:
        features: (B, C, H, W) decoder features.
        class_logits: (B, K, H, W) logits of the auxiliary head (background included).

    Returns:
        (B, K, C) initial dictionary. The caller detaches it (the paper's initialisation is not
        trained through; the auxiliary head learns from its own losses).
    """
    b, c = features.shape[:2]
    k = class_logits.shape[1]
    weights = class_logits.reshape(b, k, -1).softmax(dim=1)                   # (B, K, N)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)            # mean over N
    return torch.bmm(weights, features.reshape(b, c, -1).transpose(1, 2))     # (B, K, C)


class LowRankOutput(NamedTuple):
    """Result of `LowRankReconstruction`.

    features: (B, N, C) refined tokens; codes: (B, K, N) soft assignments (sum to 1 over K);
    dictionary: (B, K, C) unit-norm atoms after the last update.
    """

    features: Tensor
    codes: Tensor
    dictionary: Tensor


class LowRankReconstruction(nn.Module):
    """Dictionary learning on tokens followed by a residual low-rank reconstruction.

    Args:
        channels: C, the token width (256 in the paper).
        num_iters: T, dictionary/code alternations (1 in the paper).
        temperature: τ of the code softmax (1.0 in the paper).
        eps: keeps the code normalisation over tokens finite when a class gets no mass.
    """

    def __init__(self, channels: int, num_iters: int = 1, temperature: float = 1.0,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if num_iters < 1:
            raise ValueError("num_iters must be >= 1")
        self.embed = nn.Linear(channels, channels)       # shared transform of tokens and atoms
        self.project = nn.Linear(channels, channels)     # maps the reconstruction back
        self.num_iters = num_iters
        self.temperature = temperature
        self.eps = eps

    def factorize(self, tokens: Tensor, dict_init: Tensor) -> tuple[Tensor, Tensor]:
        """Run the T alternations.

        Args:
            tokens: (B, N, C) raw tokens (both views concatenated during training).
            dict_init: (B, K, C) initial dictionary (`init_dictionary`).

        Returns:
            codes (B, K, N) from the last iteration and the updated dictionary (B, K, C). Their
            product codesᵀ·dictionary is the rank-<=K reconstruction of the embedded tokens.
        """
        x = self.embed(tokens)
        dictionary = F.normalize(self.embed(dict_init), dim=-1, eps=1e-6)
        codes = dictionary.new_empty(0)
        for _ in range(self.num_iters):
            logits = torch.einsum("bkc,bnc->bkn", dictionary, x) / self.temperature
            codes = logits.softmax(dim=1)
            weights = codes + self.eps
            weights = weights / weights.sum(dim=-1, keepdim=True)
            dictionary = F.normalize(torch.einsum("bkn,bnc->bkc", weights, x), dim=-1, eps=1e-6)
        return codes, dictionary

    def forward(self, tokens: Tensor, dict_init: Tensor) -> LowRankOutput:
        """tokens (B, N, C), dict_init (B, K, C) -> LowRankOutput (features (B, N, C), ...)."""
        codes, dictionary = self.factorize(tokens, dict_init)
        recon = F.relu(torch.einsum("bkn,bkc->bnc", codes, dictionary))
        out = F.relu(tokens + self.project(recon))
        return LowRankOutput(out, codes, dictionary)
