"""Generation with a key/value cache: the model's inference path.

Training never goes through here: `forward` stays the one path that training, probes and growth
use. `Generator` runs the same modules (the same weights, norms, MLPs and rotary tables) one new
token at a time, keeping each block's keys and values, so a token costs one position's work instead
of the whole window's. Past the context the window slides: the cache is rebuilt from the newest half
context of tokens (positions must stay within the rotary tables the model trained with).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import torch

from lagdsl.model.gpt import GPT
from lagdsl.model.layers.attention import LayerCache


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: `temperature` 0 is greedy (the most likely token); otherwise
    the logits are divided by `temperature` and cut to the `top_k` most likely tokens and to the
    smallest set whose probability reaches `top_p`, before a draw."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be 0 (greedy) or more")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")

    def choose(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The next token of each row of `logits` (B, vocab): (B, 1)."""
        if self.temperature == 0:
            return logits.argmax(-1, keepdim=True)
        # shifted so the likeliest is 0, then divided in float64: however small the temperature,
        # no entry overflows to nan (the likeliest stays 0, the rest go to -inf), so a temperature
        # too small for the arithmetic draws as greedy does, as its limit is
        logits = logits.double()
        logits = (logits - logits.amax(-1, keepdim=True)) / self.temperature
        if self.top_k is not None and self.top_k < logits.size(-1):
            kth = torch.topk(logits, self.top_k).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1:
            ordered, order = logits.sort(-1, descending=True)
            mass = ordered.softmax(-1).cumsum(-1)
            drop = mass - ordered.softmax(-1) >= self.top_p  # tokens wholly past the nucleus
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)


GREEDY = Sampling(temperature=0.0)


class Generator:
    """Continues token sequences with `model` (put in eval mode), keeping a key/value cache."""

    def __init__(self, model: GPT) -> None:
        self.model = model.eval()
        config = model.config
        self.context = config.context
        self.caches: list[LayerCache] = []
        self.length = 0

    def _reset(self, batch: int) -> None:
        config, weight = self.model.config, self.model.embed.weight
        shape = (batch, config.key_value_heads, config.context, config.head_size)
        self.caches = [LayerCache(weight.new_empty(shape), weight.new_empty(shape)) for _ in range(config.depth)]
        self.length = 0

    @torch.no_grad()
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) after `idx` (B, T), the tokens that follow those already cached."""
        model = self.model
        time = idx.shape[1]
        start, end = self.length, self.length + time
        if end > self.context:
            raise ValueError(f"{end} positions do not fit the context of {self.context}")
        x = model.embedded(idx, start)
        # (a scaling that reads the length, as transformers does with its cache)
        for i, (cos, sin) in enumerate(model.tables(end)):
            cache = self.caches[i]
            cache.start = start
            x = model.block(i)(x, cos[start:end], sin[start:end], cache=cache)
        self.length = end
        return model.logits(x[:, -1])

    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        """A new cache holding `idx` (B, T <= context); the logits after it."""
        self._reset(idx.size(0))
        return self.forward(idx)

    def stream(
        self,
        prompt: list[int],
        max_new_tokens: int,
        sampling: Sampling = GREEDY,
        generator: torch.Generator | None = None,
        stop: int | Collection[int] | None = None,
    ) -> Iterator[int]:
        """The tokens that follow `prompt` (at most its last `context`), one at a time, until
        `max_new_tokens` or a `stop` token (one id or several; the stop token is given too)."""
        stops = {stop} if isinstance(stop, int) else set(stop or ())
        if not prompt:
            raise ValueError("the prompt needs at least one token")
        device = self.model.embed.weight.device
        window = list(prompt[-self.context :])
        logits = self.prefill(torch.tensor([window], device=device))
        for _ in range(max_new_tokens):
            token = int(sampling.choose(logits, generator)[0, 0])
            yield token
            if token in stops:
                return
            window.append(token)
            if self.length == self.context:  # full: slide the window by half a context
                window = window[-max(1, self.context // 2) :]
                logits = self.prefill(torch.tensor([window], device=device))
            else:
                logits = self.forward(torch.tensor([[token]], device=device))
