"Tests of sage_paper.recurrence: schedules, Transformer-XL equivalence, streaming, resets, horizons, bytes, KRCU, resume."
import json, math, os, subprocess, sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sage_paper.model import ModelConfig, MusicTransformer
from sage_paper.recurrence import (MemoryConfig, RecurrentLM, PieceStreams, StreamLoss, memory_bytes,
                                   earliest_visible, receptive_field, copy_task_pieces, dsmr_variant)
from sage_paper.train import Trainer, TrainConfig, evaluate, lm_loss

REPO = Path(__file__).resolve().parents[1]
TINY = dict(d_model=32, n_head=4, n_layer=3)
KINDS = [dict(attention='mha'), dict(attention='gqa', n_kv_head=2), dict(attention='mqa'), dict(attention='askvhs', n_kv_head=2)]
KIND_IDS = ['mha', 'gqa2', 'mqa', 'askvhs2']


def pair(seed=0, seg=8, long=64, **kw):
    "A perturbed decoder for long passes and the same weights with max_seq_len = seg (segments must fit)."
    torch.manual_seed(seed)
    long_m = MusicTransformer(ModelConfig(**{'vocab_size': 11, **TINY, **kw, 'max_seq_len': long})).eval()
    with torch.no_grad():
        for p in long_m.parameters(): p.add_(0.05 * torch.randn_like(p))
    seg_m = MusicTransformer(ModelConfig(**{'vocab_size': 11, **TINY, **kw, 'max_seq_len': seg})).eval()
    seg_m.load_state_dict(long_m.state_dict())
    return long_m, seg_m


def identity_codes(seg):
    "The same decoder with full-rank KV codes set to the identity (kv_rank = G * dh): it must compute what `seg` computes."
    c = seg.cfg
    m = MusicTransformer(ModelConfig(**{**{k: getattr(c, k) for k in ('vocab_size', 'd_model', 'n_head', 'n_kv_head', 'n_layer', 'attention',
                                                                       'max_seq_len', 'field_vocab_sizes')}, 'kv_rank': c.n_kv_head * c.head_dim})).eval()
    m.load_state_dict(seg.state_dict(), strict=False)
    for blk in m.blocks:
        for lin in (blk.attn.codec.k_down, blk.attn.codec.k_up, blk.attn.codec.v_down, blk.attn.codec.v_up):
            lin.weight.data = torch.eye(lin.weight.shape[0])
    return m


def data(B=2, T=30, seed=1, V=11):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, V, (B, T), generator=g), torch.randint(0, 8, (B, T), generator=g)


def stream(rlm, tok, attr, T, **kw):
    "Logits of tokens fed in segments of T, and every intermediate state."
    st, outs, states = None, [], []
    for s in range(0, tok.shape[1], T):
        lo, st = rlm(tok[:, s:s + T], None if attr is None else attr[:, s:s + T], state=st, **kw)
        outs.append(lo); states.append(st)
    if isinstance(outs[0], list): return [torch.cat(f, 1) for f in zip(*outs)], states
    return torch.cat(outs, 1), states


# ---------------------------------------------------------------- schedules and configuration errors
def test_schedules_give_the_documented_horizons():
    L, W, w = 6, 300, 100
    assert MemoryConfig('full', W).horizons_for(L) == (300,) * 6
    assert MemoryConfig('two_scale', W, w, n_long=2).horizons_for(L) == (300, 300, 100, 100, 100, 100)
    assert MemoryConfig('binary', W, layers=(1, 4)).horizons_for(L) == (0, 300, 0, 0, 300, 0)
    assert MemoryConfig('ascending', W).horizons_for(L) == (0, 60, 120, 180, 240, 300)
    assert MemoryConfig('descending', W).horizons_for(L) == (300, 240, 180, 120, 60, 0)
    assert MemoryConfig('perceiver_ar', W).horizons_for(L) == (300, 0, 0, 0, 0, 0)
    assert MemoryConfig('ascending', W).horizons_for(1) == (300,)
    # the e04 defaults: every memory-saving schedule at half of full, Perceiver-AR-like at a quarter
    full = sum(dsmr_variant('full', 4, 4, 64, 192, 64, 1)[1].horizons_for(4))
    for name in ('two_scale', 'selective', 'ascending', 'descending'):
        assert sum(dsmr_variant(name, 4, 4, 64, 192, 64, 1)[1].horizons_for(4)) * 2 == full, name
    assert sum(dsmr_variant('perceiver_ar', 4, 4, 64, 192, 64, 1)[1].horizons_for(4)) * 4 == full


