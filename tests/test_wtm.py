"""Weight Transfer Module: identity start, Eq. 6 folding, and where gradients of Eq. 9 flow."""
import torch

from training.models import aspp_forward, build_model, fold_decoder, transferred_kernels
from training.optim import parameter_groups, sgd_param_groups


def tiny(**kw):
    torch.manual_seed(0)
    return build_model("deeplabv2-r18", 7, width=0.125, **kw)


def randomise_wtm(model, scale=0.05):
    with torch.no_grad():
        for wtm in (model.wtm1, model.wtm2):
            wtm.conv.weight.add_(torch.randn_like(wtm.conv.weight) * scale)


def test_wtm_identity_leaves_decoders_unchanged():
    m = tiny(wtm="both").eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 57, 71))
    assert torch.equal(y["low_t"], y["low"])
    assert torch.equal(y["high_t"], y["high"])


def test_folded_kernels_equal_einsum_of_wtm_and_kernels():
    m = tiny(wtm="both")
    randomise_wtm(m)
    for dec, wtm in ((m.dec1, m.wtm1), (m.dec2, m.wtm2)):
        for k, kt in zip(dec.kernels(), transferred_kernels(dec, wtm)):
            expected = torch.einsum("ck,okhw->ochw", wtm.matrix, k)
            torch.testing.assert_close(kt, expected, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(kt, k)


def test_plain_aspp_with_folded_kernels_reproduces_transferred_map():
    m = tiny(wtm="both").eval()
    randomise_wtm(m)
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        y = m(x)
        f1, f2 = m.encoder(x)
        folded = fold_decoder(m.dec2, m.wtm2)
        high_t = folded(f2)
        # A hand-written ASPP over the folded kernels (what an exporter would emit).
        manual = aspp_forward(f2, [c.weight for c in folded.branches], [c.bias for c in folded.branches],
                              folded.dilations)
    torch.testing.assert_close(high_t, y["high_t"], rtol=0, atol=1e-5)
    torch.testing.assert_close(manual, y["high_t"], rtol=0, atol=1e-5)
    assert (high_t - y["high"]).abs().max() > 1e-3  # the WTM really changed the decoder
    assert not any(p.requires_grad for p in folded.parameters())


def test_wtm_only_loss_reaches_wtm_encoder_and_kernels():
    m = tiny(wtm="both").train()
    y = m(torch.randn(1, 3, 48, 48))
    (y["low_t"].square().mean() + y["high_t"].square().mean()).backward()
    assert m.wtm1.conv.weight.grad.abs().sum() > 0 and m.wtm2.conv.weight.grad.abs().sum() > 0
    assert m.encoder.conv1.weight.grad.abs().sum() > 0
    assert m.dec2.branches[0].weight.grad.abs().sum() > 0


def test_wtm_kernel_grad_off_spares_original_kernels():
    m = tiny(wtm="both", wtm_kernel_grad=False).train()
    y = m(torch.randn(1, 3, 48, 48))
    y["high_t"].square().mean().backward()
    assert m.wtm2.conv.weight.grad.abs().sum() > 0
    assert m.dec2.branches[0].weight.grad is None
    assert m.dec2.branches[0].bias.grad.abs().sum() > 0  # biases are shared with Dec^T


def test_each_trainable_parameter_in_exactly_one_group():
    m = tiny(wtm="both")
    groups = parameter_groups(m)
    ids = [id(p) for ps in groups.values() for p in ps]
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert {id(p) for p in trainable} == set(ids)
    assert len(groups["wtm"]) == 2
    sgd = sgd_param_groups(m, lr=2.5e-4)
    assert [g["lr"] for g in sgd] == [2.5e-4, 2.5e-3]
    optimizer = torch.optim.SGD(sgd, lr=2.5e-4, momentum=0.9)  # torch rejects a parameter given twice
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable) - 2
