"BPE study: per-bar words, training and caching, encoding, merge statistics, the fixed-notes model budget, continuations."
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sage_paper.bpe import (BPEStudyConfig, LMConfig, bar_words, bpe_cache_path, bpe_study, compression_stats,
                            continuation_nmsi, continuation_notes, encode_view, encode_words, eval_windows, heldout_subset,
                            load_tokenizer, merge_table, prompt_and_reference, seq_len_for, train_batches, train_bpe,
                            train_lm, view_words)
from sage_paper.data import embedded_piano, read_midi
from sage_paper.tokenizer import decode, encode, round_trip_errors, spec_for, tokens_per_note


@pytest.fixture(scope="module")
def views(small_corpus):
    "The small corpus as the multi-track and the piano view: (spec, manifest, words) per view."
    out = {}
    for view, col in (("music21-multitrack", "multitrack_path"), ("music21-piano", "piano_path")):
        man = small_corpus[small_corpus.status == "ok"].assign(path=lambda d: d[col]).reset_index(drop=True)
        if view.endswith("piano"): man = man.assign(notes=man.piano_notes)
        spec = spec_for(view)
        out[view] = (spec, man, view_words(man, spec.build()))
    return out


@pytest.fixture(scope="module")
def maestro(embedded):
    spec = spec_for("maestro-embedded")
    man = embedded_piano("maestro")
    return spec, man, view_words(man, spec.build())


def test_words_cover_every_base_token(views):
    spec, man, words = views["music21-multitrack"]
    assert (words.error == "").all() and set(words.split) == {"train", "valid", "test"}
    base = spec.build()
    for r, w in zip(man.itertuples(), words.words):
        sc = read_midi(r.path)
        assert sum(map(len, w)) == len(encode(base, sc)), r.piece_id
        assert np.array_equal(encode_words(base, w), encode(base, sc))
    assert words.notes.tolist() == man.notes.tolist()


def test_train_bpe_matches_miditok_and_encodes_like_it(views, tmp_path):
    for view, (spec, man, words) in views.items():
        ref = spec.build()
        ref.train(vocab_size=700, model="BPE", files_paths=[Path(p) for p in man.path[man.split == "train"]])
        tok = train_bpe(spec, words, 700, view=view, cache=tmp_path)
        assert tok.vocab_model == ref.vocab_model, view
        ids = encode_view(tok, words)
        for r, i in zip(man.itertuples(), ids):
            sc = read_midi(r.path)
            assert np.array_equal(i, encode(tok, sc)), (view, r.piece_id)
        sc = read_midi(man.path[0])
        assert round_trip_errors(tok, sc)["missing"] == 0


def test_cache_round_trip_and_keys(views, tmp_path):
    spec, man, words = views["music21-piano"]
    tok = train_bpe(spec, words, 600, view="music21-piano", cache=tmp_path)
    path = bpe_cache_path("music21-piano", spec, 600, words.piece_id[words.split == "train"], tmp_path)
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    again = train_bpe(spec, words, 600, view="music21-piano", cache=tmp_path)
    assert again.vocab_model == tok.vocab_model and path.stat().st_mtime_ns == mtime   # loaded, not retrained
    assert load_tokenizer(path).vocab_model == tok.vocab_model
    other = bpe_cache_path("music21-piano", spec, 600, list(words.piece_id[words.split == "train"])[:-1], tmp_path)
    assert other != path                                                           # another train set, another key
    assert bpe_cache_path("music21-multitrack", spec_for("music21-multitrack"), 600, ["a"], tmp_path) != path
    assert not list(tmp_path.rglob("vocab0.json"))
    assert len(train_bpe(spec, words, 0, cache=tmp_path)) == len(spec.build())        # base size: no BPE, no file


def test_vocabulary_stops_where_merges_run_out(views):
    spec, _, words = views["music21-multitrack"]
    tok = train_bpe(spec, words, 1_000_000, cache=False)
    n_train_base = words.base_tokens[words.split == "train"].sum()
    assert len(spec.build()) < len(tok) < min(1_000_000, len(spec.build()) + n_train_base)
    s = compression_stats(tok, words)
    # every training bar is one token once merges run out
    assert s["tokens_per_note_train"] == pytest.approx(words.bars[words.split == "train"].sum() / words.notes[words.split == "train"].sum())
    assert s["tokens_per_note_heldout"] > 5 * s["tokens_per_note_train"] and 0 < s["heldout_vocab_usage"] < 0.5


