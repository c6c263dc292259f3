"""INP-Former's blocks (uad.nn.prototypes) against their definitions, written out here with explicit loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uad.nn.prototypes import PrototypeAttention, PrototypeExtractor, PrototypeGuidedBlock, coherence_loss

DIM, HEADS = 16, 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_prototype_attention_is_relu_of_scaled_cosines_per_head_without_softmax():
    attn = PrototypeAttention(DIM, HEADS)
    with torch.no_grad():
        attn.scale.copy_(torch.tensor([0.5, 1.0, 2.0, -1.0]).view(HEADS, 1, 1))
    x, prototypes = torch.randn(2, 5, DIM), torch.randn(2, 3, DIM)
    q, (k, v) = attn.q(x), attn.kv(prototypes).chunk(2, dim=-1)  # kv: keys then values
    d = DIM // HEADS
    expected = torch.zeros(2, 5, DIM)
    for b in range(2):
        for h in range(HEADS):
            part = slice(h * d, (h + 1) * d)
            for i in range(5):
                for m in range(3):
                    cos = F.cosine_similarity(q[b, i, part], k[b, m, part], dim=0)
                    expected[b, i, part] += max(attn.scale[h].item() * cos.item(), 0.0) * v[b, m, part]
    torch.testing.assert_close(attn(x, prototypes), attn.proj(expected), rtol=1e-5, atol=1e-6)


def test_guided_block_has_no_residual_path_around_its_attention():
    """With the attention's output projection zeroed, every token leaves the block as the same vector
    (MLP(LN(0))): nothing of the input token passes around the attention."""
    block = PrototypeGuidedBlock(DIM, HEADS)
    with torch.no_grad():
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
    out = block(torch.randn(2, 7, DIM), torch.randn(2, 3, DIM))
    torch.testing.assert_close(out, out[:1, :1].expand_as(out))


def test_extractor_gives_each_image_its_own_prototypes_from_its_set_of_tokens():
    extractor = PrototypeExtractor(DIM, num_prototypes=6, num_heads=HEADS)
    tokens = torch.randn(3, 10, DIM)
    prototypes = extractor(tokens)
    assert prototypes.shape == (3, 6, DIM)
    # image 1 alone, and with its tokens shuffled, gives the same prototypes: they depend on that image only,
    # and on its tokens as a set
    torch.testing.assert_close(extractor(tokens[1:2]), prototypes[1:2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        extractor(tokens[1:2, torch.randperm(10)]), prototypes[1:2], rtol=1e-5, atol=1e-6
    )
    # the definition: queries + softmax cross-attention over LN(tokens) (one LN for both), then + MLP(LN)
    norm = extractor.norm1
    queries = extractor.tokens[None].expand(3, -1, -1)
    q = extractor.attn.q(norm(queries)).unflatten(-1, (HEADS, -1)).transpose(1, 2)
    k, v = (
        part.unflatten(-1, (HEADS, -1)).transpose(1, 2)
        for part in extractor.attn.kv(norm(tokens)).chunk(2, dim=-1)
    )
    weights = (q @ k.transpose(-2, -1) / (DIM // HEADS) ** 0.5).softmax(-1)
    x = queries + extractor.attn.proj((weights @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(prototypes, x + extractor.mlp(extractor.norm2(x)), rtol=1e-5, atol=1e-6)


def test_coherence_is_the_mean_distance_to_the_nearest_prototype():
    tokens, prototypes = torch.randn(2, 9, DIM), torch.randn(2, 4, DIM)
    tokens[0, 3] = 2.5 * prototypes[0, 2]  # on a prototype's ray: distance 0
    loss, distance = coherence_loss(tokens, prototypes)
    expected = torch.stack(
        [
            torch.stack([min(1 - F.cosine_similarity(t, p, dim=0) for p in prototypes[b]) for t in tokens[b]])
            for b in range(2)
        ]
    )
    torch.testing.assert_close(distance, expected, rtol=1e-5, atol=1e-6)
    assert distance[0, 3].item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(expected.mean().item(), rel=1e-6)
