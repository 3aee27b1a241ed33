"""Neighborhood attention: the index rule against NATTEN's kernels, the backends against a brute-force
definition and each other, the module against a hand computation, MAC counting, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from glocal.zoo.layers import neighborhood_attention as na
from glocal.zoo.layers.neighborhood_attention import NeighborhoodAttention2D, NeighborhoodAttentionError, na2d

pytestmark = pytest.mark.usefixtures("eager_flex_one_thread")


def _qkv(B: int, heads: int, H: int, W: int, D: int, kernel: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, heads, H, W, D, generator=g) for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=g)
    return q * D ** -0.5, k, v, rpb


# ------------------------------------------------------------------------------------- index rule

def _natten_window_start(i: int, L: int, k: int, d: int) -> int:
    """NATTEN <= 0.17 CUDA/CPU kernels' window start (natten_commons get_window_start), restated."""
    r = k // 2
    if d <= 1:
        return max(i - r, 0) + (L - i - r - 1 if i + r >= L else 0)
    if i - r * d < 0:
        return i % d
    if i + r * d >= L:
        whole = (L // d) * d
        rest = L - whole
        return L - rest + i % d - 2 * r * d if i % d < rest else whole + i % d - k * d
    return i - r * d


def _natten_pb_start(i: int, L: int, k: int, d: int) -> int:
    """NATTEN's RPB start (get_pb_start), restated."""
    r = k // 2
    if d <= 1:
        return r + (r - i if i < r else 0) + (L - i - 1 - r if i + r >= L else 0)
    if i - r * d < 0:
        return k - 1 - i // d
    if i + r * d >= L:
        return (L - i - 1) // d
    return r


@pytest.mark.parametrize("k,d", list(itertools.product((3, 5, 7), (1, 2, 3, 4))))
def test_axis_windows_equal_natten_index_rules(k: int, d: int) -> None:
    for L in range(k * d, k * d + 2 * d + 4):
        keys, offsets = na.axis_windows(L, k, d)
        for i in range(L):
            start, pb = _natten_window_start(i, L, k, d), _natten_pb_start(i, L, k, d)
            assert keys[i].tolist() == [start + j * d for j in range(k)], (L, i)
            assert offsets[i].tolist() == [pb + j for j in range(k)], (L, i)


# ------------------------------------------------------------------------------------- backends

def _brute_force(q, k, v, rpb, kernel: int, dilation: int) -> torch.Tensor:
    """The definition, one query at a time: clamped window inside the dilation group, softmax(qk + rpb) v."""
    B, heads, H, W, D = q.shape
    out = torch.zeros_like(v)

    def window(i: int, L: int) -> list[tuple[int, int]]:
        group, gi = i % dilation, i // dilation
        group_len = len(range(group, L, dilation))
        start = min(max(gi - kernel // 2, 0), group_len - kernel)
        return [((start + j) * dilation + group, start + j - gi + kernel - 1) for j in range(kernel)]

    for i in range(H):
        for j in range(W):
            pairs = [(a, b, oa, ob) for a, oa in window(i, H) for b, ob in window(j, W)]
            keys = torch.stack([k[:, :, a, b] for a, b, _, _ in pairs], 2)
            vals = torch.stack([v[:, :, a, b] for a, b, _, _ in pairs], 2)
            logits = (q[:, :, i, j, None] * keys).sum(-1)
            if rpb is not None:
                logits = logits + torch.stack([rpb[:, oa, ob] for _, _, oa, ob in pairs], 1)
            out[:, :, i, j] = (logits.softmax(-1)[..., None] * vals).sum(2)
    return out


@pytest.mark.parametrize("kernel,dilation,H,W", [(3, 2, 7, 9), (5, 1, 6, 5), (3, 3, 10, 11), (3, 1, 3, 4)])
def test_reference_equals_brute_force(kernel: int, dilation: int, H: int, W: int) -> None:
    q, k, v, rpb = _qkv(2, 2, H, W, 4, kernel, seed=H * W)
    ref = na2d(q, k, v, rpb, kernel, dilation, backend="reference")
    torch.testing.assert_close(ref, _brute_force(q, k, v, rpb, kernel, dilation), rtol=0, atol=1e-6)
    ref = na2d(q, k, v, None, kernel, dilation, backend="reference")
    torch.testing.assert_close(ref, _brute_force(q, k, v, None, kernel, dilation), rtol=0, atol=1e-6)


GRID = [(k, d, H, W) for k, d, (H, W) in itertools.product((3, 5, 7), (1, 2, 3), ((7, 9), (14, 10), (21, 21)))
        if min(H, W) >= k * d]  # smaller maps go through the module's padding: test_module_padding_grid


@pytest.mark.parametrize("kernel,dilation,H,W", GRID)
@pytest.mark.parametrize("backend", ["blocked", "flex"])
def test_backends_agree_with_reference(backend: str, kernel: int, dilation: int, H: int, W: int) -> None:
    q, k, v, rpb = _qkv(1, 2, H, W, 8, kernel, seed=kernel * 100 + dilation * 10 + H)
    ref = na2d(q, k, v, rpb, kernel, dilation, backend="reference")
    out = na2d(q, k, v, rpb, kernel, dilation, backend=backend)
    assert (out - ref).abs().max().item() < 1e-5


def test_blocked_tiling_chunking_and_batch_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, rpb = _qkv(2, 3, 23, 19, 8, 5, seed=3)  # maps wider than 2k: several tiles, a ragged last tile
    ref = na2d(q, k, v, rpb, 5, 1, backend="reference")
    for tile in (1, 2, 4, 7, 30):
        out = na.na2d_blocked(q, k, v, rpb, 5, 1, tile=tile)
        assert (out - ref).abs().max().item() < 1e-5, tile
    for chunk_bytes in (1, 100_000):  # one tile per chunk; 4 tiles per chunk (30 tiles: a ragged last one)
        monkeypatch.setattr(na, "BLOCKED_CHUNK_BYTES", chunk_bytes)
        assert (na.na2d_blocked(q, k, v, rpb, 5, 1) - ref).abs().max().item() < 1e-5, chunk_bytes
    monkeypatch.undo()
    no_bias = na2d(q, k, v, None, 5, 2, backend="reference")
    assert (na2d(q, k, v, None, 5, 2, backend="blocked") - no_bias).abs().max().item() < 1e-5
    assert (na2d(q, k, v, None, 5, 2, backend="flex") - no_bias).abs().max().item() < 1e-5


def test_blocked_gradients_equal_reference() -> None:
    q, k, v, rpb = _qkv(1, 2, 9, 10, 8, 3, seed=5)
    weights = torch.linspace(-1, 1, q.numel()).view_as(q)
    grads = {}
    for backend in ("reference", "blocked"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
        (na2d(*leaves[:3], leaves[3], 3, 2, backend=backend) * weights).sum().backward()
        grads[backend] = [t.grad for t in leaves]
    for got, want in zip(grads["blocked"], grads["reference"], strict=True):
        assert (got - want).abs().max().item() < 1e-5


def test_natten_backend_matches_reference_without_rpb() -> None:
    if not na.natten_supports(with_rpb=False):
        pytest.skip("natten is not installed")
    for kernel, dilation, H, W in [(3, 2, 7, 9), (7, 2, 14, 14), (3, 3, 13, 11)]:
        q, k, v, _ = _qkv(1, 2, H, W, 8, kernel, seed=H)
        ref = na2d(q, k, v, None, kernel, dilation, backend="reference")
        assert (na2d(q, k, v, None, kernel, dilation, backend="natten") - ref).abs().max().item() < 1e-5


@pytest.mark.slow
def test_flex_compiled_matches_reference() -> None:
    na.set_flex_compile(True)
    q, k, v, rpb = _qkv(1, 2, 14, 10, 16, 3, seed=9)
    out = na2d(q, k, v, rpb, 3, 3, backend="flex")
    assert na.flex_compile_enabled(), f"torch.compile(flex_attention) failed: {na._FLEX['failed']}"
    assert (out - na2d(q, k, v, rpb, 3, 3, backend="reference")).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------------- module

def test_module_state_dict_is_natten_layout() -> None:
    m = NeighborhoodAttention2D(32, 4, kernel_size=5, dilation=2)
    assert [(k, tuple(t.shape)) for k, t in m.state_dict().items()] == [
        ("rpb", (4, 9, 9)), ("qkv.weight", (96, 32)), ("qkv.bias", (96,)), ("proj.weight", (32, 32)),
        ("proj.bias", (32,))]
    assert list(NeighborhoodAttention2D(32, 4, rel_pos_bias=False, qkv_bias=False).state_dict()) == [
        "qkv.weight", "proj.weight", "proj.bias"]


def _by_hand(m: NeighborhoodAttention2D, x: torch.Tensor) -> torch.Tensor:
    """NATTEN <= 0.15's module written out: pad to k*d, qkv as [3, heads, head_dim], scaled q, NA, crop, proj."""
    B, H, W, C = x.shape
    win = m.kernel_size * m.dilation
    xp = F.pad(x, (0, 0, 0, max(0, win - W), 0, max(0, win - H)))
    Hp, Wp = xp.shape[1:3]
    qkv = (xp @ m.qkv.weight.T + m.qkv.bias).view(B, Hp, Wp, 3, m.num_heads, C // m.num_heads)
    q, k, v = (qkv[:, :, :, i].permute(0, 3, 1, 2, 4) for i in range(3))
    out = _brute_force(q * (C // m.num_heads) ** -0.5, k, v, m.rpb, m.kernel_size, m.dilation)
    out = out.permute(0, 2, 3, 1, 4).reshape(B, Hp, Wp, C)[:, :H, :W]
    return out @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("H,W,kernel,dilation", [(6, 7, 3, 2), (4, 5, 3, 2), (5, 5, 5, 1)])
def test_module_matches_hand_computation(H: int, W: int, kernel: int, dilation: int) -> None:
    torch.manual_seed(H * W)
    m = NeighborhoodAttention2D(16, 2, kernel_size=kernel, dilation=dilation).eval()
    with torch.no_grad():
        m.qkv.bias.normal_()  # padded tokens then carry non-zero keys/values, as in NATTEN
        x = torch.randn(2, H, W, 16)
        out = m(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, _by_hand(m, x), rtol=0, atol=1e-5)


PAD_GRID = [(k, d, H, W) for k, d, (H, W) in itertools.product((3, 5, 7), (1, 2, 3), ((7, 9), (14, 10), (21, 21)))
            if min(H, W) < k * d]


@pytest.mark.parametrize("kernel,dilation,H,W", PAD_GRID)
def test_module_padding_grid(kernel: int, dilation: int, H: int, W: int) -> None:
    torch.manual_seed(kernel + dilation)
    m = NeighborhoodAttention2D(16, 2, kernel_size=kernel, dilation=dilation, backend="reference").eval()
    x = torch.randn(1, H, W, 16)
    with torch.no_grad():
        ref = m(x)
        for backend in ("blocked", "flex"):
            m.core.backend = backend
            assert (m(x) - ref).abs().max().item() < 1e-5, backend


def test_module_backend_names_and_training_fallbacks() -> None:
    m = NeighborhoodAttention2D(16, 2, kernel_size=3, attn_drop=0.5, backend="flex")
    assert m.backend_for("cpu") == "blocked"  # training with attention dropout: flex cannot drop
    m.eval()
    assert m.backend_for("cpu") == "flex"
    with torch.no_grad():
        m(torch.randn(1, 5, 5, 16))
    assert m.core.last_backend == "flex"
    assert na.resolve_backend("auto", "cpu") == "blocked"


def test_auto_on_cuda_prefers_natten_when_it_supports_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(na, "natten_supports", lambda with_rpb=True: not with_rpb)
    assert na.resolve_backend("auto", "cuda", with_rpb=True) == "flex"
    assert na.resolve_backend("auto", "cuda", with_rpb=False) == "natten"
    assert na.resolve_backend("auto", "cpu", with_rpb=False) == "blocked"


def test_auto_runs_the_fastest_measured_candidate_and_caches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    na.set_auto_measure(True)  # clears the process-wide choices
    measured = []

    def fake_time(name: str, args: tuple) -> float:
        measured.append(name)
        return {"blocked": 2.0, "reference": 1.0}[name]

    monkeypatch.setattr(na, "_time_backend", fake_time)
    q, k, v, rpb = _qkv(1, 2, 8, 8, 4, 3)
    assert na.auto_candidates(q, v, 3, with_rpb=True) == ("blocked", "reference")
    assert na.auto_backend(q, k, v, rpb, 3, 1) == "reference"
    assert na.auto_backend(q, k, v, rpb, 3, 1) == "reference" and measured == ["blocked", "reference"]  # cached
    assert na.auto_backend(q, k, v, rpb, 3, 2) == "reference" and len(measured) == 4  # another signature
    core = na.NeighborhoodAttentionCore(3).eval()
    with torch.no_grad():
        out = core(q, k, v, rpb)
    assert core.last_backend == "reference" and len(measured) == 4
    torch.testing.assert_close(out, na2d(q, k, v, rpb, 3, 1, backend="blocked"), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(na, "REFERENCE_AUTO_MAX_BYTES", 0)  # the gather reference only where its gather is small
    assert na.auto_candidates(q, v, 3, with_rpb=True) == ("blocked",)
    na.set_auto_measure(False)  # the rule, no measuring
    assert na.auto_backend(q, k, v, rpb, 3, 1) == "blocked" and len(measured) == 4
    na.set_auto_measure(True)


def test_auto_applies_the_rule_where_nothing_can_be_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    na.set_auto_measure(True)
    monkeypatch.setattr(na, "_time_backend", lambda name, args: {"blocked": 2.0, "reference": 1.0}[name])
    q, k, v, rpb = _qkv(1, 2, 8, 8, 4, 3)
    with FlopCounterMode(display=False):
        assert na.auto_backend(q, k, v, rpb, 3, 1) == "blocked"  # a FLOP count: the rule, nothing cached
    assert na.auto_backend(q, k, v, rpb, 3, 1) == "reference"
    na.set_auto_measure(True)


def test_eager_flex_refuses_maps_whose_scores_cannot_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, rpb = _qkv(1, 2, 8, 8, 4, 3)
    monkeypatch.setattr(na, "EAGER_FLEX_MAX_BYTES", 2 * 2 * 64 * 64 * 4 - 1)  # one byte short of [1, 2, 64, 64] x2
    with pytest.raises(NeighborhoodAttentionError, match="would materialise"):
        na2d(q, k, v, rpb, 3, 1, backend="flex")
    monkeypatch.setattr(na, "EAGER_FLEX_MAX_BYTES", 2 * 2 * 64 * 64 * 4)
    assert (na2d(q, k, v, rpb, 3, 1, backend="flex") - na2d(q, k, v, rpb, 3, 1, backend="reference")).abs().max() < 1e-5


def test_flex_refuses_cpu_backward() -> None:
    q, k, v, rpb = _qkv(1, 1, 6, 6, 4, 3)
    with pytest.raises(NeighborhoodAttentionError, match="no backward on CPU"):
        na2d(q.requires_grad_(), k, v, rpb, 3, 1, backend="flex")


# ------------------------------------------------------------------------------------- MACs

@pytest.mark.parametrize("backend", ["blocked", "flex"])
def test_count_macs_uses_the_formula(backend: str) -> None:
    from glocal.benchmarks.compute import count_macs

    B, H, W, C, heads, kernel = 1, 9, 11, 32, 4, 3
    m = NeighborhoodAttention2D(C, heads, kernel_size=kernel, dilation=2, backend=backend).eval()
    r = count_macs(m, torch.randn(B, H, W, C))  # flex cannot run under FlopCounterMode: the core falls back
    linears = B * H * W * C * 3 * C + B * H * W * C * C
    attention = B * heads * H * W * kernel * kernel * 2 * (C // heads)
    assert r["formula_gmacs"] * 1e9 == pytest.approx(attention, abs=0.5)
    assert r["gmacs"] * 1e9 == pytest.approx(linears + attention, abs=0.5)
    assert na.na2d_macs((B, heads, H, W, C // heads), kernel) == attention


# ------------------------------------------------------------------------------------- errors

def test_bad_arguments_raise_one_clear_error() -> None:
    q, k, v, rpb = _qkv(1, 2, 8, 8, 4, 3)
    with pytest.raises(NeighborhoodAttentionError, match="odd"):
        na2d(q, k, v, None, 4, 1)
    with pytest.raises(NeighborhoodAttentionError, match="dilation"):
        na2d(q, k, v, None, 3, 0)
    with pytest.raises(NeighborhoodAttentionError, match="smaller than kernel_size"):
        na2d(q, k, v, rpb, 3, 3)
    with pytest.raises(NeighborhoodAttentionError, match="rpb must be"):
        na2d(q, k, v, rpb[:, :3, :3], 3, 1)
    with pytest.raises(NeighborhoodAttentionError, match=r"\[B, heads, H, W, D\]"):
        na2d(q[0], k[0], v[0], rpb, 3, 1)
    with pytest.raises(NeighborhoodAttentionError, match="unknown neighborhood-attention backend"):
        na2d(q, k, v, rpb, 3, 1, backend="cuda")
    with pytest.raises(NeighborhoodAttentionError, match="not divisible"):
        NeighborhoodAttention2D(30, 4)
    with pytest.raises(NeighborhoodAttentionError, match="channels-last"):
        NeighborhoodAttention2D(16, 2, kernel_size=3)(torch.randn(1, 16, 8, 8))
    assert issubclass(NeighborhoodAttentionError, ValueError)


def test_natten_backend_errors_clearly_when_it_cannot_run() -> None:
    q, k, v, rpb = _qkv(1, 2, 8, 8, 4, 3)
    if na.natten_available():
        if not na.natten_supports(with_rpb=True):
            with pytest.raises(NeighborhoodAttentionError, match="no relative positional bias"):
                na2d(q, k, v, rpb, 3, 1, backend="natten")
        else:
            pytest.skip("the installed natten supports RPB")
    else:
        with pytest.raises(NeighborhoodAttentionError, match="needs the natten package"):
            na2d(q, k, v, rpb, 3, 1, backend="natten")


def test_microbench_agreement_bound_scales_with_the_output():
    """One bf16 ulp of an output near 4-8 (2**-5) must count as agreement; fp32 stays strict."""
    from glocal.benchmarks.microbench.neighborhood_attention import agreement_bound

    big = torch.tensor([0.5, -6.0])
    assert agreement_bound(torch.bfloat16, big) == pytest.approx(0.18)
    assert agreement_bound(torch.bfloat16, big) > 2.0**-5
    assert agreement_bound(torch.bfloat16, torch.tensor([0.25])) == pytest.approx(3e-2)
    assert agreement_bound(torch.float32, big) == pytest.approx(6e-4)


@pytest.mark.parametrize("backend", ["blocked", "reference"])
def test_tables_first_made_in_inference_mode_serve_autograd(backend):
    """Cached index tables are never inference tensors: a first call under torch.inference_mode (an eval pass)
    must not break a later backward at the same map size."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 13, 17, 4, generator=g) for _ in range(3))
    rpb = torch.randn(2, 5, 5, generator=g)
    with torch.inference_mode():
        na2d(q, k, v, rpb, 3, 2, backend=backend)
    leaves = [t.clone().requires_grad_() for t in (q, rpb)]
    na2d(leaves[0], k, v, leaves[1], 3, 2, backend=backend).square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in leaves)
