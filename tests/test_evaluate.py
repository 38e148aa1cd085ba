"""The evaluation layer on real music, beyond the notebook's checks: the budget in notes across vocabularies, seeded
training, errors naming the input, the sliding-window sampler, pieces that cannot be read."""
import math

import numpy as np
import pandas as pd
import pytest

from sage_paper.bpe import encode_view, train_bpe, view_words
from sage_paper.evaluate import (LMConfig, TokenizedCorpus, heldout_bits_per_note, heldout_rows, prompt_and_reference, seq_len_for,
                                 tokenize_corpus, train_lm, window_batches, window_sampler, continuation_nmsi, token_bars)
from sage_paper.tokenizer import spec_for

TINY = dict(d_model=32, n_layer=1, n_head=2, notes_per_seq=16, batch_size=4, lr=1e-2, device="cpu")


@pytest.fixture(scope="module")
def piano(small_corpus):
    "The small corpus's piano view: its manifest and the base REMI tokenizer's spec."
    man = small_corpus[small_corpus.status == "ok"].assign(path=lambda d: d.piano_path).reset_index(drop=True)
    return man, spec_for("music21-piano")


def corpus_for(tok, words):
    return TokenizedCorpus(tok, list(words.piece_id), words.split.to_numpy(), encode_view(tok, words), words.notes.to_numpy(), list(words.error))


def test_same_notes_for_every_vocabulary_and_seeded(piano):
    man, spec = piano
    words = view_words(man, spec.build())
    cfg = LMConfig(**TINY, steps=25)
    res = {}
    for v in (0, 800):
        c = corpus_for(train_bpe(spec, words, v, cache=False), words)
        run = train_lm(c, cfg)
        assert run.seq_len == seq_len_for(16, c.tokens_per_note())  # a window holds the same notes in every vocabulary
        res[v] = (run, heldout_bits_per_note(run.model, c, heldout_rows(c), run.seq_len)['bits_per_note'])
    assert res[800][0].seq_len < res[0][0].seq_len  # same notes, shorter sequences
    c0 = corpus_for(spec.build(), words)
    uniform = math.log2(len(spec.build())) * sum(len(c0.ids[i]) + 1 for i in heldout_rows(c0)) / c0.notes[heldout_rows(c0)].sum()
    assert res[0][1] < uniform
    again = train_lm(c0, cfg)
    assert heldout_bits_per_note(again.model, c0, heldout_rows(c0), again.seq_len)['bits_per_note'] == pytest.approx(res[0][1], rel=1e-6)


def test_unreadable_pieces_are_kept_and_skipped(piano):
    man, spec = piano
    bad = pd.concat([man, pd.DataFrame([dict(piece_id="broken", split="valid", path="/no/such/piece.mid")])], ignore_index=True)
    c = tokenize_corpus(bad, spec.build())
    assert "/no/such/piece.mid" in c.error[-1] and not c.ok[-1]
    assert len(c.ids[-1]) == 0 and len(heldout_rows(c)) == len(heldout_rows(tokenize_corpus(man, spec.build())))


def test_errors_name_the_input(piano):
    man, spec = piano
    with pytest.raises(ValueError, match="LMConfig.batch_size=0"): LMConfig(batch_size=0)
    with pytest.raises(ValueError, match="LMConfig.lr"): LMConfig(lr=0)
    with pytest.raises(ValueError, match="tokens_per_note=-1"): seq_len_for(16, -1)
    with pytest.raises(ValueError, match="fewer than one window of 50"): window_batches(np.arange(10), 50, 2)
    c = tokenize_corpus(man.assign(split="valid"), spec.build())
    with pytest.raises(ValueError, match="no usable train pieces"): train_lm(c, LMConfig(**TINY, steps=1))
    with pytest.raises(ValueError, match="one entry per piece"): TokenizedCorpus(c.tok, ["a"], ["train"], [], [1])


def test_the_sampler_slides_past_the_window_and_is_seeded(piano):
    man, spec = piano
    c = tokenize_corpus(man, spec.build())
    run = train_lm(c, LMConfig(**TINY, steps=20))
    rows = [i for i in heldout_rows(c) if prompt_and_reference(c.tok, c.ids[i]) is not None][:2]
    prompts = [prompt_and_reference(c.tok, c.ids[i])[0] for i in rows]
    n = 3 * run.seq_len
    stop = lambda k, g: token_bars(c.tok, np.asarray(g, dtype=np.int64)).max(initial=-1) >= 4
    sample = window_sampler(c.tok, seed=3)
    new = sample(run.model, prompts, n, stop)
    assert len(new) == len(prompts)
    for g in new:
        assert 0 < len(g) <= n and g.max() < len(c.tok)
        assert stop(0, g) or len(g) == n
    assert all(np.array_equal(a, b) for a, b in zip(new, window_sampler(c.tok, seed=3)(run.model, prompts, n, stop)))
    out = continuation_nmsi(run.model, c, rows)
    assert out["n_continuations"] == len(rows) and 0 <= out["nmsi"] <= 100 and set(out["piece_nmsi"]) == {c.piece_id[i] for i in rows}