def test_merges_cross_tracks_only_in_the_multitrack_view(views):
    multi, piano = (merge_table(train_bpe(views[v][0], views[v][2], 1500, cache=False)) for v in ("music21-multitrack", "music21-piano"))
    assert multi.cross_track.mean() > 0.05 and piano.cross_track.sum() == 0 and piano.n_programs.max() == 0
    assert multi.multi_note.any() and piano.multi_note.any()
    assert (multi.n_parts >= 1).all() and (multi.n_pitch <= multi.n_parts).all()
    row = multi[multi.cross_track].iloc[0]
    assert len({t for t in row.tokens.split() if t.startswith("Program_")}) >= 2


def test_compression_stats_on_real_pieces(views):
    spec, man, words = views["music21-multitrack"]
    base = spec.build()
    s0 = compression_stats(base, words)
    per_piece = tokens_per_note(base, man)
    tr = per_piece.split == "train"
    assert s0["tokens_per_note_train"] == pytest.approx(per_piece.tokens[tr].sum() / per_piece.notes[tr].sum())
    assert s0["n_merges"] == 0 and math.isnan(s0["heldout_vocab_usage"]) and s0["base_tokens_per_token_heldout"] == 1.0
    s1 = compression_stats(train_bpe(spec, words, 1500, cache=False), words)
    assert s1["tokens_per_note_train"] < s1["tokens_per_note_heldout"] < s0["tokens_per_note_heldout"]
    assert s1["compression_gap"] > 0 and 0 < s1["heldout_vocab_usage"] < 1 and s1["merge_len_vocab"] > 2
    assert s1["base_tokens_per_token_heldout"] == pytest.approx(s0["tokens_per_note_heldout"] / s1["tokens_per_note_heldout"])


def test_maestro_performances(maestro):
    spec, man, words = maestro
    assert spec.velocities and (words.error == "").all() and len(words) == 10
    tok = train_bpe(spec, words, 2000, view="maestro-embedded", cache=False)
    s = compression_stats(tok, words)
    assert s["cross_track_merge_share"] == 0 and s["tokens_per_note_heldout"] < 3
    ids = encode_view(tok, words)
    assert decode(tok, ids[1]).note_num() > 0.95 * words.notes[1]


def test_error_paths(views):
    spec, man, words = views["music21-multitrack"]
    with pytest.raises(ValueError, match="'music21-multitrack': no train pieces"):
        train_bpe(spec, words.assign(split="valid"), 600, view="music21-multitrack", cache=False)
    with pytest.raises(FileNotFoundError, match="nowhere.json"): load_tokenizer("/tmp/nowhere.json")
    bad = view_words(pd.DataFrame([dict(piece_id="x", split="train", path="/no/such/piece.mid")]), spec.build())
    assert "/no/such/piece.mid" in bad.error[0] and bad.words[0] == []
    with pytest.raises(ValueError, match="Octuple is pooled"): bar_words(spec_for("music21-multitrack", "Octuple").build(), read_midi(man.path[0]))
    with pytest.raises(ValueError, match="need train and held-out"): compression_stats(spec.build(), words[words.split == "train"])
    with pytest.raises(ValueError, match="LMConfig.batch_size=0"): LMConfig(batch_size=0)
    with pytest.raises(ValueError, match="tokens_per_note=-1"): seq_len_for(16, -1)
    with pytest.raises(ValueError, match="fewer than one window of 50"): train_batches(np.arange(10), 50, 2)
    with pytest.raises(ValueError, match="vocab_sizes"): BPEStudyConfig(vocab_sizes=())


def test_windows_score_every_token_once():
    streams = [np.arange(1, 38), np.arange(100, 103), np.arange(200, 250)]
    for T in (2, 5, 16, 64):
        got = torch.cat([b[:, 1:].flatten() for b in eval_windows(streams, T, batch_size=4)])
        want = np.concatenate([s[1:] for s in streams])
        assert sorted(got[got != 0].tolist()) == sorted(want.tolist()), T


def test_train_lm_same_notes_for_every_vocabulary(views):
    spec, _, words = views["music21-piano"]
    cfg = LMConfig(d_model=32, n_layer=1, n_head=2, notes_per_seq=16, batch_size=4, steps=25, lr=1e-2, device="cpu")
    res = {}
    for v in (0, 800):
        tok = train_bpe(spec, words, v, cache=False)
        ids = encode_view(tok, words)
        r = train_lm(tok, words, ids, cfg)
        ho = heldout_subset(words)
        assert r["heldout_tokens_scored"] == sum(len(ids[i]) + 1 for i in ho)              # every token after BOS, EOS included
        assert r["heldout_notes_scored"] == words.notes.iloc[ho].sum() and r["train_notes"] == 25 * 4 * 16
        tpn = compression_stats(tok, words, ids)["tokens_per_note_train"]
        assert r["seq_len"] == seq_len_for(16, tpn)
        assert math.isfinite(r["bits_per_note"])
        res[v] = r
    assert res[800]["seq_len"] < res[0]["seq_len"]                                      # same notes, shorter sequences
    uniform = math.log2(len(spec.build())) * compression_stats(spec.build(), words)["tokens_per_note_heldout"]
    assert res[0]["bits_per_note"] < uniform
    again = train_lm(spec.build(), words, encode_view(spec.build(), words), cfg)
    assert again["bits_per_note"] == pytest.approx(res[0]["bits_per_note"], rel=1e-5)  # seeded


