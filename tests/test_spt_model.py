"""SPTModel on its own: parameter counts, step-0 equivalence with SAM, gradients, the relation."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from spt.model import SPTConfig, build_spt, trainable_parameter_count_of
from spt.model.lora import LoRAFusedQKV, LoRALinear
from spt.model.relation import visual_relation
from spt.model.vra import RelationAdapter
from spt.sam import build_sam

BOX = torch.tensor([[20.0, 30.0, 90.0, 100.0]])
POINTS = (torch.tensor([[[30.0, 40.0], [70.0, 80.0]]]), torch.tensor([[1.0, 0.0]]))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255


def randomise_trainables(model, seed: int = 0, std: float = 0.2) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in model.named_trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)


# ---- parameter counts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "expected"), [("vit_b", 390_144), ("vit_l", 881_664), ("vit_h", 1_405_952)]
)
def test_trainable_counts_at_r8(backbone, expected):
    assert trainable_parameter_count_of(backbone) == expected


def test_vit_b_built_for_real_counts_390144():
    """The meta-device count is the count of a real model (vit_b, random init, on CPU)."""
    model = build_spt("vit_b")
    assert model.trainable_parameter_count() == 390_144
    lora_and_gamma = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, LoRALinear | LoRAFusedQKV | RelationAdapter)
        for p in m.parameters(recurse=False)
    )
    assert lora_and_gamma == 390_144


def test_count_follows_rank():
    # Every LoRA matrix scales with r; the gammas (2 decoders x 2 blocks x 32) do not.
    r4, r8 = (trainable_parameter_count_of("tiny", SPTConfig(lora_rank=r)) for r in (4, 8))
    assert r8 - 128 == 2 * (r4 - 128)


# ---- step-0 equivalence -----------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["box", "points"])
def test_step0_is_sam_run_twice(image, prompt):
    """With LoRA B = 0 and gamma = 0 the draft is SAM's single-mask output, and the final mask
    is SAM's output with the draft as mask prompt."""
    sam = build_sam("tiny", seed=3)
    spt = build_spt("tiny", seed=3)
    prompts = (
        {"points": None, "boxes": BOX} if prompt == "box" else {"points": POINTS, "boxes": None}
    )
    with torch.no_grad():
        out = spt(spt.preprocess(image)[None], **prompts)
        embedding = sam.image_encoder(sam.preprocess(image)[None])
        sparse, dense = sam.prompt_encoder(masks=None, **prompts)
        pe = sam.prompt_encoder.get_dense_pe()
        sam_draft, sam_iou = sam.mask_decoder(embedding, pe, sparse, dense, False)
        _, dense_from_draft = sam.prompt_encoder(masks=sam_draft, **prompts)
        sam_final, _ = sam.mask_decoder(embedding, pe, sparse, dense_from_draft, False)
    torch.testing.assert_close(out.draft_logits, sam_draft, rtol=0, atol=0)
    torch.testing.assert_close(out.iou_predictions, sam_iou, rtol=0, atol=0)
    torch.testing.assert_close(out.final_logits, sam_final, rtol=0, atol=0)
    # Once the adapters carry weights, SPT leaves SAM: the comparison above can fail.
    randomise_trainables(spt)
    with torch.no_grad():
        moved = spt(spt.preprocess(image)[None], **prompts)
    assert (moved.draft_logits - sam_draft).abs().max() > 1e-2


# ---- trainable set and gradients --------------------------------------------------------------


def test_only_lora_and_gamma_are_trainable_and_get_gradients(image):
    model = build_spt("tiny", SPTConfig(lora_rank=4), seed=1)
    randomise_trainables(model)  # B = 0 would give A no gradient
    names = {n for n, _ in model.named_trainable_parameters()}
    assert names and all(
        n.rsplit(".", 1)[1].startswith(("lora_A", "lora_B", "gamma")) for n in names
    )
    assert all(".base." not in n for n in names)
    out = model(model.preprocess(image)[None], boxes=BOX)
    (out.draft_logits.sum() + out.final_logits.sum() + out.iou_predictions.sum()).backward()
    for name, param in model.named_parameters():
        if name in names:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def draft_decoder_lora_grads(detach_draft: bool, image) -> list[torch.Tensor | None]:
    model = build_spt("tiny", SPTConfig(lora_rank=4, detach_draft=detach_draft), seed=1)
    randomise_trainables(model)
    out = model(model.preprocess(image)[None], boxes=BOX)
    out.final_logits.sum().backward()
    return [p.grad for n, p in model.named_trainable_parameters() if n.startswith("draft_decoder.")]


def test_detach_draft_stops_the_final_loss_reaching_the_draft_decoder(image):
    assert all(g is None for g in draft_decoder_lora_grads(True, image))
    attached = draft_decoder_lora_grads(False, image)
    assert all(g is not None for g in attached) and sum(g.abs().sum() for g in attached) > 0


@pytest.mark.parametrize("detach", [False, True])
def test_detach_relation_for_draft(detach, image):
    model = build_spt("tiny", SPTConfig(detach_relation_for_draft=detach), seed=1)
    randomise_trainables(model)
    with torch.no_grad():
        embedding, relation = model.encode(model.preprocess(image)[None])
    relation.requires_grad_(True)
    sparse, dense = model.prompt_encoder(points=None, boxes=BOX, masks=None)
    out = model.decode_embedded(embedding, relation, sparse, dense)
    out.draft_logits.sum().backward()
    assert (relation.grad is None) == detach


# ---- the relation -----------------------------------------------------------------------------


