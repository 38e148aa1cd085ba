"""Tests of sage_paper.attention beyond the notebook's checks: configuration errors, the low-rank AS-KVHS against a
naive reference, RoPE, the mask, the KV cache, memory read through a cache, and input errors.

The notebook `05_attention` checks the full-rank kinds against a naive reference, their equivalences (GQA with G = H
is MHA, ...), the kernels, causality in the attribute ids and one cached/memory example; `06_model` checks cached
decoding and memory for every kind on the whole decoder. Those properties are not repeated here."""
import pytest
import torch

from sage_paper.attention import (_single_query_kernel, AttentionConfig, CausalSelfAttention, KVCache, KVCodec, apply_rope, attend, causal_mask,
                                  kv_cache_bytes_per_token, kv_head_map, kv_projection_map, rope_cos_sin)

SMALL = dict(d_model=32, n_head=4, max_seq_len=16)


def make(kind, G, rank=None, n_attr=5, seed=0, untie=True, **kw):
    "A small attention layer; `untie` moves the weights off init so AS-KVHS attribute projections differ."
    torch.manual_seed(seed)
    att = CausalSelfAttention(AttentionConfig(**{**SMALL, **kw}, attention=kind, n_kv_head=G, n_attr=n_attr, askvhs_rank=rank)).eval()
    if untie:
        with torch.no_grad():
            for p in att.parameters(): p.add_(0.3 * torch.randn_like(p))
    return att


def reference(att, x, attr, pos):
    "Naive attention for batch row 0: per-token effective K/V weight (low rank: W + D_a U_a), explicit head loop, complex RoPE."
    c = att.cfg
    H, G, dh, T, A = c.n_head, c.n_kv_head, c.head_dim, x.shape[1], c.n_attr
    W = att.qkv.weight.detach()
    Wq, rest = W[:H * dh], W[H * dh:]
    kvs = []
    for t in range(T):
        a = int(attr[0, t])
        Wkv_shared, D = rest[:2 * G * dh], rest[2 * G * dh:].view(A, att.rank, -1)[a]  # (r, d)
        U = att.attr_up.detach().view(A, att.rank, -1)[a]  # (r, 2*G*dh)
        kvs.append(x[0, t] @ (Wkv_shared + (D.T @ U).T).T)
    k, v = torch.stack(kvs).view(T, 2, G, dh).unbind(1)  # (T, G, dh)
    q = (x[0] @ Wq.T).view(T, H, dh)

    def rot(u):
        z = torch.complex(u[..., :dh // 2], u[..., dh // 2:])
        ang = pos[:, None, None].double() * c.rope_base ** (-torch.arange(0, dh, 2).double() / dh)
        z = z * torch.polar(torch.ones_like(ang), ang).to(z.dtype)
        return torch.cat([z.real, z.imag], -1)

    q, k = rot(q), rot(k)
    heads = []
    for h in range(H):
        g = h * G // H
        s = (q[:, h] @ k[:, g].T) / dh ** 0.5
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float('-inf'))
        heads.append(s.softmax(-1) @ v[:, g])
    return att.out(torch.cat(heads, -1))[None]


# ---------------------------------------------------------------- config and maps
@pytest.mark.parametrize('kw, name', [
    (dict(attention='gqa', n_head=8, n_kv_head=3), 'n_kv_head'),
    (dict(attention='gqa', n_head=4, n_kv_head=8, d_model=64), 'n_kv_head'),
    (dict(d_model=100, n_head=8), 'd_model'),
    (dict(d_model=24, n_head=8), 'head_dim'),
    (dict(attention='sparse'), 'attention'),
    (dict(n_attr=0), 'n_attr'),
    (dict(attention='askvhs', askvhs_rank=0), 'askvhs_rank'),
    (dict(dropout=1.0), 'dropout'),
    (dict(max_seq_len=0), 'max_seq_len'),
    (dict(n_layer=True), 'n_layer'),
    (dict(kv_rank=513), 'kv_rank'),
    (dict(kv_rank=0), 'kv_rank'),
])
def test_bad_config_names_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name): AttentionConfig(**kw)


def test_kind_fixes_kv_heads():
    assert AttentionConfig(attention='mha', n_head=4, d_model=32).n_kv_head == 4
    assert AttentionConfig(attention='mqa').n_kv_head == 1
    assert AttentionConfig(attention='askvhs', n_kv_head=1).n_kv_head == 1


