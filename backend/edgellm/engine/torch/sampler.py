"""Next-token choice from float32 logits: greedy argmax, or seeded temperature/top-k/top-p."""

from __future__ import annotations

import torch

from edgellm.engine.types import SamplingParams


class Sampler:
    def __init__(self, params: SamplingParams, device: torch.device) -> None:
        self.greedy = params.temperature == 0.0
        self.temperature = params.temperature
        self.top_k = params.top_k
        self.top_p = params.top_p
        self.generator: torch.Generator | None = None
        if not self.greedy:
            seed = params.seed if params.seed is not None else int(torch.seed())
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """logits: float32 [1, vocab] -> token id."""
        if self.greedy:
            # Same as generate's greedy search: argmax over the float32 logits.
            return int(torch.argmax(logits, dim=-1))
        # Shifted so the largest score is 0 before dividing: softmax is the same, and a
        # tiny temperature (1e-40 is valid) sends the others to -inf instead of the
        # top one to +inf, which made the probabilities NaN.
        scores = (logits - logits.max(dim=-1, keepdim=True).values) / self.temperature
        if self.top_k > 0:
            k = min(self.top_k, scores.shape[-1])
            kth = torch.topk(scores, k, dim=-1).values[..., -1, None]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            scores = _top_p(scores, self.top_p)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p."""
    sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
    cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
    remove = cumulative > top_p
    # Shift right so the token that crosses top_p stays; the top token always stays.
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    return scores.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
