"""KV-cached generation beyond the notebook's checks: batch 1 and low-rank AS-KVHS against uncached decoding, pooled
decoding, the compiled step, graph warm-up, grammar masks on real music (REMI, BPE, CPWord, Octuple), errors.

`08_generate` checks every kind at batch 2 against the uncached forward and a recomputing loop, eager against static
sampling, top-k/top-p limits and seeds; those are not repeated here."""
import copy

import pytest
import torch

from sage_paper.generate import Decoder, SamplingConfig, filter_logits, generate
from sage_paper.tokenizer import TokenGrammar, grammar_for
from sage_paper.bpe import view_words, train_bpe
from sage_paper.model import ModelConfig, MusicTransformer
from sage_paper.tokenizer import attribute_types, decode, encode, spec_for, token_parts
from sage_paper.data import read_midi

TINY = dict(d_model=32, n_head=4, n_layer=2, max_seq_len=640)
KINDS = [("mha", 4, {}), ("gqa", 2, {}), ("mqa", 1, {}), ("askvhs", 2, {}), ("askvhs", 1, {}), ("askvhs", 2, dict(askvhs_rank=4))]


@pytest.fixture(scope="module")
def remi():
    return spec_for("music21-multitrack", "REMI").build()


# --- equivalence with uncached decoding -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,G,extra", KINDS, ids=[f"{k}{g}{'-r' if e else ''}" for k, g, e in KINDS])
@pytest.mark.parametrize("mode", ["eager", "static"])
def test_batch_1_cached_logits_equal_uncached_forward_and_greedy_equals_reference_loop(kind, G, extra, mode, perturbed):
    "Batch 1 takes paths batch 2 does not (AS-KVHS projects one token with one attribute's weights)."
    B = 1
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
def test_pooled_cached_logits_equal_uncached_forward(mode, perturbed):
    m = perturbed(ModelConfig(0, **TINY, attention="askvhs", n_kv_head=2, field_vocab_sizes=(6, 9, 11)))
    prompt = torch.stack([torch.randint(0, v, (2, 5)) for v in (6, 9, 11)], -1)  # (B, T, F)
    seq, logits = generate(m, prompt, 10, greedy=True, mode=mode, return_logits=True)
    assert seq.shape == (2, 15, 3) and [l.shape for l in logits] == [(2, 10, 6), (2, 10, 9), (2, 10, 11)]
    with torch.no_grad(): full = m(seq[:, :-1])
    for got, want in zip(logits, full): torch.testing.assert_close(got, want[:, 4:], rtol=1e-4, atol=2e-5)


def test_compiled_body_gives_the_eager_tokens(remi, perturbed):
    "mode='compile' (what cuda_graph_compiled captures on GPU) runs the torch.compile'd body: same tokens, grammar and sampling included."
    m = perturbed(ModelConfig(len(remi.vocab), **TINY, attention="askvhs", n_kv_head=2))
    prompt = torch.tensor([[remi.vocab["Bar_None"]]]).expand(3, 1)
    cfg, attr = SamplingConfig(top_p=0.9), attribute_types(remi)
    a, b = (Decoder(m, 3, 60, mode, cfg, TokenGrammar(remi), attr)(prompt, 40, torch.Generator().manual_seed(5)) for mode in ("eager", "compile"))
    assert torch.equal(a, b)


def assert_same_greedy_until_a_tie(ref, got, tol):
    """(tokens, logits) of two greedy decoders of one prompt: the logits agree within `tol` on every step up to and including
    the first step whose tokens differ; so the tokens can differ only after a near-tie (a top-2 gap of at most 2 tol)."""
    (ta, la), (tb, lb) = ref, got
    n = la.shape[1]
    differ = (ta[:, -n:] != tb[:, -n:]).any(0)  # (n,) over the batch's rows
    i = int(differ.nonzero()[0]) if differ.any() else n - 1
    torch.testing.assert_close(lb[:, :i + 1].float(), la[:, :i + 1].float(), rtol=0, atol=tol)
    return int(differ.any())


# one case per compiled code path (each compiles anew, ~7 s): MHA; shared KV heads (GQA; MQA is G=1 of the same code) at
# batch 3; AS-KVHS gathered (batch 1), fused (batch 3) and low-rank. The eager paths of every kind are checked above.
COMPILED = [("mha", 4, {}, 1), ("gqa", 2, {}, 3), ("askvhs", 2, {}, 1), ("askvhs", 2, {}, 3), ("askvhs", 2, dict(askvhs_rank=4), 1)]


