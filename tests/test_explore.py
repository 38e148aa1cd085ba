"Tests of sage_paper.explore: head sharing and cache bytes against the attention module, horizons against recurrence, BPE token views of a real chorale, and the widget builders headless."

import os
import re
import shutil

import numpy as np
import pytest
import torch

from sage_paper.attention import AttentionConfig, CausalSelfAttention, kv_cache_bytes_per_token, kv_projection_map
from sage_paper.model import ModelConfig
from sage_paper.recurrence import MemoryConfig, memory_bytes, receptive_field, dsmr_variant
from sage_paper.tokenizer import ATTRIBUTES, ATTR_COLORS, encode, decode, note_tuples, base_attribute
from sage_paper.explore import (VARIANT_NAMES, explorer_tokenizer, token_view, tokens_html, tokenization_explorer, head_sharing,
                                kv_cache_bytes, kv_projection_params, plot_head_sharing, attention_explorer, horizon_view,
                                plot_horizons, memory_explorer, small_model, continue_piece, playground, trained_model)


@pytest.fixture(scope='module')
def chorales():
    "Two real Bach chorales (music21 corpus, multi-track view): their manifest and scores."
    from sage_paper.data import load_corpus, read_midi
    man = load_corpus("music21-multitrack", composers=("bach",), max_per_composer=2, progress=False)
    assert len(man) == 2
    return man, [read_midi(p) for p in man.path]


@pytest.fixture(scope='module')
def bpe_tok(chorales):
    _, scores = chorales
    return explorer_tokenizer('REMI', len(explorer_tokenizer('REMI')) + 80, scores)


# ---- attention sharing ----

@pytest.mark.parametrize('H', [1, 4, 8, 16])
def test_head_sharing_mha_and_mqa(H):
    mha = head_sharing(H, H, 'gqa')
    assert mha.kv_head.tolist() == list(range(H)) and mha.attrs['n_kv_head'] == H
    assert head_sharing(H, 1, 'gqa').kv_head.tolist() == [0] * H
    assert head_sharing(H, 1, 'mha').kv_head.tolist() == list(range(H))  # 'mha' forces G = H
    assert head_sharing(H, H, 'mqa').kv_head.tolist() == [0] * H  # 'mqa' forces G = 1


@pytest.mark.parametrize('kind,G', [('gqa', 2), ('askvhs', 2), ('askvhs', 1), ('askvhs', 4)])
def test_head_sharing_per_attribute_is_the_implemented_projection(kind, G):
    df = head_sharing(8, G, kind)
    pm = kv_projection_map(AttentionConfig(d_model=512, n_head=8, n_kv_head=G, attention=kind))  # (n_attr, H)
    assert list(df.columns) == ['kv_head', *ATTRIBUTES]
    np.testing.assert_array_equal(df[list(ATTRIBUTES)].to_numpy(), pm.T.numpy())
    for a, name in enumerate(ATTRIBUTES):  # AS-KVHS: projection a*G + g(h); otherwise g(h) for every attribute
        assert df[name].tolist() == [a * G * (kind == 'askvhs') + g for g in df.kv_head]
    assert df.attrs['n_projections'] == G * (len(ATTRIBUTES) if kind == 'askvhs' else 1)


def test_head_sharing_errors_name_the_bad_input():
    with pytest.raises(ValueError, match='n_kv_head=3'): head_sharing(8, 3, 'gqa')
    with pytest.raises(ValueError, match='flash'): head_sharing(8, 2, 'flash')