def naive_relation(tokens: torch.Tensor, threshold: float) -> torch.Tensor:
    """Entry by entry, in float64, straight from the definition in METHOD.md."""
    t = tokens[0].double()
    n = t.shape[0]
    unit = [t[i] / (float(t[i].norm()) + 1e-16) for i in range(n)]
    s = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        row = [float(unit[i] @ unit[j]) if j != i else -1e16 for j in range(n)]
        top = max(row)
        exps = [torch.exp(torch.tensor(v - top, dtype=torch.float64)) for v in row]
        total = sum(exps)
        for j in range(n):
            s[i, j] = exps[j] / total
    if threshold:
        s = torch.tensor(
            [[v if v > threshold / n else 0.0 for v in row] for row in s.tolist()],
            dtype=torch.float64,
        )
        for j in range(n):
            column = sum(s[i, j] for i in range(n))
            for i in range(n):
                s[i, j] = s[i, j] / (column if column != 0 else 1.0)
    return s[None]


@pytest.mark.parametrize("threshold", [0.0, 1.0, 5.0])
def test_relation_against_naive_definition(threshold):
    tokens = torch.randn(1, 7, 5, generator=torch.Generator().manual_seed(int(threshold)))
    got = visual_relation(tokens, threshold)
    want = naive_relation(tokens, threshold)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)
    assert torch.all(got.diagonal(dim1=-2, dim2=-1) == 0)
    if threshold == 0:
        torch.testing.assert_close(got.sum(-1), torch.ones(1, 7))
    else:
        column_sums = got.sum(-2)
        # Columns sum to 1, or stay all-zero when nothing passes the threshold (no NaN).
        assert torch.all(torch.isclose(column_sums, torch.ones(1)) | (column_sums == 0))
        assert not torch.isnan(got).any()
    if threshold == 5.0:
        assert (got.sum(-2) == 0).any(), "the test should cover a column with nothing kept"


def test_relation_of_a_batch_is_per_image():
    tokens = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0))
    batched = visual_relation(tokens, 1.0)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], visual_relation(tokens[i : i + 1], 1.0))


# ---- relation adapters and LoRA layers -------------------------------------------------------


def test_relation_blocks_are_selectable():
    model = build_spt("tiny", SPTConfig(relation_blocks=(1,)))
    for decoder in (model.draft_decoder, model.final_decoder):
        layers = decoder.transformer.layers
        assert not hasattr(layers[0], "relation_adapter") and hasattr(layers[1], "relation_adapter")
        assert not any(
            isinstance(m, RelationAdapter)
            for m in decoder.transformer.final_attn_token_to_image.modules()
        )
    with pytest.raises(ValueError, match="not -1"):
        build_spt("tiny", SPTConfig(relation_blocks=(-1,)))


def test_gamma_init_option():
    model = build_spt("tiny", SPTConfig(gamma_init=0.5))
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 4 and all(torch.all(g == 0.5) for g in gammas)


def test_decoder_outside_a_relation_context_refuses_to_run(image):
    model = build_spt("tiny")
    embedding, _ = model.encode(model.preprocess(image)[None])
    sparse, dense = model.prompt_encoder(points=None, boxes=BOX, masks=None)
    with pytest.raises(RuntimeError, match="without a relation"):
        model.draft_decoder(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, False)


def test_deepcopy_binds_hooks_to_the_copy(image):
    model = build_spt("tiny", seed=1)
    randomise_trainables(model)
    twin = copy.deepcopy(model)
    x = model.preprocess(image)[None]
    with torch.no_grad():
        before = model(x, boxes=BOX).draft_logits
        for block in twin.draft_decoder.transformer.layers:
            block.relation_adapter.gamma.mul_(10)
        assert torch.equal(model(x, boxes=BOX).draft_logits, before)
        assert (twin(x, boxes=BOX).draft_logits - before).abs().max() > 1e-3


def test_lora_linear_equals_its_merged_weight():
    base = torch.nn.Linear(6, 5)
    layer = LoRALinear(base, r=2, lora_alpha=3.0)
    torch.testing.assert_close(layer(torch.ones(1, 6)), base(torch.ones(1, 6)), rtol=0, atol=0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), x @ layer.merged_weight().T + base.bias, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.delta_weight(), layer.lora_B @ layer.lora_A * 1.5)


def test_fused_qkv_lora_leaves_k_untouched():
    base = torch.nn.Linear(8, 24)
    layer = LoRAFusedQKV(base, r=2)
    with torch.no_grad():
        for p in (layer.lora_B_q, layer.lora_B_v):
            p.normal_()
    x = torch.randn(3, 8)
    out, plain = layer(x), base(x)
    assert torch.equal(out[:, 8:16], plain[:, 8:16])
    assert (out[:, :8] - plain[:, :8]).abs().max() > 1e-3
    assert (out[:, 16:] - plain[:, 16:]).abs().max() > 1e-3
    torch.testing.assert_close(out, x @ layer.merged_weight().T + base.bias, atol=1e-6, rtol=0)
    assert torch.all(layer.delta_weight()[8:16] == 0)


def test_lora_dropout_only_touches_the_update():
    layer = LoRALinear(torch.nn.Linear(16, 4), r=2, dropout=0.5).train()
    x = torch.randn(64, 16)
    assert torch.equal(layer(x), layer.base(x))  # B = 0: dropout cannot show
    with torch.no_grad():
        layer.lora_B.normal_()
    outputs = [layer(x) for _ in range(2)]
    assert not torch.equal(*outputs)
    layer.eval()
    assert torch.equal(*(layer(x) for _ in itertools.repeat(None, 2)))
