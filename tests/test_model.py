"Tests of sage_paper.model: the decoder contract (flat and pooled), cached decoding, memory, equivalences and errors."
import dataclasses

import pytest
import torch

from sage_paper.attention import KVCache
from sage_paper.model import ModelConfig, MusicTransformer

TINY = dict(d_model=32, n_head=4, n_layer=2, max_seq_len=16)
VARIANTS = [dict(attention='mha'), dict(attention='gqa', n_kv_head=2), dict(attention='mqa'),
            dict(attention='askvhs', n_kv_head=1), dict(attention='askvhs', n_kv_head=2),
            dict(attention='askvhs', n_kv_head=2, askvhs_rank=4)]
IDS = ['mha', 'gqa2', 'mqa', 'askvhs1', 'askvhs2', 'askvhs2-r4']


def model(seed=0, perturb=True, **kw):
    "A tiny decoder; `perturb` moves weights off init (unties AS-KVHS attribute projections)."
    torch.manual_seed(seed)
    m = MusicTransformer(ModelConfig(**{'vocab_size': 11, **TINY, **kw})).eval()
    if perturb:
        with torch.no_grad():
            for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    return m


def data(B=2, T=10, V=11, n_attr=8, F=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T) if F is None else (B, T, F)
    return torch.randint(0, V, shape, generator=g), torch.randint(0, n_attr, (B, T), generator=g)


# ---------------------------------------------------------------- config
def test_config_defaults_follow_the_contract():
    cfg = ModelConfig(100)
    assert (cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.d_model, cfg.d_ff) == (100, 6, 8, 8, 512, 2048)
    assert (cfg.attention, cfg.n_attr, cfg.max_seq_len, cfg.dropout, cfg.field_vocab_sizes, cfg.tie_embeddings) == \
        ('mha', 8, 1024, 0.0, None, True)
    assert ModelConfig(**dataclasses.asdict(ModelConfig(100, attention='mqa'))) == ModelConfig(100, attention='mqa')


@pytest.mark.parametrize('kw, name', [
    (dict(vocab_size=0), 'vocab_size'),
    (dict(vocab_size=10, n_head=8, n_kv_head=3, attention='gqa'), 'n_kv_head'),
    (dict(vocab_size=10, d_model=100, n_head=8), 'd_model'),
    (dict(vocab_size=10, d_ff=0), 'd_ff'),
    (dict(vocab_size=0, field_vocab_sizes=(4, 0)), 'field_vocab_sizes'),
    (dict(vocab_size=0, field_vocab_sizes=()), 'field_vocab_sizes'),
    (dict(vocab_size=10, attention='linear'), 'attention'),
    (dict(vocab_size=10, n_layer=0), 'n_layer'),
])
def test_bad_config_names_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name): ModelConfig(**kw)


# ---------------------------------------------------------------- contract: shapes
@pytest.mark.parametrize('kw', VARIANTS, ids=IDS)
def test_flat_logits_shape(kw):
    tok, attr = data()
    assert model(**kw)(tok, attr).shape == (2, 10, 11)


def test_pooled_returns_one_head_per_field():
    m = model(vocab_size=0, field_vocab_sizes=(3, 7, 5, 4))
    tok = torch.stack([torch.randint(0, v, (2, 6)) for v in (3, 7, 5, 4)], -1)  # (B, T, F)
    out = m(tok)
    assert isinstance(out, list) and [o.shape for o in out] == [(2, 6, 3), (2, 6, 7), (2, 6, 5), (2, 6, 4)]


def test_pooled_fields_are_summed_embeddings():
    "Changing one field of one token changes the logits from that position on, in every head."
    m = model(vocab_size=0, field_vocab_sizes=(3, 7))
    tok = torch.stack([torch.randint(0, 3, (1, 6)), torch.randint(0, 7, (1, 6))], -1)
    tok2 = tok.clone()
    tok2[0, 3, 1] = (tok2[0, 3, 1] + 1) % 7
    with torch.no_grad():
        a, b = m(tok), m(tok2)
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa[:, :3], fb[:, :3])
        assert (fa[:, 3:] - fb[:, 3:]).abs().amax() > 1e-4


def test_pooled_fields_have_their_own_tables_and_heads():
    "Field f's ids index field f's embedding rows, and head f scores field f's vocabulary (tied: its own rows)."
    m = model(vocab_size=0, field_vocab_sizes=(5, 5, 6))
    tok = torch.stack([torch.randint(0, 5, (1, 4)), torch.randint(0, 5, (1, 4)), torch.randint(0, 6, (1, 4))], -1)
    swapped = tok[..., [1, 0, 2]]  # the same ids in other fields
    hidden = []
    m.norm.register_forward_hook(lambda mod, i, o: hidden.append(o))
    with torch.no_grad():
        out = m(tok)
        assert not torch.allclose(m(swapped)[2], out[2])
    rows = m.embed.weight.detach().split([5, 5, 6])
    for f in range(3): torch.testing.assert_close(out[f], hidden[0] @ rows[f].T)


def test_pooled_askvhs_without_attr_uses_attribute_zero():
    m = model(vocab_size=0, field_vocab_sizes=(3, 7), attention='askvhs', n_kv_head=2)
    tok = torch.stack([torch.randint(0, 3, (2, 6)), torch.randint(0, 7, (2, 6))], -1)
    with torch.no_grad():
        for a, b in zip(m(tok), m(tok, torch.zeros(2, 6, dtype=torch.long))): assert a.equal(b)


# ---------------------------------------------------------------- cached decoding and memory
def test_cache_reset_reuses_the_buffers():
    m = model(attention='gqa', n_kv_head=2)
    tok, attr = data()
    cache = m.new_cache(2)
    with torch.no_grad():
        first = m(tok, cache=cache)
        cache.reset()
        again = m(tok, cache=cache)
    assert first.equal(again)