@pytest.mark.parametrize('make, name', [
    (lambda: MemoryConfig('sliding'), 'schedule'), (lambda: MemoryConfig(long=-5), 'long'),
    (lambda: MemoryConfig(short=1.5), 'short'), (lambda: MemoryConfig('two_scale', n_long=7).horizons_for(6), 'n_long'),
    (lambda: MemoryConfig('binary', layers=(0, 6)).horizons_for(6), 'layers'),
    (lambda: MemoryConfig('custom'), 'horizons'), (lambda: MemoryConfig('custom', horizons=(1, -1)).horizons_for(2), 'horizons'),
    (lambda: MemoryConfig('custom', horizons=(1, 2)).horizons_for(3), 'horizons'),
    (lambda: PieceStreams([np.arange(5)], batch=0, seg_len=4), 'batch'),
    (lambda: PieceStreams([np.arange(5)], batch=1, seg_len=0), 'seg_len'), (lambda: PieceStreams([np.arange(1)], 1, 4), 'pieces'),
    (lambda: dsmr_variant('fhcr_gqa', 4, 4, 64, 192, 64, 1, compress=3), 'compress'),
    (lambda: dsmr_variant('everything', 4, 4, 64, 192, 64, 1), 'everything'),
    (lambda: earliest_visible((1,), 0, 5), 'seg_len')])
def test_bad_parameters_are_named(make, name):
    with pytest.raises(ValueError, match=name): make()


def test_forward_errors_name_the_problem():
    _, seg = pair()
    rlm = RecurrentLM(seg, MemoryConfig('full', 16))
    tok, _ = data(T=8)
    _, st = rlm(tok)
    with pytest.raises(ValueError, match='streams'): rlm(tok[:1], state=st)
    with pytest.raises(ValueError, match='max_memory'): rlm(tok, state=st, max_memory=-1)
    with pytest.raises(ValueError, match='max_seq_len'): rlm(torch.ones(2, 9, dtype=torch.long))
    assert rlm(tok[:1], state=st, reset=torch.tensor([True]))[1].batch == 1  # a full reset may change the batch


