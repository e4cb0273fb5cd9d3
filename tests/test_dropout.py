"""Dropout masks follow the global row: N ranks, each with its share of the rows, drop exactly the
units one process drops (once each rank drew from its own random stream)."""

from __future__ import annotations

import torch

from lagdsl.model.config import GPTConfig
from lagdsl.model.dropout import dropout, row_keys
from lagdsl.model.gpt import GPT
from lagdsl.runtime.data.batches import Shard

CPU = torch.device("cpu")


def model(kv_heads: int | None = None) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab=64, context=16, width=32, heads=4, depth=2, dropout=0.3)
    if kv_heads is not None:
        config = GPTConfig(vocab=64, context=16, width=32, heads=4, depth=2, dropout=0.3, kv_heads=kv_heads)
    return GPT(config).train()


def test_two_shares_of_a_batch_drop_what_the_whole_batch_drops() -> None:
    for net in (model(), model(kv_heads=2)):
        inputs = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
        whole, _ = net(inputs, None, row_keys(5, 17, 0, 0, 8, CPU))
        for index in range(2):
            first = index * 4
            assert first == _first_row(Shard(index, 2))
            part, _ = net(inputs[first : first + 4], None, row_keys(5, 17, 0, first, 4, CPU))
            torch.testing.assert_close(part, whole[first : first + 4], rtol=0, atol=1e-5)
        # and it does drop: another step's masks, and no dropout at all, give other outputs
        other, _ = net(inputs, None, row_keys(5, 18, 0, 0, 8, CPU))
        assert not torch.allclose(other, whole)
        net.eval()
        plain, _ = net(inputs, None, row_keys(5, 17, 0, 0, 8, CPU))
        assert not torch.allclose(plain, whole)


def _first_row(shard: Shard) -> int:
    import numpy as np

    from lagdsl.runtime.data.batches import Batches
    from lagdsl.runtime.data.corpus import Corpus

    tokens = np.zeros(100, dtype=np.uint16)
    corpus = Corpus(tokens, tokens, 64, "", "")
    return Batches(corpus, batch=8, context=16, seed=0, device=CPU, shard=shard).first_row()


def test_the_masks_drop_the_share_asked_and_keep_the_mean() -> None:
    x = torch.ones(64, 32, 32)
    keys = row_keys(0, 0, 0, 0, 64, CPU)
    out = dropout(x, 0.25, keys, site=0)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.01  # 65,536 draws
    assert abs(out.mean().item() - 1.0) < 0.02
    assert torch.equal(out, dropout(x, 0.25, keys, site=0))  # a function of its keys
    assert not torch.equal(out, dropout(x, 0.25, keys, site=1))
    rows = (out == 0).float()
    assert not torch.equal(rows[0], rows[1])  # rows are not copies of each other
