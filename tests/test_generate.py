"KV-cached generation: equivalence with uncached decoding, sampling rules, grammar masks (REMI, BPE, CPWord, Octuple), errors."
import numpy as np
import pytest
import torch

from sage_paper.generate import (Decoder, SamplingConfig, TokenGrammar, filter_logits, generate, grammar_for, hf_twin,
                                 remi_streams, sample_logits)
from sage_paper.model import ModelConfig, MusicTransformer
from sage_paper.tokenizer import attribute_types, decode, encode, spec_for, token_parts
from sage_paper.data import read_midi

TINY = dict(d_model=32, n_head=4, n_layer=2, max_seq_len=640)
KINDS = [("mha", 4, {}), ("gqa", 2, {}), ("mqa", 1, {}), ("askvhs", 2, {}), ("askvhs", 1, {}), ("askvhs", 2, dict(askvhs_rank=4))]


def perturbed(cfg, seed=0):
    "A model moved off its initialization (unties the AS-KVHS attribute projections)."
    torch.manual_seed(seed)
    m = MusicTransformer(cfg).eval()
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def remi():
    return spec_for("music21-multitrack", "REMI").build()


# --- equivalence with uncached decoding -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,G,extra", KINDS, ids=[f"{k}{g}{'-r' if e else ''}" for k, g, e in KINDS])
@pytest.mark.parametrize("mode", ["eager", "static"])
@pytest.mark.parametrize("B", [1, 4])  # batch 1: gemv weight layout; batch 4: oneDNN-packed weights
def test_cached_logits_equal_uncached_forward_and_greedy_equals_reference_loop(kind, G, extra, mode, B):
    V = 50
    m = perturbed(ModelConfig(V, **TINY, attention=kind, n_kv_head=G, **extra))
    attr = torch.arange(V) % 8
    prompt = torch.randint(0, V, (B, 7), generator=torch.Generator().manual_seed(1))
    seq, logits = generate(m, prompt, 16, attr_of=attr, greedy=True, mode=mode, return_logits=True)
    assert seq.shape == (B, 23) and logits.shape == (B, 16, V)
    with torch.no_grad():
        full = m(seq[:, :-1], attr[seq[:, :-1]])[:, 6:]  # the logits of every generated position, without a cache
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=2e-5)
    ref = prompt
    with torch.no_grad():
        for _ in range(16): ref = torch.cat([ref, m(ref, attr[ref])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(seq, ref)


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_pooled_cached_logits_equal_uncached_forward(mode):
    m = perturbed(ModelConfig(0, **TINY, attention="askvhs", n_kv_head=2, field_vocab_sizes=(6, 9, 11)))
    prompt = torch.stack([torch.randint(0, v, (2, 5)) for v in (6, 9, 11)], -1)  # (B, T, F)
    seq, logits = generate(m, prompt, 10, greedy=True, mode=mode, return_logits=True)
    assert seq.shape == (2, 15, 3) and [l.shape for l in logits] == [(2, 10, 6), (2, 10, 9), (2, 10, 11)]
    with torch.no_grad(): full = m(seq[:, :-1])
    for got, want in zip(logits, full): torch.testing.assert_close(got, want[:, 4:], rtol=1e-4, atol=2e-5)


def test_decoder_is_reusable_and_modes_agree_when_sampling():
    m = perturbed(ModelConfig(40, **TINY, attention="askvhs", n_kv_head=2))
    attr, prompt = torch.arange(40) % 8, torch.randint(0, 40, (3, 5))
    cfg = SamplingConfig(temperature=1.2, top_k=25, top_p=0.9)
    eager = Decoder(m, 3, 40, "eager", cfg, attr_of=attr)
    static = Decoder(m, 3, 40, "static", cfg, attr_of=attr)
    for n in (12, 30, 3):  # the same decoders, several calls of different lengths
        a = eager(prompt, n, torch.Generator().manual_seed(n))
        b = static(prompt, n, torch.Generator().manual_seed(n))
        assert torch.equal(a, b) and a.shape == (3, 5 + n)
    assert static.cache.length == 5 + 3 - 1 and int(static.cache.pos) == 5 + 3 - 1


def test_compiled_body_gives_the_eager_tokens(remi):
    "mode='compile' (what cuda_graph_compiled captures on GPU) runs the torch.compile'd body: same tokens, grammar and sampling included."
    m = perturbed(ModelConfig(len(remi.vocab), **TINY, attention="askvhs", n_kv_head=2))
    prompt = torch.tensor([[remi.vocab["Bar_None"]]]).expand(3, 1)
    cfg, attr = SamplingConfig(top_p=0.9), attribute_types(remi)
    a, b = (Decoder(m, 3, 60, mode, cfg, TokenGrammar(remi), attr)(prompt, 40, torch.Generator().manual_seed(5)) for mode in ("eager", "compile"))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="onednn"): Decoder(m, 3, 60, "compile", cfg, attr_of=attr, weight_layout="onednn")


def test_graph_warm_up_leaves_no_trace(remi):
    "The warm-up steps run before a CUDA graph capture (here on CPU) must not change what is generated."
    m = perturbed(ModelConfig(len(remi.vocab), **TINY, attention="askvhs", n_kv_head=2))
    prompt = torch.tensor([[remi.vocab["Bar_None"]]]).expand(2, 1)
    cfg, attr = SamplingConfig(temperature=1.1), attribute_types(remi)
    plain = Decoder(m, 2, 50, "static", cfg, TokenGrammar(remi), attr)
    warmed = Decoder(m, 2, 50, "static", cfg, TokenGrammar(remi), attr)
    runner = warmed._runner
    def warm_then_run(room):
        fn = runner(room); warmed._warm_up(3); return fn
    warmed._runner = warm_then_run
    for n in (30, 49):
        assert torch.equal(plain(prompt, n, torch.Generator().manual_seed(n)), warmed(prompt, n, torch.Generator().manual_seed(n)))


# --- sampling rules -----------------------------------------------------------------------------------------------------

def test_top_k_1_and_tiny_top_p_are_greedy():
    m = perturbed(ModelConfig(60, **TINY, attention="gqa", n_kv_head=2))
    prompt = torch.randint(0, 60, (2, 4))
    greedy = generate(m, prompt, 20, greedy=True)
    assert torch.equal(generate(m, prompt, 20, top_k=1, temperature=2.0, generator=torch.Generator().manual_seed(3)), greedy)
    assert torch.equal(generate(m, prompt, 20, top_p=1e-8, generator=torch.Generator().manual_seed(4)), greedy)
    x = torch.randn(16, 60)
    assert torch.equal(sample_logits(x, SamplingConfig(top_k=1)), x.argmax(-1))


def test_seeds_make_sampling_reproducible():
    m = perturbed(ModelConfig(60, **TINY))
    prompt = torch.randint(0, 60, (2, 4))
    run = lambda s: generate(m, prompt, 30, temperature=1.5, top_p=0.95, generator=torch.Generator().manual_seed(s))
    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


def test_filters_keep_the_right_tokens():
    lg = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    assert filter_logits(lg, top_k=2).isfinite().tolist() == [[True, True, False, False, False]]
    p = lg.softmax(-1)[0]
    keep = filter_logits(lg, top_p=float(p[0] + p[1]) - 1e-4).isfinite()[0].tolist()
    assert keep == [True, True, False, False, False]
    # frequencies of the exponential race
    g = torch.Generator().manual_seed(0)
    ids = sample_logits(lg.expand(40000, 5), SamplingConfig(), g)
    np.testing.assert_allclose(torch.bincount(ids, minlength=5).float().div(40000).numpy(), p.numpy(), atol=0.01)


# --- grammar masks ------------------------------------------------------------------------------------------------------

def _untrained(V, **kw):
    torch.manual_seed(0)
    return MusicTransformer(ModelConfig(V, **TINY, **kw)).eval()


@pytest.mark.parametrize("kind", ["REMI", "TSD"])
def test_grammar_mask_never_yields_an_invalid_sequence(kind, tmp_path):
    tok = spec_for("music21-multitrack", kind).build()
    m = _untrained(len(tok.vocab), attention="askvhs", n_kv_head=2)
    attr = attribute_types(tok)
    start = torch.tensor([[tok.vocab["Bar_None" if kind == "REMI" else "Program_0"]]])
    for seed in range(3):
        ids = generate(m, start, 500, grammar=grammar_for(tok), attr_of=attr, generator=torch.Generator().manual_seed(seed))[0].tolist()
        assert tok.tokens_errors(ids) == 0
        score = decode(tok, ids)
        score.dump_midi(tmp_path / f"{kind}{seed}.mid")
        assert read_midi(tmp_path / f"{kind}{seed}.mid").note_num() == score.note_num() > 0
    free = generate(m, start, 500, attr_of=attr, generator=torch.Generator().manual_seed(0))[0].tolist()
    assert tok.tokens_errors(free) > 0.2  # without the mask, most successions are invalid


def test_grammar_continues_real_pieces_validly_in_a_batch(small_corpus, remi):
    "Prompts cut from real pieces (equal length, a batch), continued with the mask: prompt + continuation stays valid."
    paths = small_corpus.multitrack_path.tolist()[:4]
    prompts = torch.stack([torch.from_numpy(encode(remi, read_midi(p))[:37]) for p in paths])  # (4, 37): cut mid-bar
    m = _untrained(len(remi.vocab), attention="gqa", n_kv_head=2)
    out = generate(m, prompts, 200, grammar=TokenGrammar(remi), generator=torch.Generator().manual_seed(0), top_p=0.9)
    for row in out.tolist():
        assert remi.tokens_errors(row) == 0
        assert decode(remi, row).note_num() > 0


def test_grammar_handles_bpe_tokens(small_corpus):
    from sage_paper.bpe import view_words, train_bpe
    spec = spec_for("music21-multitrack", "REMI")
    tok = train_bpe(spec, view_words(small_corpus.assign(path=small_corpus.multitrack_path, split="train"), spec.build()), 500, cache=False)
    assert tok.is_trained and sum(len(p) > 1 for p in token_parts(tok)) > 50
    V = len(tok.vocab_model)
    m = _untrained(V, attention="askvhs", n_kv_head=2)
    bar = next(i for i, p in enumerate(token_parts(tok)) if p == ["Bar_None"])
    ids = generate(m, torch.tensor([[bar]]), 400, grammar=grammar_for(tok), attr_of=attribute_types(tok),
                   generator=torch.Generator().manual_seed(0))[0].tolist()
    assert tok.tokens_errors(ids) == 0 and decode(tok, ids).note_num() > 0


@pytest.mark.parametrize("kind", ["CPWord", "Octuple"])
def test_generated_pooled_tokens_decode_to_valid_midi(kind, small_corpus, tmp_path):
    tok = spec_for("music21-multitrack", kind).build()
    m = _untrained(0, attention="gqa", n_kv_head=2, field_vocab_sizes=tuple(len(v) for v in tok.vocab))
    prompt = torch.from_numpy(encode(tok, read_midi(small_corpus.multitrack_path.iloc[0]))[:6])[None]  # (1, 6, F)
    for seed in range(2):
        ids = generate(m, prompt, 300, grammar=grammar_for(tok), generator=torch.Generator().manual_seed(seed))[0].tolist()
        assert tok.tokens_errors(ids) == 0
        score = decode(tok, ids)
        score.dump_midi(tmp_path / f"{kind}.mid")
        assert read_midi(tmp_path / f"{kind}.mid").note_num() > 6
    free = generate(m, prompt, 300, generator=torch.Generator().manual_seed(0))[0].tolist()
    assert _invalid(tok, free)  # without the masks


def _invalid(tok, ids) -> bool:
    "MidiTok's checker finds errors in `ids`, or crashes on them (it does on some unmasked compound tokens)."
    try: return tok.tokens_errors(ids) > 0
    except (KeyError, ValueError, IndexError): return True


def test_grammar_rejects_what_it_does_not_support():
    from miditok import CPWord, TokenizerConfig
    with pytest.raises(ValueError, match="use_tempos"):
        grammar_for(CPWord(TokenizerConfig(use_programs=True, use_tempos=True)))
    with pytest.raises(ValueError, match="pooled"):
        TokenGrammar(spec_for("music21-multitrack", "Octuple").build())


# --- errors -------------------------------------------------------------------------------------------------------------

def test_errors_name_the_bad_parameter():
    m = _untrained(30, attention="askvhs", n_kv_head=2)
    attr, prompt = torch.arange(30) % 8, torch.randint(0, 30, (1, 5))
    with pytest.raises(ValueError, match="temperature"): generate(m, prompt, 4, attr_of=attr, temperature=0)
    with pytest.raises(ValueError, match="temperature"): generate(m, prompt, 4, attr_of=attr, temperature=-0.5)
    with pytest.raises(ValueError, match="top_p"): generate(m, prompt, 4, attr_of=attr, top_p=0.0)
    with pytest.raises(ValueError, match="top_p"): generate(m, prompt, 4, attr_of=attr, top_p=1.01)
    with pytest.raises(ValueError, match="top_k"): generate(m, prompt, 4, attr_of=attr, top_k=-1)
    with pytest.raises(ValueError, match="max_seq_len"): generate(m, torch.zeros(1, 641, dtype=torch.long), 4, attr_of=attr)
    with pytest.raises(ValueError, match="max_new_tokens"): generate(m, prompt, 640, attr_of=attr)
    with pytest.raises(ValueError, match="max_new_tokens"): generate(m, prompt, 0, attr_of=attr)
    with pytest.raises(ValueError, match="attr_of"): generate(m, prompt, 4)
    with pytest.raises(ValueError, match="mode"): generate(m, prompt, 4, attr_of=attr, mode="turbo")
    with pytest.raises(ValueError, match="CUDA"): generate(m, prompt, 4, attr_of=attr, mode="cuda_graph")
    with pytest.raises(ValueError, match="prompt"): generate(m, torch.zeros(1, 0, dtype=torch.long), 4, attr_of=attr)
    with pytest.raises(ValueError, match="token ids"): generate(m, prompt + 30, 4, attr_of=attr)
    dec = Decoder(m, 2, 20, attr_of=attr)
    with pytest.raises(ValueError, match="batch"): dec(prompt, 4)
    with pytest.raises(ValueError, match="weight_layout"): Decoder(m, 2, 20, attr_of=attr, weight_layout="blocked")


def test_hf_twin_is_equally_sized():
    cfg = ModelConfig(600, d_model=128, n_head=8, n_layer=2, attention="gqa", n_kv_head=2)
    twin = hf_twin(cfg)
    n = sum(p.numel() for p in twin.parameters())
    assert abs(n / MusicTransformer(cfg).num_params() - 1) < 0.005
    c = twin.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (2, 128, 8, 2, 600)


def test_remi_streams_split_and_attributes(small_corpus):
    man = small_corpus.assign(path=small_corpus.multitrack_path)
    if set(man.split) == {"train"}: man = man.assign(split=["train"] * (len(man) - 1) + ["valid"])
    st = remi_streams(man)
    assert len(st["train"]) + len(st["heldout"]) == len(man)
    assert len(st["attr"]) == len(st["tok"].vocab) and st["attr"].max() < 8


def test_hf_variants_limits_the_hugging_face_rows():
    from sage_paper.generate import DecodeBenchConfig, decode_benchmark
    bc = DecodeBenchConfig(d_model=32, n_layer=1, n_head=4, vocab_size=50, new_tokens=4, batches=(1,), repeats=1,
                           variants=("MHA", "GQA G=2"), modes=("ours_eager", "hf_generate_dynamic"), hf_variants=("GQA G=2",))
    df = decode_benchmark(bc, progress=False)
    assert sorted(zip(df.variant, df["mode"])) == [("GQA G=2", "hf_generate_dynamic"), ("GQA G=2", "ours_eager"), ("MHA", "ours_eager")]
    assert df.error.eq("").all()