# ---------------------------------------------------------------- equivalences
@pytest.mark.parametrize('kw', KINDS, ids=KIND_IDS)
def test_one_segment_without_memory_is_the_decoder(kw):
    long_m, seg = pair(**kw)
    tok, attr = data(T=8)
    for m, mc in ((seg, MemoryConfig('full', 0)), (seg, MemoryConfig('two_scale', 20, 5)), (identity_codes(seg), MemoryConfig('full', 20))):
        torch.testing.assert_close(RecurrentLM(m, mc)(tok, attr)[0], seg(tok, attr), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kw', KINDS, ids=KIND_IDS)
@pytest.mark.parametrize('T', [5, 8])
def test_streaming_with_enough_memory_is_one_long_causal_pass(kw, T):
    long_m, seg = pair(**kw)
    tok, attr = data(T=30)
    ref = long_m(tok, attr)
    out, states = stream(RecurrentLM(seg, MemoryConfig('full', 30)), tok, attr, T)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # low-rank codes at full rank, set to the identity, change nothing
    torch.testing.assert_close(stream(RecurrentLM(identity_codes(seg), MemoryConfig('full', 30)), tok, attr, T)[0], ref, rtol=1e-5, atol=1e-5)


def txl_reference(model, tokens, T, mem_len):
    """Transformer-XL recurrence written independently: each layer's memory holds its *input hidden states*,
    updated by kimiyoung/transformer-xl's `_update_mems` (one mem_len for all layers), and keys/values are
    recomputed from them; attention is a loop over heads with RoPE as complex rotation at absolute positions."""
    c = model.cfg
    H, G, dh, L = c.n_head, c.n_kv_head, c.head_dim, c.n_layer
    B, N = tokens.shape
    inv = c.rope_base ** (-torch.arange(0, dh, 2).float() / dh)  # (dh/2,)

    def rot(u, pos):  # u (B, n, S, dh) at positions pos (S,)
        z = torch.complex(u[..., :dh // 2], u[..., dh // 2:])
        z = z * torch.polar(torch.ones(len(pos), dh // 2), pos[:, None].float() * inv)  # (S, dh/2)
        return torch.cat([z.real, z.imag], -1)

    def update_mems(hids, mems, qlen, mlen):  # as in mem_transformer.py (ext_len = 0), batch-major
        with torch.no_grad():
            end_idx = mlen + max(0, qlen)
            beg_idx = max(0, end_idx - mem_len)
            return [torch.cat([m, h], 1)[:, beg_idx:end_idx].detach() for m, h in zip(mems, hids)]

    mems = [torch.zeros(B, 0, c.d_model) for _ in range(L + 1)]
    outs = []
    for s in range(0, N, T):
        x = model.embed(tokens[:, s:s + T]); qlen, mlen = x.shape[1], mems[0].shape[1]
        hids = [x]
        pos = torch.arange(s - mlen, s + qlen)  # absolute positions of [memory | segment]
        for i, blk in enumerate(model.blocks):
            h = blk.norm1(torch.cat([mems[i], x], 1))  # (B, M+T, d)
            Wt = blk.attn.qkv.weight
            q = (h[:, mlen:] @ Wt[:H * dh].T).view(B, qlen, H, dh).transpose(1, 2)  # (B, H, T, dh)
            k = (h @ Wt[H * dh:H * dh + G * dh].T).view(B, -1, G, dh).transpose(1, 2)  # (B, G, M+T, dh)
            v = (h @ Wt[H * dh + G * dh:H * dh + 2 * G * dh].T).view(B, -1, G, dh).transpose(1, 2)
            q, k = rot(q, pos[mlen:]), rot(k, pos)
            heads = []
            for hd in range(H):
                g = hd // (H // G)
                sc = q[:, hd] @ k[:, g].transpose(1, 2) / dh ** 0.5  # (B, T, M+T)
                sc = sc.masked_fill(pos[None, :] > pos[mlen:, None], float('-inf'))
                heads.append(sc.softmax(-1) @ v[:, g])  # (B, T, dh)
            x = x + blk.attn.out(torch.cat(heads, -1))
            x = x + blk.mlp(blk.norm2(x))
            hids.append(x)
        outs.append(model.head(model.norm(x)))
        mems = update_mems(hids, mems, qlen, mlen)
    return torch.cat(outs, 1)


@pytest.mark.parametrize('kw', KINDS[:2], ids=KIND_IDS[:2])
@pytest.mark.parametrize('T, mem_len', [(4, 4), (5, 12), (8, 3)])
def test_uniform_horizons_are_transformer_xl(kw, T, mem_len):
    _, seg = pair(**kw)
    tok, _ = data(T=29)
    with torch.no_grad():
        ref = txl_reference(seg, tok, T, mem_len)
        out, _ = stream(RecurrentLM(seg, MemoryConfig('full', mem_len)), tok, None, T)
        also, _ = stream(RecurrentLM(seg, MemoryConfig('custom', horizons=(mem_len,) * 3)), tok, None, T)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(also, out)


def test_max_memory_is_a_shorter_horizon():
    _, seg = pair()
    tok, _ = data(T=40)
    capped, _ = stream(RecurrentLM(seg, MemoryConfig('two_scale', 20, 6)), tok, None, 8, max_memory=10)
    short, _ = stream(RecurrentLM(seg, MemoryConfig('custom', horizons=(10, 6, 6))), tok, None, 8)
    torch.testing.assert_close(capped, short)
    reset, _ = stream(RecurrentLM(seg, MemoryConfig('full', 20)), tok, None, 8, max_memory=0)
    alone = torch.cat([seg(tok[:, s:s + 8]) for s in range(0, 40, 8)], 1)  # every segment on its own
    torch.testing.assert_close(reset, alone, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- horizons, resets, receptive field, bytes
@pytest.mark.parametrize('mc, kv_rank', [(MemoryConfig('two_scale', 13, 3, 2), None), (MemoryConfig('ascending', 11), None),
                                         (MemoryConfig('binary', 9, layers=(1,)), None), (MemoryConfig('descending', 10), 8)],
                         ids=['two_scale', 'ascending', 'binary', 'desc-lowrank'])
def test_memory_never_exceeds_its_horizon(mc, kv_rank):
    _, seg = pair(kv_rank=kv_rank)
    rlm = RecurrentLM(seg, mc)
    tok, _ = data(T=60)
    T = 7
    _, states = stream(rlm, tok, None, T)
    for i, st in enumerate(states):
        seen = min((i + 1) * T, 60)
        assert st.lengths == [min(h, seen) for h in rlm.horizons]
        assert all(not t.requires_grad for t in st.k + st.v)  # detached
        for l, h in enumerate(rlm.horizons):  # the entries kept are the most recent h positions
            if st.lengths[l]: assert st.memory_positions(l)[0, 0] == seen - min(h, seen)


def test_receptive_field_numbers():
    rf = receptive_field((8, 8, 8, 8), 8)
    assert rf.min_reach.tolist() == [8, 16, 24, 32] and rf.max_reach.tolist() == [15, 23, 31, 39]
    rf = receptive_field((24, 8, 8), 8)  # two-scale: the long window is inherited upwards
    assert rf.max_reach.tolist() == [31, 39, 47]
    assert receptive_field((0, 0, 24), 8).max_reach.tolist() == [7, 7, 31]  # top-layer memory helps the top layer only


@pytest.mark.parametrize('name', ['full', 'two_scale', 'selective', 'ascending', 'perceiver_ar', 'fhcr_lowrank', 'fhcr_gqa', 'fhcr_askvhs'])
def test_measured_state_bytes_equal_the_accounting(name):
    over, mc = dsmr_variant(name, 3, 4, 32, long=12, short=4, n_long=1)
    cfg = ModelConfig(11, **{**TINY, **over}, max_seq_len=8)
    rlm = RecurrentLM(MusicTransformer(cfg).eval(), mc)
    tok, attr = data(T=32)
    _, states = stream(rlm, tok, attr, 8)
    assert states[-1].nbytes == rlm.memory_bytes(batch=2) == memory_bytes(cfg, mc, batch=2)
    if name.startswith('fhcr'):  # compressed full horizon at half the bytes of full memory
        assert 2 * memory_bytes(cfg, mc) == memory_bytes(ModelConfig(11, **TINY), MemoryConfig('full', 12))
    assert memory_bytes(cfg, mc, torch.bfloat16) * 2 == memory_bytes(cfg, mc)


@pytest.mark.parametrize('freeze', [True, False], ids=['frozen-codec', 'trainable-codec'])
def test_gradients_stay_inside_the_segment(freeze):
    _, seg = pair(kv_rank=16)
    rlm = RecurrentLM(seg, MemoryConfig('full', 16), freeze_codec=freeze).train()
    tok, _ = data(T=24)
    st = None
    for s in range(0, 24, 8):  # a backward per segment: the memory holds no graph of earlier segments
        lo, st = rlm(tok[:, s:s + 8], state=st)
        F.cross_entropy(lo.flatten(0, 1), tok[:, s:s + 8].flatten()).backward()
    codec = [p for b in rlm.model.blocks for p in b.attn.codec.parameters()]
    assert all(p.requires_grad != freeze and (p.grad is None) == freeze for p in codec)  # frozen: no gradient; else it learns through the block's own keys
    assert all(b.attn.qkv.weight.grad is not None and b.attn.qkv.weight.grad.abs().sum() > 0 for b in rlm.model.blocks)  # the projections before it learn


@pytest.mark.parametrize('freeze', [True, False], ids=['frozen-codec', 'trainable-codec'])
def test_stored_codes_decode_as_when_written(freeze):
    "A code written into the memory, read back after several optimizer steps: the frozen codec expands it to the same keys and values."
    torch.manual_seed(0)
    m = MusicTransformer(ModelConfig(16, d_model=32, n_head=4, n_layer=2, max_seq_len=8, kv_rank=8, attention='gqa', n_kv_head=2))
    rlm = RecurrentLM(m, MemoryConfig('full', 16), freeze_codec=freeze)
    G, before = m.cfg.n_kv_head, {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        _, st = rlm(copy_task_pieces(2, length=8, seed=5)[0][None])
        written = [b.attn.codec.decode(k, v, G) for b, k, v in zip(m.blocks, st.k, st.v)]
    cfg = TrainConfig(max_steps=6, batch_size=4, lr=1e-2, warmup_steps=1, weight_decay=0.1, eval_every=0, log_every=6, device='cpu', progress=False)
    Trainer(rlm, PieceStreams(copy_task_pieces(16, seed=1), 4, 8).batch_at, cfg, loss_fn=StreamLoss()).fit()
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    with torch.no_grad(): read = [b.attn.codec.decode(k, v, G) for b, k, v in zip(m.blocks, st.k, st.v)]
    codec_keys = {k for k in before if '.codec.' in k}
    assert 'blocks.0.attn.qkv.weight' in changed and len(codec_keys) == 8  # the model trained; 2 layers x 4 codec matrices
    if freeze:
        assert not changed & codec_keys  # neither the optimizer nor weight decay touched the codec
        for (k0, v0), (k1, v1) in zip(written, read): assert torch.equal(k0, k1) and torch.equal(v0, v1)
    else:
        assert codec_keys <= changed
        assert max(float((k0 - k1).abs().max()) for (k0, _), (k1, _) in zip(written, read)) > 1e-3  # the basis drifted under the stored code


# ---------------------------------------------------------------- streams, loss, trainer
def test_piece_streams_cover_every_target_once_and_are_deterministic():
    rng = np.random.default_rng(0)
    pieces = [rng.integers(1, 50, n) for n in (30, 7, 18, 2, 44)]
    for B, T in [(1, 8), (2, 5), (3, 16)]:
        ps = PieceStreams(pieces, B, T, shuffle=False, loop=False)
        bs = list(ps)
        assert len(bs) == len(ps)
        tgt = torch.cat([b['tokens'][:, 1:] for b in bs]).flatten()
        assert sorted(tgt[tgt > 0].tolist()) == sorted(int(t) for p in pieces for t in p[1:])
        assert bs[0]['reset'].all()
        assert sum(int(b['reset'].sum()) for b in bs) >= len(pieces)
    tr1, tr2 = PieceStreams(pieces, 2, 8, seed=3), PieceStreams(pieces, 2, 8, seed=3)
    late = tr2.batch_at(40)  # built in another order, the same timeline
    assert all(torch.equal(tr1.batch_at(s)['tokens'], tr2.batch_at(s)['tokens']) for s in range(41))
    assert torch.equal(tr1.batch_at(40)['tokens'], late['tokens'])
    other = PieceStreams(pieces, 2, 8, seed=4); other.batch_at(40)
    assert other.ids != tr1.ids  # another seed, another order of pieces
    with pytest.raises(TypeError, match='loop'): iter(tr1)


def test_piece_streams_pieces_run_whole_and_in_order():
    pieces = [np.arange(100 * i + 1, 100 * i + 1 + n) for i, n in enumerate((23, 9, 41))]
    ps = PieceStreams(pieces, 2, 4, seed=0)
    for b in range(2):  # consecutive segments of a stream continue each other until a reset
        prev = None
        for s in range(60):
            bt = ps.batch_at(s)
            row, reset = bt['tokens'][b], bool(bt['reset'][b])
            if prev is not None and not reset: assert row[0] == prev[-1]
            if reset: assert row[0] % 100 == 1  # a piece starts at its first token
            prev = row
    ps = PieceStreams(pieces, 1, 4, max_len=10, shuffle=False, loop=False)
    assert len(ps) == 3 * 3 - 1  # pieces cut to 10, 9, 10 tokens: 3 + 2 + 3 segments


def test_stream_loss_equals_one_long_pass():
    long_m, seg = pair()
    piece, _ = data(B=1, T=45, seed=7)
    r = evaluate(RecurrentLM(seg, MemoryConfig('full', 48)), PieceStreams([piece[0]], 1, 8, loop=False), StreamLoss())
    with torch.no_grad(): nll, n = lm_loss(long_m, {'tokens': piece})
    assert r['tokens'] == int(n) and r['total_nll'] == pytest.approx(float(nll), rel=1e-5)
    # pieces batched in two streams and padded give the same total as one at a time
    pieces = [data(B=1, T=n, seed=s)[0][0] for s, n in ((8, 21), (9, 13), (10, 30))]
    rlm = RecurrentLM(seg, MemoryConfig('two_scale', 16, 4))
    both = evaluate(rlm, PieceStreams(pieces, 2, 8, loop=False), StreamLoss())
    one = [evaluate(rlm, PieceStreams([p], 1, 8, loop=False), StreamLoss()) for p in pieces]
    assert both['tokens'] == sum(o['tokens'] for o in one)
    assert both['total_nll'] == pytest.approx(sum(o['total_nll'] for o in one), rel=1e-5)


def make_trainer(ckpt_dir, init_seed=0, steps=8):
    torch.manual_seed(init_seed)
    m = MusicTransformer(ModelConfig(16, d_model=32, n_head=2, n_layer=2, max_seq_len=8, dropout=0.1, kv_rank=8))
    rlm = RecurrentLM(m, MemoryConfig('two_scale', 16, 8))
    cfg = TrainConfig(max_steps=steps, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=4, eval_batches=0, log_every=2,
                      ckpt_dir=str(ckpt_dir), device='cpu', deterministic=True, progress=False)
    return Trainer(rlm, PieceStreams(copy_task_pieces(8, length=30, seed=1), 4, 8, seed=2).batch_at, cfg, loss_fn=StreamLoss(),
                   val_batches=list(PieceStreams(copy_task_pieces(2, length=30, seed=3), 2, 8, loop=False)), eval_loss_fn=StreamLoss())


def test_training_resumes_exactly_with_the_memory(tmp_path):
    straight = make_trainer(tmp_path / 'a'); straight.fit()
    make_trainer(tmp_path / 'b').fit(stop_at=5)  # the cut falls inside pieces: the memory must come back
    ck = torch.load(tmp_path / 'b' / 'last.pt', weights_only=True)
    assert ck['ranks'][0]['loss_fn']['state']['pos'].tolist() != [0, 0, 0, 0]
    resumed = make_trainer(tmp_path / 'b', init_seed=99)
    resumed.fit(resume=True)
    for k, w in straight.model.state_dict().items(): assert torch.equal(w, resumed.model.state_dict()[k]), k
    assert [(r['step'], r['train_loss'], r['val_loss']) for r in resumed.history] == \
           [(r['step'], r['train_loss'], r['val_loss']) for r in straight.history]


def test_run_variant_in_a_fresh_process(tmp_path):
    torch.save({'train': copy_task_pieces(6, length=40, seed=1), 'valid': copy_task_pieces(1, length=40, seed=2)}, tmp_path / 'data.pt')
    over, mc = dsmr_variant('fhcr_lowrank', 2, 2, 32, long=16, short=8, n_long=1)
    spec = dict(name='fhcr_lowrank', model=dict(vocab_size=16, d_model=32, n_head=2, n_layer=2, max_seq_len=8, **over),
                memory=asdict(mc), seg_len=8, batch=2, val_batch=1, distances=[0, 8, 16], data=str(tmp_path / 'data.pt'),
                train=dict(max_steps=6, batch_size=2, warmup_steps=1, eval_every=3, eval_batches=0, log_every=2, device='cpu', progress=False))
    (tmp_path / 'spec.json').write_text(json.dumps(spec))
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    r = subprocess.run([sys.executable, '-m', 'sage_paper.dsmr_study', str(tmp_path / 'spec.json'), str(tmp_path / 'out.json')],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / 'out.json').read_text())
    assert res['horizons'] == '16/16' and res['kv_rank'] == 16
    assert res['memory_bytes'] == res['state_bytes_measured'] == 2 * 16 * 2 * 16 * 4
    assert res['peak_mem_mb'] > 0 and res['tokens_per_s'] > 0 and math.isfinite(res['best_val_ppl'])
    assert res['peak_mem_delta_mb'] >= 0 and res['peak_mem_mb'] < 2000  # this process's own peak, not the parent's
    assert [u['distance'] for u in res['utilization']] == [0, 8, 16] and abs(res['utilization'][-1]['loss_increase']) < 1e-9
    assert len([h for h in res['history'] if h['val_loss'] is not None]) == 2
    assert res['convergence']['best_step'] in (3, 6) and res['history_phase1'] == [] and res['tokens_trained'] == 6 * 2 * 8  # no first phase
    bad = subprocess.run([sys.executable, '-m', 'sage_paper.dsmr_study', 'only_one_arg'], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and 'usage' in bad.stderr


def test_first_phase_trains_at_its_own_rate():
    "`long_windows` runs at `phase['lr']` when given (the recurrent phase may then fine-tune at a lower rate): a rate of 1e-12 barely moves the decoder."
    from sage_paper.dsmr_study import long_windows
    torch.manual_seed(0)
    model = MusicTransformer(ModelConfig(16, d_model=32, n_head=2, n_layer=1, max_seq_len=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tcfg = TrainConfig(max_steps=1, lr=1e-2, warmup_steps=1, eval_every=0, device='cpu', progress=False)
    pieces, phase = copy_task_pieces(4, length=40, seed=1), dict(seg_len=16, steps=3, batch=2)
    moved = lambda: max(float((v - before[k]).abs().max()) for k, v in model.state_dict().items())
    long_windows(model, pieces, phase | dict(lr=1e-12), tcfg)
    assert moved() < 1e-10
    long_windows(model, pieces, phase, tcfg)   # the recurrent phase's rate
    assert moved() > 1e-3