def test_continuations(views):
    spec, _, words = views["music21-multitrack"]
    tok = train_bpe(spec, words, 900, cache=False)
    rows = [i for i in heldout_subset(words) if prompt_and_reference(tok, words.words[i]) is not None]
    assert rows
    def oracle(model, prompts, max_new, stop):
        out = []
        for p in prompts:
            i = next(k for k in rows if np.array_equal(encode_words(tok, words.words[k][:4]), p))
            gen = encode_words(tok, words.words[i][4:10])
            assert stop(gen) and max_new >= 8
            out.append(gen)
        return out
    assert continuation_nmsi(None, tok, words, rows, sampler=oracle)["similarity_index"] == pytest.approx(100.0)
    empty = continuation_nmsi(None, tok, words, rows, sampler=lambda m, ps, n, s: [np.zeros(0, dtype=np.int64) for _ in ps])
    assert empty["similarity_index"] == 0.0 and empty["n_continuations"] == len(rows)
    p, r = prompt_and_reference(tok, words.words[rows[0]])
    notes = continuation_notes(tok, p, r)
    assert notes.shape[1] == 5 and len(notes) > 0


def test_study_rows_and_columns(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGE_PAPER_DATA", str(tmp_path))
    # the study loads corpora by name: point the music21 cache at the fixture's folder
    import shutil
    src = Path(small_corpus.multitrack_path[0]).parents[1]
    shutil.copytree(src, tmp_path/"cache"/"music21")
    cfg = BPEStudyConfig(views=("music21-multitrack", "music21-piano"), vocab_sizes=(0, 700, 10**6),
                         composers=("bach", "haydn", "palestrina"), max_per_composer=3, lm=None)
    df = bpe_study(cfg, log=None)
    assert len(df) == 6 and set(df.vocab_size) == {0, 700, 10**6}
    for c in ("view", "vocab_size", "vocab_size_actual", "tokens_per_note_train", "tokens_per_note_heldout", "heldout_vocab_usage",
              "cross_track_merge_share", "multi_note_merge_share", "merge_len_vocab", "bits_per_note", "similarity_index"):
        assert c in df, c
    assert (df[df.view == "music21-piano"].cross_track_merge_share.dropna() == 0).all()
    assert (df.groupby("view").tokens_per_note_train.apply(lambda s: s.is_monotonic_decreasing)).all()
    assert list((tmp_path/"cache"/"bpe").rglob("vocab700.json"))


def test_sampled_continuations_are_scored(views):
    from sage_paper.bpe import window_sampler, bar_token_mask
    spec, _, words = views["music21-piano"]
    tok = train_bpe(spec, words, 500, cache=False)
    ids = encode_view(tok, words)
    r = train_lm(tok, words, ids, LMConfig(d_model=32, n_layer=1, n_head=2, notes_per_seq=16, batch_size=4, steps=20, lr=1e-2, device="cpu"))
    sample = window_sampler(tok, seed=3)
    if sample is None: pytest.skip("sage_paper.generate is not there: no sampler")
    rows = [i for i in heldout_subset(words) if prompt_and_reference(tok, words.words[i]) is not None][:2]
    prompts = [prompt_and_reference(tok, words.words[i])[0] for i in rows]
    bars = bar_token_mask(tok)
    stop = lambda g: bars[np.asarray(g, dtype=np.int64)].sum() > 4
    new = sample(r["model"], prompts, 3 * r["seq_len"], stop)
    assert len(new) == len(prompts)
    for g in new:                                                                   # slides past the model's window
        assert 0 < len(g) <= 3 * r["seq_len"] and g.max() < len(tok)
        assert stop(g) or len(g) == 3 * r["seq_len"]
    again = sample(r["model"], prompts, 3 * r["seq_len"], stop)
    assert all(np.array_equal(a, b) for a, b in zip(new, again))                    # seeded
    out = continuation_nmsi(r["model"], tok, words, rows)
    assert out["n_continuations"] == len(rows) and 0 < out["similarity_index"] <= 100