def test_kv_head_maps():
    assert kv_head_map(AttentionConfig(attention='gqa', n_kv_head=4)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert kv_head_map(AttentionConfig(attention='mqa')).tolist() == [0] * 8
    assert kv_head_map(AttentionConfig(attention='mha')).tolist() == list(range(8))
    pm = kv_projection_map(AttentionConfig(attention='askvhs', n_kv_head=2, n_attr=4))
    assert pm.shape == (4, 8)
    assert pm[3].tolist() == [6, 6, 6, 6, 7, 7, 7, 7]
    assert len(pm.unique()) == 4 * 2  # every (attribute, KV head) pair has its own projection
    assert (kv_projection_map(AttentionConfig(attention='gqa', n_kv_head=2, n_attr=4)) == pm[0]).all()


def test_kv_cache_bytes_per_token():
    base = dict(d_model=512, n_head=8, n_layer=6)
    assert kv_cache_bytes_per_token(AttentionConfig(**base, attention='mha'), torch.bfloat16) == 12288
    assert kv_cache_bytes_per_token(AttentionConfig(**base, attention='mqa'), torch.bfloat16) == 1536
    assert kv_cache_bytes_per_token(AttentionConfig(**base, attention='gqa', n_kv_head=2), torch.float32) == 6144
    askvhs = AttentionConfig(**base, attention='askvhs', n_kv_head=2, n_attr=8)
    assert kv_cache_bytes_per_token(askvhs, torch.float32) == 6144  # attributes cost no cache


def test_kv_cache_bytes_match_a_real_cache():
    cfg = AttentionConfig(attention='gqa', n_kv_head=2, d_model=64, n_head=4, n_layer=3)
    c = KVCache(cfg.n_layer, 2, cfg.n_kv_head, 10, cfg.head_dim, dtype=torch.float16)
    assert c.nbytes == kv_cache_bytes_per_token(cfg, torch.float16) * 2 * 10


# ---------------------------------------------------------------- RoPE and mask
def test_rope_scores_depend_only_on_offset():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(m, n):
        return (apply_rope(q, *rope_cos_sin(torch.tensor([m]), 32)) * apply_rope(k, *rope_cos_sin(torch.tensor([n]), 32))).sum()

    torch.testing.assert_close(score(9, 2), score(509, 502), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(score(9, 2), score(9, 3))
    torch.testing.assert_close(apply_rope(q, *rope_cos_sin(torch.tensor([0]), 32)), q)


def test_rope_batched_positions():
    cos, sin = rope_cos_sin(torch.tensor([[0, 1, 2], [5, 6, 7]]), 8)
    assert cos.shape == (2, 3, 8)
    torch.testing.assert_close(cos[1], rope_cos_sin(torch.arange(5, 8), 8)[0])


def test_causal_mask_with_memory_and_cache():
    assert causal_mask(torch.arange(4), 4).equal(torch.ones(4, 4, dtype=torch.bool).tril())
    m = causal_mask(torch.tensor([3, 4]), 7, mem_pos=torch.tensor([[0, 1, 2], [-3, -2, -1]]))
    assert m.shape == (2, 1, 2, 10)
    assert m[0, 0, :, :3].all() and not m[1, 0, :, :3].any()  # valid memory visible to every query; an earlier piece's never
    assert m[0, 0, 0, 3:].tolist() == [True] * 4 + [False] * 3
    assert m[1, 0, 1, 3:].tolist() == [True] * 5 + [False] * 2


# ---------------------------------------------------------------- KV cache
def test_kv_cache_writes_in_place_and_resets():
    c = KVCache(2, 1, 2, 6, 4)
    k0, v0 = c.k, c.v
    kk = torch.randn(1, 2, 2, 4)
    k, v, slots = c.update(1, kk, -kk)
    assert slots.tolist() == [0, 1] and k.shape == (1, 2, 2, 4)
    assert c.k[1, :, :, :2].equal(kk) and c.v[1, :, :, :2].equal(-kk) and c.k[0].abs().sum() == 0
    c.advance(2)
    _, _, slots = c.update(0, kk[:, :, :1], kk[:, :, :1])
    assert slots.tolist() == [2] and int(c.pos) == 2 and c.length == 2
    c.reset()
    assert c.k is k0 and c.v is v0  # same buffers
    assert c.length == 0 and int(c.pos) == 0 and c.k.abs().sum() == 0


def test_static_cache_reads_every_slot_and_keeps_no_host_length():
    c = KVCache(1, 1, 1, 8, 4, static=True)
    k, _, _ = c.update(0, torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4))
    c.advance(3)
    assert k.shape == (1, 1, 8, 4) and int(c.pos) == 3 and c.length == 0
    with pytest.raises(ValueError, match='3 cached'): c.check(1, 6)


def test_kv_cache_errors():
    c = KVCache(1, 2, 1, 4, 8)
    with pytest.raises(ValueError, match='max_len'): c.check(2, 5)
    with pytest.raises(ValueError, match='batch'): c.check(3, 1)
    with pytest.raises(ValueError, match='max_len'): KVCache(1, 2, 1, 0, 8)
    with pytest.raises(ValueError, match='batch=True'): KVCache(1, True, 1, 4, 8)


# ---------------------------------------------------------------- the low-rank form against the reference
def test_low_rank_askvhs_matches_naive_reference():
    att = make('askvhs', 2, rank=3)
    torch.manual_seed(1)
    x, attr, pos = torch.randn(1, 7, 32), torch.randint(0, 5, (1, 7)), torch.arange(3, 10)
    with torch.no_grad():
        torch.testing.assert_close(att(x, pos, attr)[0], reference(att, x, attr, pos), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kernel', ['fused', 'grouped', 'gathered'])
def test_only_used_attribute_projections_get_gradient(kernel):
    att = make('askvhs', 2, n_attr=4)
    att.askvhs_kernel = kernel
    x, attr = torch.randn(2, 6, 32), torch.tensor([[0, 2, 0, 2, 2, 0]] * 2)
    att(x, attr=attr)[0].square().sum().backward()
    c = att.cfg
    H, hd = c.n_head * c.head_dim, 2 * c.n_kv_head * c.head_dim
    g = att.qkv.weight.grad[H:].view(4, hd, -1).abs().sum((1, 2))  # per attribute
    assert g[0] > 0 and g[2] > 0 and g[1] == 0 and g[3] == 0


@pytest.mark.parametrize('B,T', [(1, 1), (3, 1), (2, 5)])
def test_askvhs_kernels_give_the_same_projections(B, T):
    "fused (one matmul, then each token's slice), grouped (one matmul per attribute present), gathered (per-token weights)."
    att = make('askvhs', 2, n_attr=6)
    x, attr = torch.randn(B, T, 32), torch.randint(0, 6, (B, T))
    out = {}
    with torch.no_grad():
        for kernel in ('fused', 'grouped', 'gathered'):
            att.askvhs_kernel = kernel
            out[kernel] = att.project_qkv(x, attr)
    for kernel in ('grouped', 'gathered'):
        for a, b in zip(out['fused'], out[kernel]): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_auto_kernels_follow_the_device_and_the_compiler():
    "Eager on CPU: the grouped AS-KVHS kernel; under torch.compile on CPU: gathered for one token, fused for more."
    att = make('askvhs', 2)
    seen = []
    att._project_grouped = lambda x, a, f=att._project_grouped: seen.append('grouped') or f(x, a)
    with torch.no_grad(): att(torch.randn(1, 1, 32), attr=torch.zeros(1, 1, dtype=torch.long))
    assert seen == ['grouped']
    torch._dynamo.reset()
    kernel = torch.compile(lambda x: att._kernel(x), dynamic=False, backend='eager')  # the choice is made while tracing: no code generation needed
    assert [kernel(torch.randn(B, T, 32)) for B, T in ((1, 1), (4, 1), (1, 3))] == ['gathered', 'fused', 'fused']
    torch._dynamo.reset()
    att.askvhs_kernel = 'grouped'
    assert att._kernel(torch.randn(1, 1, 32)) == 'grouped'
    low = CausalSelfAttention(AttentionConfig(**SMALL, attention='askvhs', n_kv_head=2, askvhs_rank=4))  # low rank: its own fused matmuls in eager code
    kernel = torch.compile(lambda x: low._kernel(x), dynamic=False, backend='eager')
    assert low._kernel(torch.randn(1, 1, 32)) == 'fused' and [kernel(torch.randn(B, 1, 32)) for B in (1, 4)] == ['gathered', 'fused']
    torch._dynamo.reset()


@pytest.mark.parametrize("kernel", ["reduce", "matmul"])
def test_single_query_kernels_equal_sdpa(kernel):
    "The single-query kernels that compile well on CPU: the same outputs as SDPA, with GQA folding, masks and a memory mask."
    torch.manual_seed(0)
    for B, H, G, L in ((2, 8, 2, 9), (1, 4, 4, 5), (3, 4, 1, 7)):
        q, k, v = torch.randn(B, H, 1, 8), torch.randn(B, G, L, 8), torch.randn(B, G, L, 8)
        for mask in (None, torch.arange(L)[None] <= L - 3, torch.rand(B, 1, 1, L) > 0.3):
            if mask is not None: mask[..., 0] = True  # every row sees a key
            want = attend(q, k, v, mask, kernel='sdpa')
            torch.testing.assert_close(attend(q, k, v, mask, kernel=kernel), want, rtol=1e-5, atol=1e-5)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    torch.testing.assert_close(attend(qb, kb, vb, kernel=kernel).float(), attend(q, k, v), rtol=0.05, atol=0.03)


def test_single_query_kernel_choice():
    "'auto' is SDPA in eager code; under torch.compile on CPU the loops for a small cache, the matmuls for batch x cached > 2048."
    q = torch.randn(1, 8, 1, 8)
    assert _single_query_kernel('auto', q, 4096, 0.0) == 'sdpa' and _single_query_kernel('matmul', q, 8, 0.1) == 'sdpa'
    torch._dynamo.reset()
    choice = torch.compile(lambda q, L: _single_query_kernel('auto', q, L, 0.0), dynamic=False, backend='eager')  # chosen while tracing
    assert [choice(torch.randn(B, 8, 1, 8), L) for B, L in ((1, 2048), (1, 2049), (64, 272))] == ['reduce', 'matmul', 'matmul']
    torch._dynamo.reset()


def test_compiled_cache_write_is_the_eager_one():
    "Under torch.compile the cache is written by one index_put_ on its 5-D buffer: the same slots as index_copy_."
    k, v = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)  # (B, G, T, dh)
    caches = [KVCache(3, 2, 3, 6, 4, static=True) for _ in range(2)]
    for c in caches: c.pos.fill_(3)
    def write(c, k, v):
        out = c.update(1, k, v)
        c.advance(2)
        return out
    torch._dynamo.reset()
    ka, va, sa = write(caches[0], k, v)
    kb, vb, sb = torch.compile(write, fullgraph=True, backend='aot_eager')(caches[1], k, v)  # traced and functionalized as inductor sees it
    torch._dynamo.reset()
    assert torch.equal(caches[0].k, caches[1].k) and torch.equal(caches[0].v, caches[1].v) and torch.equal(sa, sb)
    assert torch.equal(ka, kb) and int(caches[1].pos) == 5 and caches[1].k[1, :, :, 3:5].equal(k) and caches[1].k[0].abs().sum() == 0


# ---------------------------------------------------------------- cache, positions and memory
def test_cached_chunks_longer_than_one_token():
    att = make('askvhs', 2)
    x, attr = torch.randn(1, 10, 32), torch.randint(0, 5, (1, 10))
    with torch.no_grad():
        full = att(x, attr=attr)[0]
        cache = KVCache(1, 1, 2, 10, 8)
        ys = []
        for s, e in [(0, 3), (3, 7), (7, 10)]:
            ys.append(att(x[:, s:e], attr=attr[:, s:e], cache=cache, layer_idx=0)[0])
            cache.advance(e - s)
    torch.testing.assert_close(torch.cat(ys, 1), full, rtol=1e-4, atol=1e-5)


def test_batched_positions_equal_separate_rows():
    att = make('gqa', 2)
    x = torch.randn(2, 5, 32)
    pos = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])
    with torch.no_grad():
        y = att(x, pos)[0]
        torch.testing.assert_close(y[1:], att(x[1:], pos[1])[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(y[:1], att(x[:1], pos[0])[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kv_rank', [None, 8])
@pytest.mark.parametrize('static', [False, True])
def test_memory_and_cache_together(static, kv_rank):
    "Memory of segment 1 (keys or codes), then segment 2 decoded through a cache, equals the full pass."
    att = make('askvhs', 1, kv_rank=kv_rank)
    x, attr = torch.randn(1, 10, 32), torch.randint(0, 5, (1, 10))
    with torch.no_grad():
        full = att(x, attr=attr)[0]
        mk, mv = att(x[:, :5], attr=attr[:, :5])[1]
        mem = (mk, mv, torch.arange(5)[None])
        cache = KVCache(1, 1, 1, 8, 8, static=static)
        ys = [att(x[:, 5:7], pos=torch.arange(5, 7), attr=attr[:, 5:7], cache=cache, layer_idx=0, memory=mem)[0]]
        cache.advance(2)
        for t in range(7, 10):
            ys.append(att(x[:, t:t + 1], pos=torch.tensor([t]), attr=attr[:, t:t + 1], cache=cache, layer_idx=0, memory=mem)[0])
            cache.advance(1)
    torch.testing.assert_close(torch.cat(ys, 1), full[:, 5:], rtol=1e-4, atol=1e-5)


def test_memory_of_an_earlier_piece_is_not_read():
    "Memory entries at negative positions (the stream started a new piece) change nothing."
    att = make('gqa', 2)
    x = torch.randn(1, 6, 32)
    junk = (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.arange(-4, 0)[None])
    with torch.no_grad(): torch.testing.assert_close(att(x, memory=junk)[0], att(x)[0], rtol=1e-5, atol=1e-6)


def test_codec_full_rank_identity_is_the_plain_layer():
    att = make('gqa', 2, kv_rank=16)
    with torch.no_grad():
        for lin in (att.codec.k_down, att.codec.k_up, att.codec.v_down, att.codec.v_up): lin.weight.copy_(torch.eye(16))
    plain = make('gqa', 2)
    plain.load_state_dict({k: v for k, v in att.state_dict().items() if 'codec' not in k})
    x = torch.randn(2, 6, 32)
    with torch.no_grad(): torch.testing.assert_close(att(x)[0], plain(x)[0], rtol=1e-5, atol=1e-6)
    assert att(x)[1][0].shape == (2, 6, 16)  # what a memory stores: codes (B, T, r)


# ---------------------------------------------------------------- errors, dropout, determinism
def test_input_errors_name_the_input():
    att = make('askvhs', 2)
    x, attr = torch.randn(1, 6, 32), torch.randint(0, 5, (1, 6))
    with pytest.raises(ValueError, match='attr'): att(x)
    with pytest.raises(ValueError, match='n_attr'): att(x, attr=attr + 5)
    with pytest.raises(ValueError, match='n_attr'): att(x, attr=attr - 5)
    with pytest.raises(ValueError, match='attr has shape'): att(x, attr=attr[:, :3])
    with pytest.raises(ValueError, match='max_seq_len'): att(torch.randn(1, 17, 32), attr=torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match='pos'): att(x, pos=torch.arange(5), attr=attr)
    cache = KVCache(1, 1, 2, 8, 8)
    with pytest.raises(ValueError, match='layer_idx'): att(x, attr=attr, cache=cache)
    att(x, attr=attr, cache=cache, layer_idx=0)
    cache.advance(6)
    with pytest.raises(ValueError, match='max_len'): att(x[:, :3], attr=attr[:, :3], cache=cache, layer_idx=0)
    bad = (torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8), torch.arange(3)[None])
    with pytest.raises(ValueError, match='memory keys'): att(x, attr=attr, memory=bad)
    with pytest.raises(ValueError, match='kv_rank=17'): KVCodec(16, 17)


def test_other_kinds_ignore_attr():
    att = make('gqa', 2)
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        assert att(x)[0].equal(att(x, attr=torch.full((1, 6), 99))[0])


def test_dropout_only_in_training():
    att = make('gqa', 2, dropout=0.5)
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        assert att(x)[0].equal(att(x)[0])  # eval
        att.train()
        torch.manual_seed(0); a = att(x)[0]
        torch.manual_seed(1); b = att(x)[0]
    assert not torch.allclose(a, b)
