"Tests of sage_paper.attention: MHA / GQA / MQA / AS-KVHS against a naive reference, their equivalences, RoPE, the KV cache and memory."
import pytest
import torch

from sage_paper.attention import (AttentionConfig, CausalSelfAttention, KVCache, apply_rope, causal_mask,
                                  kv_cache_bytes_per_token, kv_head_map, kv_projection_map, rope_cos_sin)

SMALL = dict(d_model=32, n_head=4, max_seq_len=16)
KINDS = [('mha', 4, None), ('gqa', 2, None), ('mqa', 1, None), ('askvhs', 2, None), ('askvhs', 1, None), ('askvhs', 2, 3)]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny tensors: one thread avoids OpenMP hand-offs, which made these tests ~100x slower on a busy 2-core machine."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(kind, G, rank=None, n_attr=5, seed=0, untie=True, **kw):
    "A small attention layer; `untie` moves the weights off init so AS-KVHS attribute projections differ."
    torch.manual_seed(seed)
    att = CausalSelfAttention(AttentionConfig(**{**SMALL, **kw}, attention=kind, n_kv_head=G, n_attr=n_attr, askvhs_rank=rank)).eval()
    if untie:
        with torch.no_grad():
            for p in att.parameters(): p.add_(0.3 * torch.randn_like(p))
    return att


def reference(att, x, attr, pos):
    "Naive attention for batch row 0: per-token effective K/V weight, explicit head loop, RoPE as complex rotation."
    c = att.cfg
    H, G, dh, T, A = c.n_head, c.n_kv_head, c.head_dim, x.shape[1], c.n_attr
    W = att.qkv.weight.detach()
    Wq, rest = W[:H * dh], W[H * dh:]
    kvs = []
    for t in range(T):
        a = int(attr[0, t])
        if att.askvhs and att.rank is None: Wkv = rest[a * 2 * G * dh:(a + 1) * 2 * G * dh]
        elif att.askvhs:  # shared + D_a U_a
            Wkv_shared, D = rest[:2 * G * dh], rest[2 * G * dh:].view(A, att.rank, -1)[a]  # (r, d)
            U = att.attr_up.detach().view(A, att.rank, -1)[a]  # (r, 2*G*dh)
            Wkv = Wkv_shared + (D.T @ U).T
        else: Wkv = rest
        kvs.append(x[0, t] @ Wkv.T)
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
    m = causal_mask(torch.tensor([3, 4]), 7, n_mem=3)
    assert m.shape == (2, 10)
    assert m[:, :3].all()  # memory always visible
    assert m[0, 3:].tolist() == [True] * 4 + [False] * 3
    assert m[1, 3:].tolist() == [True] * 5 + [False] * 2


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


def test_static_cache_reads_every_slot():
    c = KVCache(1, 1, 1, 8, 4, static=True)
    k, _, _ = c.update(0, torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4))
    assert k.shape == (1, 1, 8, 4)


def test_kv_cache_errors():
    c = KVCache(1, 2, 1, 4, 8)
    with pytest.raises(ValueError, match='max_len'): c.check(2, 5)
    with pytest.raises(ValueError, match='batch'): c.check(3, 1)
    with pytest.raises(ValueError, match='max_len'): KVCache(1, 2, 1, 0, 8)


# ---------------------------------------------------------------- the module against the reference
@pytest.mark.parametrize('kind, G, rank', KINDS)
def test_matches_naive_reference(kind, G, rank):
    att = make(kind, G, rank)
    torch.manual_seed(1)
    x, attr, pos = torch.randn(1, 7, 32), torch.randint(0, 5, (1, 7)), torch.arange(3, 10)
    with torch.no_grad():
        torch.testing.assert_close(att(x, pos, attr), reference(att, x, attr, pos), rtol=1e-4, atol=1e-5)