@pytest.mark.parametrize("kind,G,extra,B", COMPILED, ids=[f"{k}{g}{'-r' if e else ''}-b{b}" for k, g, e, b in COMPILED])
def test_compiled_decoder_gives_the_eager_greedy_tokens_fp32_and_bf16(kind, G, extra, B, perturbed):
    """The CPU fast path (torch.compile of the fixed-shape step, weights frozen and prepacked for oneDNN, reduce attention,
    gathered AS-KVHS at batch 1, fused above) against the eager decoder. fp32: the same greedy tokens and logits. bf16 weights:
    the compiled decoder's logits are those of the eager bf16 decoder, and of fp32, within bf16 rounding (5% of the largest
    logit), so its tokens are the eager bf16 tokens up to a near-tie, where two numerically equal choices may go either way."""
    m32 = perturbed(ModelConfig(50, **TINY, attention=kind, n_kv_head=G, **extra), scale=0.3)
    attr = torch.arange(50) % 8
    prompt = torch.randint(0, 50, (B, 7), generator=torch.Generator().manual_seed(2))
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        m = m32 if dt == torch.float32 else copy.deepcopy(m32).to(dt)
        for mode in ("eager", "compile"):
            out[dt, mode] = generate(m, prompt, 24, attr_of=attr, greedy=True, mode=mode, return_logits=True)
    assert torch.equal(out[torch.float32, "eager"][0], out[torch.float32, "compile"][0])
    torch.testing.assert_close(out[torch.float32, "compile"][1], out[torch.float32, "eager"][1], rtol=1e-4, atol=1e-4)
    tol = 0.05 * float(out[torch.float32, "eager"][1].abs().max())
    assert_same_greedy_until_a_tie(out[torch.bfloat16, "eager"], out[torch.bfloat16, "compile"], tol)
    assert_same_greedy_until_a_tie(out[torch.float32, "eager"], out[torch.bfloat16, "compile"], tol)


def test_compiled_pooled_decoder_and_extend(perturbed):
    "Pooled tokens (fields chosen in turn) through the compiled step; extend continues a filled cache like one longer call."
    m = perturbed(ModelConfig(0, **TINY, attention="mha", field_vocab_sizes=(6, 9, 11)), scale=0.3)
    prompt = torch.stack([torch.randint(0, v, (2, 5), generator=torch.Generator().manual_seed(v)) for v in (6, 9, 11)], -1)
    dec = Decoder(m, 2, 40, "compile", SamplingConfig(greedy=True))
    whole = dec(prompt, 30)
    assert torch.equal(whole, Decoder(m, 2, 40, "eager", SamplingConfig(greedy=True))(prompt, 30))
    part = dec(prompt, 10)
    assert torch.equal(dec.extend(part[:, -1], 20), whole[:, 15:])
    assert torch.equal(dec.extend(part[:, -1], 20, cached=14), whole[:, 15:])  # rewound: the same steps again


def test_compiled_decoder_follows_weight_changes(perturbed):
    """On CPU the compiled step holds the weights as constants (packed for oneDNN); a weight changed in place, or replaced,
    makes the decoder compile afresh, and a new decoder never reuses another one's compiled step."""
    m = perturbed(ModelConfig(50, **TINY), scale=0.3)
    prompt = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(3))
    dec = Decoder(m, 1, 30, "compile", SamplingConfig(greedy=True))
    assert torch.equal(dec(prompt, 20), generate(m, prompt, 20, greedy=True))
    with torch.no_grad(): m.blocks[0].mlp.fc.weight.mul_(-1)
    want = generate(m, prompt, 20, greedy=True)
    assert torch.equal(dec(prompt, 20), want)
    assert torch.equal(Decoder(m, 1, 30, "compile", SamplingConfig(greedy=True))(prompt, 20), want)
    m.blocks[1].attn.out.weight = torch.nn.Parameter(-m.blocks[1].attn.out.weight.detach())
    assert torch.equal(dec(prompt, 20), generate(m, prompt, 20, greedy=True))


def test_graph_warm_up_leaves_no_trace(remi, perturbed):
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