@pytest.mark.parametrize('kind,H,G', [('mha', 8, 8), ('gqa', 8, 2), ('mqa', 8, 1), ('askvhs', 8, 2), ('askvhs', 6, 3), ('gqa', 12, 4)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_kv_cache_bytes_is_the_package_function(kind, H, G, dtype):
    cfg = AttentionConfig(d_model=H * 32, n_head=H, n_kv_head=G, attention=kind, n_layer=5)
    assert kv_cache_bytes(H, G, kind, head_dim=32, n_layer=5, dtype=dtype) == kv_cache_bytes_per_token(cfg, dtype)
    assert kv_cache_bytes(H, G, kind, 32, 5, dtype) == 5 * 2 * cfg.n_kv_head * 32 * (4 if dtype == torch.float32 else 2)


@pytest.mark.parametrize('kw', [dict(attention='mha', n_kv_head=4), dict(attention='gqa', n_kv_head=2), dict(attention='mqa', n_kv_head=1),
                                dict(attention='askvhs', n_kv_head=2), dict(attention='askvhs', n_kv_head=1, askvhs_rank=3)])
def test_kv_projection_params_match_the_module(kw):
    m = CausalSelfAttention(AttentionConfig(d_model=4 * 8, n_head=4, **kw))
    d = m.cfg.d_model
    have = m.qkv.weight.numel() - d * d + (m.attr_up.numel() if m.attr_up is not None else 0)  # all but the query rows
    assert kv_projection_params(4, kw['n_kv_head'], kw['attention'], head_dim=8, askvhs_rank=kw.get('askvhs_rank')) == have


def test_plot_head_sharing_draws_every_projection():
    fig = plot_head_sharing(8, 2, 'askvhs')
    assert len(fig.axes) == 2 and len(fig.axes[1].texts) == len(ATTRIBUTES) * 8
    assert {t.get_text() for t in fig.axes[1].texts} == {str(i) for i in range(16)}


# ---- memory horizons ----

@pytest.mark.parametrize('L,W,T', [(4, 192, 64), (3, 100, 30), (6, 512, 128)])
def test_horizon_view_full(L, W, T):
    v = horizon_view('full', n_layer=L, long=W, seg_len=T, n_head=4, d_model=64)
    assert v.horizon.tolist() == [W] * L
    want = memory_bytes(ModelConfig(1, d_model=64, n_head=4, n_layer=L), MemoryConfig('full', long=W))
    assert v.memory_bytes.sum() == want == v.attrs['total_bytes']
    assert len(set(v.memory_bytes)) == 1  # equal horizons, equal bytes per layer
    rf = receptive_field((W,) * L, T)
    assert v.min_reach.tolist() == rf.min_reach.tolist() and v.max_reach.tolist() == rf.max_reach.tolist()


@pytest.mark.parametrize('name', VARIANT_NAMES)
def test_horizon_view_every_variant_sums_to_memory_bytes(name):
    v = horizon_view(name, n_layer=4, long=192, short=64, n_long=1, seg_len=64, dtype=torch.bfloat16)
    over, mem = dsmr_variant(name, 4, 8, 512, 192, 64, 1)
    assert v.horizon.tolist() == list(mem.horizons_for(4))
    assert v.memory_bytes.sum() == memory_bytes(ModelConfig(1, d_model=512, n_head=8, n_layer=4, **over), mem, torch.bfloat16)
    assert ((v.memory_bytes == 0) == (v.horizon == 0)).all()


def test_horizon_view_errors_name_the_bad_input():
    with pytest.raises(ValueError, match='n_long=5'): horizon_view('two_scale', n_layer=4, n_long=5)
    with pytest.raises(ValueError, match='sliding'): horizon_view('sliding')


def test_plot_horizons_one_panel_per_view():
    fig = plot_horizons({'full': horizon_view('full'), 'two_scale': horizon_view('two_scale')})
    assert len(fig.axes) == 2 and 'budget 768' in fig.axes[0].get_title() and 'budget 384' in fig.axes[1].get_title()
    assert len(plot_horizons(horizon_view('none')).axes) == 1


# ---- tokens ----

def test_token_view_bpe_decodes_back_to_the_base_encoding(chorales, bpe_tok):
    _, scores = chorales
    base = explorer_tokenizer('REMI')
    inv = {i: t for t, i in base.vocab.items()}
    for sc in scores:
        base_names = [inv[int(i)] for i in encode(base, sc)]
        v = token_view(bpe_tok, sc, max_tokens=None)
        assert [p for ps in v.parts for p in ps] == base_names
        assert v.id.tolist() == encode(bpe_tok, sc).tolist() and len(v) == v.attrs['n_tokens'] < len(base_names)
        assert v.bpe.any() and (v.n_parts[v.bpe] >= 1).all() and (v.n_parts[~v.bpe] == 1).all()
        assert note_tuples(decode(bpe_tok, v.id.to_numpy())) == note_tuples(decode(base, encode(base, sc)))
        assert v.bar.is_monotonic_increasing and v.bar.max() + 1 == base_names.count('Bar_None')


def test_token_view_attributes_and_truncation(chorales, bpe_tok):
    _, scores = chorales
    v = token_view(bpe_tok, scores[0], max_tokens=25)
    assert len(v) == 25 and v.attrs['n_tokens'] > 25
    for r in v.itertuples():  # attribute_types' ids agree with the types of the spelt-out base tokens
        kinds = {base_attribute(p) for p in r.parts} or {'special'}
        assert r.attribute == (kinds.pop() if len(kinds) == 1 else 'compound')
    assert 'compound' in set(v.attribute) and 'pitch' in set(v.attribute)
    cp = token_view(explorer_tokenizer('CPWord'), scores[0], None)
    assert {'bar', 'time', 'compound'} <= set(cp.attribute)
    assert (cp.attribute[cp.token == 'Bar_None'] == 'bar').all()


def test_explorer_tokenizer_errors(chorales):
    _, scores = chorales
    with pytest.raises(ValueError, match="Octuple"): explorer_tokenizer('Octuple', 5000, scores)
    with pytest.raises(ValueError, match='vocab_size=5000'): explorer_tokenizer('REMI', 5000)
    with pytest.raises(ValueError, match='MIDI'): explorer_tokenizer('MIDI')


def test_tokens_html_one_colour_per_attribute_present(chorales, bpe_tok):
    _, scores = chorales
    for v in (token_view(bpe_tok, scores[0], 60), token_view(explorer_tokenizer('REMI'), scores[1], 30)):
        h = tokens_html(v)
        present = set(v.attribute)
        assert len(present) >= 3
        for a in ATTRIBUTES: assert (ATTR_COLORS[a] in h) == (a in present), a
        for a in present: assert f">{a}</span>" in h  # in the legend
        assert h.count("title='id ") == len(v) and h.count('outline:2px') == int(v.bpe.sum())


# ---- widgets, headless ----

def test_tokenization_explorer_responds(chorales):
    man, _ = chorales
    te = tokenization_explorer(man, vocab_sizes=(0, 460))
    out, c = te.outputs['html'], te.controls
    first = out.value
    assert 'REMI' in first and ATTR_COLORS['pitch'] in first
    c['vocab'].value = 460
    assert out.value != first and 'REMI</b> + BPE' in out.value
    c['piece'].value = man.piece_id.iloc[1]
    bpe_second = out.value
    c['kind'].value = 'Octuple'
    assert c['vocab'].disabled and 'Octuple' in out.value and out.value != bpe_second
    c['kind'].value, c['vocab'].value, c['piece'].value = 'REMI', 0, man.piece_id.iloc[0]
    assert out.value == first


def test_attention_explorer_responds():
    ae = attention_explorer(n_head=8, n_kv_head=2, attention='gqa')
    img, table, c = ae.outputs['image'], ae.outputs['table'], ae.controls
    png, tab = img.value, table.value
    assert png[:4] == b'\x89PNG' and str(kv_cache_bytes(8, 2, 'gqa')) in tab
    c['kind'].value = 'askvhs'
    assert img.value != png and str(kv_projection_params(8, 2, 'askvhs')) in table.value
    c['H'].value = 12
    assert list(c['G'].options) == [1, 2, 3, 4, 6, 12] and c['G'].value == 2
    c['kind'].value = 'mqa'
    assert c['G'].disabled and str(kv_cache_bytes(12, 1, 'mqa')) in table.value
    c['H'].value, c['kind'].value = 8, 'gqa'
    assert img.value == png and table.value == tab


def test_memory_explorer_responds():
    me = memory_explorer(variant='two_scale', n_layer=4, long=192, short=64, seg_len=64)
    img, table, c = me.outputs['image'], me.outputs['table'], me.controls
    png = img.value
    assert '50% of full memory' in table.value
    c['variant'].value = 'full'
    assert img.value != png and '100% of full memory' in table.value
    c['n_layer'].value = 6
    assert horizon_view('full', n_layer=6).to_html(index=False) in table.value
    c['variant'].value = 'two_scale'; c['n_long'].value = 7
    assert 'n_long=7' in table.value


def test_playground_generates_and_draws(chorales):
    man, _ = chorales
    pg = playground(pieces=man, prompt_tokens=40, max_new_tokens=24)
    img, info, c = pg.outputs['image'], pg.outputs['info'], pg.controls
    png = img.value
    assert 'prompt: 40 tokens' in info.value
    c['run'].click()
    ids = pg.state['ids']
    assert img.value != png and len(ids) == 64 and (ids[:40] == pg.state['prompt']).all()
    assert pg.state['score'].note_num() > 0
    c['seed'].value = 5; c['top_k'].value = 5; c['run'].click()
    assert (pg.state['ids'] != ids).any() and 'top-k=5' in info.value
    c['piece'].value = man.piece_id.iloc[1]
    assert 'prompt: 40 tokens' in info.value and img.value != png
    assert (pg.state['prompt'] == encode(explorer_tokenizer('REMI'), chorales[1][1])[:40]).all()


def test_playground_listen_button_renders_the_generated_score(chorales):
    "Listen renders the score on screen (the last generated one) through sage_paper.listen.audio, offline."
    import base64, io, re, wave
    man, _ = chorales
    pg = playground(pieces=man, prompt_tokens=32, max_new_tokens=16, max_audio_seconds=3)
    pg.controls['run'].click()
    sc = pg.state['score']
    pg.controls['listen'].click()
    outs = pg.outputs['audio'].outputs
    assert len(outs) == 1 and 'no audio' not in pg.outputs['info'].value, pg.outputs['info'].value
    html = outs[0]['data']['text/html']
    wav = base64.b64decode(re.search(r'data:audio/wav;base64,([A-Za-z0-9+/=]+)', html).group(1))
    with wave.open(io.BytesIO(wav)) as w: secs = w.getnframes() / w.getframerate()
    assert 0.5 < secs <= 3.0 + 0.05, secs   # the score, cut at max_audio_seconds
    assert sc.note_num() > 0
    pg.controls['seed'].value = 9; pg.controls['run'].click()
    assert pg.outputs['audio'].outputs == ()   # a new score clears the audio of the old one


def test_continue_piece_and_playground_errors(chorales):
    man, scores = chorales
    tok = explorer_tokenizer('REMI')
    model = small_model(tok, max_seq_len=64)
    prompt = encode(tok, scores[0])[:40]
    out = continue_piece(model, tok, prompt, 24, seed=2)
    assert (out == continue_piece(model, tok, prompt, 24, seed=2)).all() and (out[:40] == prompt).all()
    with pytest.raises(ValueError, match='max_new_tokens'): continue_piece(model, tok, prompt, 0)
    with pytest.raises(ValueError, match='bars'): continue_piece(model, tok, prompt, 8, bars=-2)
    with pytest.raises(ValueError, match='prompt'): continue_piece(model, tok, prompt[:0], 8)
    with pytest.raises(ValueError, match='vocabulary'): playground(small_model(explorer_tokenizer('TSD')), tok, man)


def test_continue_piece_goes_past_the_context_and_reads_a_long_prompt_through_its_last_window(chorales):
    "A 64-token context: 40 + 100 tokens slide the window (the first 24 new tokens are those of a continuation that fits), and a 150-token prompt works."
    _, scores = chorales
    tok = explorer_tokenizer('REMI')
    model = small_model(tok, max_seq_len=64)
    ids = encode(tok, scores[0])
    long = continue_piece(model, tok, ids[:40], 100, seed=2)
    assert long.shape == (140,) and (long[:64] == continue_piece(model, tok, ids[:40], 24, seed=2)).all()
    assert tok.tokens_errors(long.tolist()) == 0
    out = continue_piece(model, tok, ids[:150], 30, seed=0)
    assert out.shape == (180,) and (out[:150] == ids[:150]).all() and tok.tokens_errors(out.tolist()) == 0


def test_continue_piece_by_bars_flat_and_pooled(chorales):
    "bars=k: the tokens of an unbounded continuation with the same seed, cut just before the k-th bar after the prompt's last one ends."
    from sage_paper.evaluate import token_bars
    from sage_paper.explore import load_checkpoint
    _, scores = chorales
    for name in ('MHA', 'CPWord (pooled)'):
        ck = load_checkpoint(name)
        p = encode(ck.tok, scores[1])[:30]
        two = continue_piece(ck.model, ck.tok, p, 600, top_p=0.95, seed=3, bars=2)
        more = continue_piece(ck.model, ck.tok, p, len(two) - 30 + 1, top_p=0.95, seed=3)
        tb = token_bars(ck.tok, more)
        assert (more[:len(two)] == two).all() and (tb[len(two) - 1], tb[len(two)]) == (tb[29] + 2, tb[29] + 3), name
        assert two.shape[1:] == p.shape[1:]   # (T + n,) flat, (T + n, F) pooled


def test_playground_picks_among_models_and_names_a_mismatched_one(chorales):
    man, _ = chorales
    tok = explorer_tokenizer('REMI')
    models = {'small': small_model(tok, max_seq_len=96), 'other seed': small_model(tok, seed=1, max_seq_len=200)}
    pg = playground(models, tok, man, prompt_tokens=200, max_new_tokens=200)
    c = pg.controls
    assert c['model'].options == ('small', 'other seed') and c['prompt'].max == 192 and c['new'].max == 384  # the chosen model's context
    c['run'].click(); a = pg.state['ids']
    c['model'].value = 'other seed'; c['run'].click()
    assert (pg.state['ids'] != a).any() and pg.outputs['info'].value.startswith('other seed:')
    assert (c['prompt'].max, c['new'].max, c['prompt'].value) == (400, 800, 192)  # a longer context: the sliders reach further
    with pytest.raises(ValueError, match="model 'tsd': its vocabulary"):
        playground({'ok': small_model(tok), 'tsd': small_model(explorer_tokenizer('TSD'))}, tok, man)


def test_trained_model_learns_the_chorales():
    tok = explorer_tokenizer('REMI')
    model, info = trained_model(tok, steps=60, max_per_composer=10)
    assert not model.training and next(model.parameters()).device.type == 'cpu'
    assert info['train_loss_last'] < np.log(len(tok)) - 2 and info['pieces'] == 10 and info['steps'] == 60
    assert np.isfinite(info['bits_per_note']) and info['bits_per_note'] > 0


def test_playground_engraves_the_continuation_and_shows_why_when_verovio_fails(chorales, monkeypatch):
    "Beside the piano roll: the prompt in black and the continuation in colour (verovio SVG); where verovio fails, the reason."
    import re
    from sage_paper import listen
    from sage_paper.listen import engraved_counts
    man, _ = chorales
    pg = playground(pieces=man, prompt_tokens=40, max_new_tokens=24)
    assert pg.controls['model'].value == 'MHA' and 'untrained' in pg.controls['model'].options   # the committed checkpoints first
    pg.controls['run'].click()
    k = engraved_counts(re.search(r'<svg.*</svg>', pg.outputs['notation'].value, re.S).group(0))
    assert 0 < k['colored'] < k['notes'], k
    def broken(*a, **kw): raise RuntimeError("verovio refused the MusicXML")
    monkeypatch.setattr(listen, '_svg', broken)   # the engraving child is forked: it sees the patch
    png = pg.outputs['image'].value
    pg.controls['seed'].value = 1; pg.controls['run'].click()
    html = pg.outputs['notation'].value
    assert 'No engraved notation' in html and 'verovio refused the MusicXML' in html and '<svg' not in html, html[:300]
    assert pg.outputs['image'].value != png and pg.outputs['image'].value[:4] == b'\x89PNG'   # the piano roll is still drawn


def test_playground_gives_each_checkpoint_its_own_tokenizer_and_context(chorales):
    from sage_paper.evaluate import token_bars
    from sage_paper.explore import load_checkpoint
    man, scores = chorales
    bpe, mha = load_checkpoint('BPE 2k'), load_checkpoint('MHA')
    pg = playground(pieces=man, prompt_tokens=30, max_new_tokens=20, engrave=False)
    c = pg.controls
    assert c['prompt'].max == 2 * mha.model.cfg.max_seq_len and pg.outputs['notation'].value == ''
    c['model'].value = 'BPE 2k'
    assert c['prompt'].max == 2 * bpe.model.cfg.max_seq_len and (pg.state['prompt'] == encode(bpe.tok, scores[0])[:30]).all()
    c['run'].click()
    assert pg.outputs['info'].value.startswith('BPE 2k: prompt') and pg.state['ids'].max() >= len(bpe.tok._vocab_base)  # learned tokens
    c['bars'].value, c['new'].value = 2, c['new'].max; c['run'].click()   # two bars after the prompt's last one
    tb = token_bars(bpe.tok, pg.state['ids'])
    assert 'bars=2' in pg.outputs['info'].value and tb[-1] == tb[29] + 2 and len(pg.state['ids']) < 30 + c['new'].max
    one = playground(mha, pieces=man, prompt_tokens=20, max_new_tokens=10, engrave=False)   # a Checkpoint alone
    assert one.controls['model'].options == ('model',) and one.models['model'][1] is mha.tok


# ---- checkpoints that were damaged or tampered with ----

class _Touch:
    "Unpickling this would create a file: proof that a tampered model.pt was run."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (os.system, (f"touch '{self.path}'",))


@pytest.fixture()
def ckpt(tmp_path):
    "A copy of the committed MHA checkpoint, and the BPE one (a different vocabulary), to damage."
    from sage_paper.explore import checkpoint_dir
    for f in ('mha', 'bpe-2k'): shutil.copytree(checkpoint_dir() / f, tmp_path / f)
    return tmp_path / 'mha'


def _refused(folder, *, like, exc=ValueError):
    "load_checkpoint's error for `folder`: it names the folder, matches `like`, and never suggests unsafe loading."
    from sage_paper.explore import load_checkpoint
    with pytest.raises(exc) as e: load_checkpoint(folder)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {folder}: ") and re.search(like, msg), msg
    assert 'weights_only' not in msg and 'trusted source' not in msg, msg        # torch's advice is not passed on,
    assert e.value.__context__ is None or e.value.__suppress_context__, msg      # nor shown in the traceback
    return msg


def test_a_tampered_model_pt_is_refused_never_run(ckpt, tmp_path):
    from sage_paper.explore import load_checkpoint
    assert load_checkpoint(ckpt).name == 'MHA'                                   # the copy itself loads
    proof = tmp_path / 'ran'
    state = torch.load(ckpt / 'model.pt', weights_only=True)
    torch.save({**state, 'extra': _Touch(proof)}, ckpt / 'model.pt')            # real weights, plus code to run
    _refused(ckpt, like=r"model\.pt was not loaded: it refers to (posix|nt|os)\.system, which is code, not weights")
    assert not proof.exists()


def test_a_damaged_or_foreign_model_pt_names_the_folder(ckpt, tmp_path):
    weights = (ckpt / 'model.pt').read_bytes()
    (ckpt / 'model.pt').write_bytes(weights[:len(weights) // 2])                 # cut short in a copy
    _refused(ckpt, like=r"model\.pt was not loaded: RuntimeError: PytorchStreamReader failed")
    (ckpt / 'model.pt').write_bytes(b"not weights at all\n" * 10)
    _refused(ckpt, like=r"model\.pt was not loaded: UnpicklingError\. A checkpoint's model\.pt holds tensors only")
    shutil.copy(tmp_path / 'bpe-2k' / 'model.pt', ckpt / 'model.pt')            # another checkpoint's weights
    _refused(ckpt, like=r"model\.pt does not fit the model that card\.json describes \(Error\(s\) in loading state_dict .*size mismatch")
    (ckpt / 'model.pt').unlink()
    _refused(ckpt, like=r"model\.pt is missing", exc=FileNotFoundError)


def test_a_wrong_card_or_tokenizer_names_the_folder_and_the_file(ckpt, tmp_path):
    import json
    from sage_paper.explore import list_checkpoints
    card = json.loads((ckpt / 'card.json').read_text())
    (ckpt / 'card.json').write_text(json.dumps(card)[:-40])
    _refused(ckpt, like=r"card\.json is not valid JSON")
    with pytest.raises(ValueError, match=f"checkpoint {ckpt}: card.json is not valid JSON"): list_checkpoints(tmp_path)   # the listing too
    (ckpt / 'card.json').write_text(json.dumps({**card, 'model_config': {**card['model_config'], 'n_heads': 8}}))
    _refused(ckpt, like=r"card\.json's model_config does not describe a model \(.*n_heads")
    (ckpt / 'card.json').write_text(json.dumps({k: v for k, v in card.items() if k != 'model_config'}))
    _refused(ckpt, like=r"card\.json has no `model_config`")
    (ckpt / 'card.json').write_text(json.dumps(card))
    tok = (ckpt / 'tokenizer.json').read_text()
    (ckpt / 'tokenizer.json').write_text(tok[:len(tok) // 2])
    _refused(ckpt, like=r"^checkpoint \S+: tokenizer\.json: not a saved tokenizer, the file is not valid JSON")
    shutil.copy(tmp_path / 'bpe-2k' / 'tokenizer.json', ckpt / 'tokenizer.json')   # another checkpoint's tokenizer
    _refused(ckpt, like=r"the model's vocabulary 381 \(card\.json, model\.pt\) does not match tokenizer\.json's \d+")