def copy_weights(src, dst):
    "Load src's weights into dst; AS-KVHS gets src's K/V projection for every attribute (low-rank: its shared part)."
    c = src.cfg
    H, hd = c.n_head * c.head_dim, 2 * c.n_kv_head * c.head_dim
    with torch.no_grad():
        w = src.qkv.weight
        if dst.askvhs and dst.rank is None: w = torch.cat([w[:H], w[H:H + hd].repeat(dst.cfg.n_attr, 1)])
        elif dst.askvhs: w = torch.cat([w, dst.qkv.weight[H + hd:]])
        dst.qkv.weight.copy_(w)
        dst.out.weight.copy_(src.out.weight)
    return dst


def test_gqa_with_g_equal_h_is_mha():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 32)
    mha = make('mha', 4)
    gqa = copy_weights(mha, make('gqa', 4, untie=False))
    torch.testing.assert_close(gqa(x), mha(x), rtol=0, atol=1e-6)


def test_mqa_is_gqa_with_one_kv_head():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 32)
    mqa = make('mqa', 1)
    gqa = copy_weights(mqa, make('gqa', 1, untie=False))
    torch.testing.assert_close(gqa(x), mqa(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize('rank', [None, 3])
@pytest.mark.parametrize('G', [1, 2])
def test_tied_askvhs_is_gqa(G, rank):
    "Tied attribute projections (the initial state) make AS-KVHS compute exactly GQA with the same G."
    torch.manual_seed(0)
    x, attr = torch.randn(2, 9, 32), torch.randint(0, 5, (2, 9))
    gqa = make('gqa', G)
    askvhs = copy_weights(gqa, make('askvhs', G, rank, untie=False))
    torch.testing.assert_close(askvhs(x, attr=attr), gqa(x), rtol=0, atol=1e-5)


def test_single_attribute_askvhs_is_gqa():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 32)
    gqa = make('gqa', 2)
    askvhs = make('askvhs', 2, n_attr=1, untie=False)
    askvhs.load_state_dict(gqa.state_dict())  # n_attr=1: the same parameter shapes
    torch.testing.assert_close(askvhs(x, attr=torch.zeros(2, 9, dtype=torch.long)), gqa(x), rtol=0, atol=1e-6)


def test_new_module_starts_tied():
    torch.manual_seed(0)
    x, attr = torch.randn(1, 6, 32), torch.randint(0, 5, (1, 6))
    att = make('askvhs', 2, untie=False)
    torch.testing.assert_close(att(x, attr=attr), att(x, attr=torch.zeros_like(attr)))


@pytest.mark.parametrize('rank', [None, 3])
def test_attribute_change_acts_from_that_token_on(rank):
    att = make('askvhs', 1, rank)
    torch.manual_seed(2)
    x, attr = torch.randn(2, 8, 32), torch.randint(0, 5, (2, 8))
    attr2 = attr.clone()
    attr2[:, 5] = (attr2[:, 5] + 1) % 5
    with torch.no_grad():
        y1, y2 = att(x, attr=attr), att(x, attr=attr2)
    torch.testing.assert_close(y1[:, :5], y2[:, :5], rtol=0, atol=1e-6)
    assert (y1[:, 5:] - y2[:, 5:]).abs().amax() > 1e-3


def test_only_used_attribute_projections_get_gradient():
    att = make('askvhs', 2, n_attr=4)
    x, attr = torch.randn(2, 6, 32), torch.tensor([[0, 2, 0, 2, 2, 0]] * 2)
    att(x, attr=attr).square().sum().backward()
    c = att.cfg
    H, hd = c.n_head * c.head_dim, 2 * c.n_kv_head * c.head_dim
    g = att.qkv.weight.grad[H:].view(4, hd, -1).abs().sum((1, 2))  # per attribute
    assert g[0] > 0 and g[2] > 0 and g[1] == 0 and g[3] == 0


# ---------------------------------------------------------------- cache, positions and memory
@pytest.mark.parametrize('static', [False, True])
@pytest.mark.parametrize('kind, G, rank', KINDS)
def test_cached_decoding_equals_full_pass(kind, G, rank, static):
    att = make(kind, G, rank)
    torch.manual_seed(3)
    x, attr = torch.randn(2, 9, 32), torch.randint(0, 5, (2, 9))
    with torch.no_grad():
        full = att(x, attr=attr)
        cache = KVCache(1, 2, att.cfg.n_kv_head, 12, att.cfg.head_dim, static=static)
        ys = [att(x[:, :4], attr=attr[:, :4], cache=cache, layer_idx=0)]
        cache.advance(4)
        for t in range(4, 9):
            ys.append(att(x[:, t:t + 1], attr=attr[:, t:t + 1], cache=cache, layer_idx=0))
            cache.advance(1)
    torch.testing.assert_close(torch.cat(ys, 1), full, rtol=1e-4, atol=1e-5)


def test_cached_chunks_longer_than_one_token():
    att = make('askvhs', 2)
    x, attr = torch.randn(1, 10, 32), torch.randint(0, 5, (1, 10))
    with torch.no_grad():
        full = att(x, attr=attr)
        cache = KVCache(1, 1, 2, 10, 8)
        ys = []
        for s, e in [(0, 3), (3, 7), (7, 10)]:
            ys.append(att(x[:, s:e], attr=attr[:, s:e], cache=cache, layer_idx=0))
            cache.advance(e - s)
    torch.testing.assert_close(torch.cat(ys, 1), full, rtol=1e-4, atol=1e-5)


def test_batched_positions_equal_separate_rows():
    att = make('gqa', 2)
    x = torch.randn(2, 5, 32)
    pos = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])
    with torch.no_grad():
        y = att(x, pos)
        torch.testing.assert_close(y[1:], att(x[1:], pos[1]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(y[:1], att(x[:1], pos[0]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kind, G, rank', KINDS)
def test_memory_reproduces_the_full_sequence(kind, G, rank):
    "A block attending to the earlier tokens' (k, v) as memory equals the full pass at its positions."
    att = make(kind, G, rank)
    x, attr = torch.randn(2, 10, 32), torch.randint(0, 5, (2, 10))
    with torch.no_grad():
        full = att(x, attr=attr)
        _, mem = att(x[:, :6], attr=attr[:, :6], return_kv=True)
        y = att(x[:, 6:], pos=torch.arange(6, 10), attr=attr[:, 6:], mem_kv=mem)
    assert mem[0].shape == (2, att.cfg.n_kv_head, 6, 8)
    torch.testing.assert_close(y, full[:, 6:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('static', [False, True])
def test_memory_and_cache_together(static):
    "Memory of segment 1, then segment 2 decoded through a cache, equals the full pass."
    att = make('askvhs', 1)
    x, attr = torch.randn(1, 10, 32), torch.randint(0, 5, (1, 10))
    with torch.no_grad():
        full = att(x, attr=attr)
        _, mem = att(x[:, :5], attr=attr[:, :5], return_kv=True)
        cache = KVCache(1, 1, 1, 8, 8, static=static)
        ys = [att(x[:, 5:7], pos=torch.arange(5, 7), attr=attr[:, 5:7], cache=cache, layer_idx=0, mem_kv=mem)]
        cache.advance(2)
        for t in range(7, 10):
            ys.append(att(x[:, t:t + 1], pos=torch.tensor([t]), attr=attr[:, t:t + 1], cache=cache, layer_idx=0, mem_kv=mem))
            cache.advance(1)
    torch.testing.assert_close(torch.cat(ys, 1), full[:, 5:], rtol=1e-4, atol=1e-5)


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
    with pytest.raises(ValueError, match='mem_kv'): att(x, attr=attr, mem_kv=(torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8)))


def test_other_kinds_ignore_attr():
    att = make('gqa', 2)
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        assert att(x).equal(att(x, attr=torch.full((1, 6), 99)))


def test_dropout_only_in_training():
    att = make('gqa', 2, dropout=0.5)
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        assert att(x).equal(att(x))  # eval
        att.train()
        torch.manual_seed(0); a = att(x)
        torch.manual_seed(1); b = att(x)
    assert not torch.allclose(a, b)


def test_deterministic_with_a_seed():
    assert all(p.equal(q) for p, q in zip(make('askvhs', 2, 3, seed=5).parameters(), make('askvhs', 2, 3, seed=5).parameters()))
    assert not make('askvhs', 2, seed=5).qkv.weight.equal(make('askvhs', 2, seed=6).qkv.weight)