# --- streaming ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["eager", "static"])
def test_stream_yields_the_calls_tokens_flat_and_pooled_with_grammars(mode, remi, perturbed, small_corpus):
    "Token by token, sampling and grammar included, a stream is the call: flat AS-KVHS on REMI with programs, and pooled CPWord."
    flat = perturbed(ModelConfig(len(remi.vocab), **TINY, attention="askvhs", n_kv_head=2))
    prompts = torch.stack([torch.from_numpy(encode(remi, read_midi(p))[:30]) for p in small_corpus.multitrack_path[:2]])  # (2, 30)
    cp = spec_for("music21-multitrack", "CPWord").build()
    pooled = perturbed(ModelConfig(0, **TINY, field_vocab_sizes=tuple(len(v) for v in cp.vocab)))
    cprompts = torch.stack([torch.from_numpy(encode(cp, read_midi(p))[:12]) for p in small_corpus.multitrack_path[:2]])  # (2, 12, F)
    for m, tok, pr, attr in ((flat, remi, prompts, attribute_types(remi)), (pooled, cp, cprompts, None)):
        dec = Decoder(m, 2, 120, mode, SamplingConfig(temperature=1.2, top_p=0.9), grammar_for(tok), attr)
        want = dec(pr, 60, torch.Generator().manual_seed(4))[:, pr.shape[1]:]
        got = torch.stack(list(dec.stream(pr, 60, torch.Generator().manual_seed(4))), 1)  # (2, 60[, F])
        assert torch.equal(got, want), (mode, type(tok).__name__)
        for row in torch.cat([pr, got], 1).tolist(): assert tok.tokens_errors(row) == 0


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_a_stopped_stream_leaves_its_cache_to_extend_and_the_model_as_it_was(mode, perturbed):
    m = perturbed(ModelConfig(40, **TINY, attention="gqa", n_kv_head=2)).train()
    prompt = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    dec = Decoder(m, 2, 50, mode, SamplingConfig(greedy=True))
    ref = dec(prompt, 30)  # (2, 36)
    assert m.training   # the call restored it
    it = dec.stream(prompt, 30)
    first = []
    for tok in it:
        assert not torch.is_inference_mode_enabled() and not m.training  # the caller runs outside inference mode; the model is in eval
        first.append(tok)
        if len(first) == 11: break
    it.close()
    assert m.training and dec.length == 6 + 10   # the last token yielded was never fed back
    assert torch.equal(torch.stack(first, 1), ref[:, 6:17])
    assert torch.equal(dec.extend(first[-1], 19), ref[:, 17:])


def test_stream_masks_with_the_state_of_the_whole_piece(remi, perturbed):
    """A window cut from a long run of notes at Position_8 holds no Position: started from the window alone, the grammar forgets
    the position and lets time go back; started from the state of the whole piece, no Position at or before 8 comes before a Bar."""
    m = perturbed(ModelConfig(len(remi.vocab), **TINY), scale=0.3)
    v = remi.vocab
    piece = torch.tensor([[v["Bar_None"], v["Position_8"]] + [v["Program_0"], v["Pitch_60"], v["Duration_1.0.8"]] * 20])  # (1, 62)
    window, gr = piece[:, -30:], TokenGrammar(remi)
    assert gr.start(piece)[1].tolist() == [8] and gr.start(window)[1].tolist() == [-1]
    pos = {i: int(t.split("_")[1]) for t, i in v.items() if t.startswith("Position_")}
    def positions(state, seed):  # the positions written before the first Bar
        dec = Decoder(m, 1, 100, "eager", SamplingConfig(temperature=2.0), gr)
        out = []
        for tok in dec.stream(window, 60, torch.Generator().manual_seed(seed), state=state):
            if int(tok) == v["Bar_None"]: break
            if int(tok) in pos: out.append(pos[int(tok)])
        return out
    whole = [p for s in range(6) for p in positions(gr.start(piece), s)]
    alone = [p for s in range(6) for p in positions(None, s)]
    assert whole and min(whole) > 8, whole
    assert min(alone) <= 8, alone   # the test can tell the two apart


def test_stream_errors_come_at_the_call(perturbed, remi):
    m = perturbed(ModelConfig(40, **TINY))
    dec = Decoder(m, 2, 20)
    with pytest.raises(ValueError, match="max_new_tokens"): dec.stream(torch.zeros(2, 5, dtype=torch.long), 16)
    with pytest.raises(ValueError, match="batch"): dec.stream(torch.zeros(1, 5, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="no grammar"): dec.stream(torch.zeros(2, 5, dtype=torch.long), 4, state=(torch.zeros(2),))
    mr = perturbed(ModelConfig(len(remi.vocab), **TINY))
    dr, gr = Decoder(mr, 2, 20, grammar=TokenGrammar(remi)), TokenGrammar(remi)
    bar = torch.full((2, 1), remi.vocab["Bar_None"])
    with pytest.raises(ValueError, match="state: expected one row per sequence"): dr.stream(bar, 4, state=gr.start(bar[:1]))

# --- sampling rules -----------------------------------------------------------------------------------------------------

def test_seeds_make_sampling_reproducible(perturbed):
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