def test_positions_matter_and_default_to_arange():
    m = model()
    tok, _ = data()
    with torch.no_grad():
        assert m(tok).equal(m(tok, pos=torch.arange(10)))
        shifted = m(tok, pos=torch.arange(100, 110))
    torch.testing.assert_close(shifted, m(tok), rtol=1e-3, atol=1e-4)  # RoPE: only offsets matter within a block
    with torch.no_grad():
        assert not torch.allclose(m(tok, pos=torch.arange(10) * 2), m(tok), atol=1e-4)


# ---------------------------------------------------------------- equivalences
@pytest.mark.parametrize('rank', [None, 4])
def test_fresh_askvhs_ignores_attr_until_trained(rank):
    "AS-KVHS starts tied (= GQA); one SGD step moves only the projections of the attributes it saw."
    m = model(perturb=False, attention='askvhs', n_kv_head=2, askvhs_rank=rank)
    tok, _ = data()
    attr = torch.randint(0, 2, tok.shape)  # only attributes 0 and 1
    with torch.no_grad(): assert m(tok, attr).equal(m(tok, torch.full_like(attr, 5)))
    out = m(tok, attr)
    torch.nn.functional.cross_entropy(out.flatten(0, 1), tok.flatten()).backward()
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None: p -= 0.5 * p.grad
        assert not m(tok, attr).equal(m(tok, torch.full_like(attr, 5)))
        assert m(tok, torch.full_like(attr, 5)).equal(m(tok, torch.full_like(attr, 6)))  # unseen attributes stay tied


# ---------------------------------------------------------------- sizes
def test_num_params_counts_tied_weights_once():
    tied, untied = model(perturb=False), model(perturb=False, tie_embeddings=False)
    assert untied.num_params() - tied.num_params() == 11 * 32
    assert tied.num_params(exclude_embeddings=True) == untied.num_params(exclude_embeddings=True)
    assert tied.head.weight is tied.embed.weight


def test_askvhs_parameter_cost():
    "Full AS-KVHS with G=1 and n_attr=H has MHA's parameter count; low-rank adds n_attr*r*(d + 2*G*dh) per layer."
    n = {k: model(perturb=False, **kw).num_params() for k, kw in zip(IDS, VARIANTS)}
    assert model(perturb=False, attention='askvhs', n_kv_head=1, n_attr=4).num_params() == n['mha']  # TINY has H = 4
    assert n['askvhs1'] - n['mqa'] == 2 * 7 * 2 * 8 * 32  # 7 more attribute projections of width 2*dh, per layer
    assert n['askvhs2-r4'] - n['gqa2'] == 2 * 8 * 4 * (32 + 2 * 2 * 8)


def test_new_cache_and_bytes_per_token():
    m = model(attention='askvhs', n_kv_head=1)
    c = m.new_cache(3, max_len=12, dtype=torch.float16)
    assert isinstance(c, KVCache) and c.k.shape == (2, 3, 1, 12, 8) and c.k.dtype == torch.float16
    assert c.nbytes == m.kv_cache_bytes_per_token(torch.float16) * 3 * 12
    assert m.new_cache(1).k.shape[3] == 16  # max_seq_len by default
    assert model(attention='mha').kv_cache_bytes_per_token() == 4 * m.kv_cache_bytes_per_token()


# ---------------------------------------------------------------- errors
def test_input_errors_name_the_input():
    m = model(attention='askvhs', n_kv_head=2)
    tok, attr = data()
    with pytest.raises(ValueError, match='attr'): m(tok)
    with pytest.raises(ValueError, match='n_attr'): m(tok, attr + 8)
    with pytest.raises(ValueError, match='attr has shape'): m(tok, attr[:, :4])
    with pytest.raises(ValueError, match='tokens'): m(tok + 11, attr)
    with pytest.raises(ValueError, match='tokens'): m(tok - 20, attr)
    with pytest.raises(ValueError, match='tokens'): m(tok[..., None], attr)
    with pytest.raises(ValueError, match='max_seq_len'): m(torch.zeros(1, 17, dtype=torch.long), torch.zeros(1, 17, dtype=torch.long))
    cache = m.new_cache(2, max_len=12)
    m(tok, attr, cache=cache)
    with pytest.raises(ValueError, match='max_len'): m(tok[:, :3], attr[:, :3], cache=cache)
    with pytest.raises(ValueError, match='batch'): m(tok[:1, :1], attr[:1, :1], cache=cache)
    with pytest.raises(ValueError, match='cache'): m(tok, attr, cache=model(attention='mqa').new_cache(2))
    with pytest.raises(ValueError, match='mems'): m(tok, attr, mems=[None])
    with pytest.raises(ValueError, match=r'mems\[1\]'): m(tok, attr, mems=[None, (torch.zeros(1), torch.zeros(1))])
    with pytest.raises(ValueError, match='pos has shape'): m(tok, attr, pos=torch.arange(3))


def test_pooled_input_errors():
    m = model(vocab_size=0, field_vocab_sizes=(3, 7))
    with pytest.raises(ValueError, match='tokens'): m(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match='tokens'): m(torch.zeros(2, 5, 3, dtype=torch.long))
    tok = torch.zeros(2, 5, 2, dtype=torch.long)
    tok[0, 0, 0] = 3  # field 0 has 3 ids
    with pytest.raises(ValueError, match='tokens'): m(tok)
    tok[0, 0, 0], tok[0, 0, 1] = 2, 6
    m(tok)  # in range for every field


def test_non_askvhs_models_ignore_attr():
    m = model(attention='gqa', n_kv_head=2)
    tok, attr = data()
    with torch.no_grad(): assert m(tok).equal(m(tok, attr + 100))
