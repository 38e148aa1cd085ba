"BPE: per-bar words, training and caching, encoding, merge statistics and compression on real pieces (the model's half is in test_evaluate / test_bpe_study)."
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sage_paper.bpe import (bar_words, bpe_cache_path, compression_stats, encode_view, encode_words, load_tokenizer, merge_table,
                            train_bpe, view_words)
from sage_paper.data import embedded_piano, load_corpus, read_midi
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
    train = words[words.split == "train"]
    path = bpe_cache_path("music21-piano", spec, 600, train, tmp_path)
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    again = train_bpe(spec, words, 600, view="music21-piano", cache=tmp_path)
    assert again.vocab_model == tok.vocab_model and path.stat().st_mtime_ns == mtime   # loaded, not retrained
    assert load_tokenizer(path).vocab_model == tok.vocab_model
    other = bpe_cache_path("music21-piano", spec, 600, train.iloc[:-1], tmp_path)
    assert other != path                                                           # another train set, another key
    assert bpe_cache_path("music21-multitrack", spec_for("music21-multitrack"), 600, train, tmp_path) != path
    assert bpe_cache_path("music21-piano", spec, 600, train.iloc[::-1], tmp_path) == path   # the rows' order does not matter
    with pytest.raises(TypeError, match="piece_id and words"): bpe_cache_path("music21-piano", spec, 600, ["a"], tmp_path)
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




def _fill(folder, songs):
    "`folder` emptied, then holding `songs` under the names piece0.mid, piece1.mid, ..."
    shutil.rmtree(folder, ignore_errors=True); folder.mkdir()
    for i, p in enumerate(songs): shutil.copy(p, folder / f"piece{i}.mid")


def test_a_refilled_folder_gets_a_new_tokenizer(embedded, tmp_path):
    "Other songs under the same names: the cache key follows the music, so BPE is learned again; the same songs reuse it."
    songs, d, cache = sorted((embedded / "MIDIs_multitrack").glob("*.mid")), tmp_path / "songs", tmp_path / "bpe"
    view = f"folder:{d}"
    spec = spec_for(view)

    def learn():
        man = load_corpus(view, progress=False, n_jobs=2, report=False)
        words = view_words(man, spec.build())
        return words, train_bpe(spec, words, 800, view=view, cache=cache)

    _fill(d, songs[:6])
    w1, t1 = learn()
    (f1,) = cache.rglob("vocab800.json")
    mtime = f1.stat().st_mtime_ns
    assert learn()[1].vocab_model == t1.vocab_model and f1.stat().st_mtime_ns == mtime        # the same songs: read from the cache
    _fill(d, songs[6:])
    w2, t2 = learn()
    assert list(w2.piece_id) == list(w1.piece_id) and list(w2.split) == list(w1.split)     # the same names and splits
    assert len(list(cache.rglob("vocab800.json"))) == 2 and t2.vocab_model != t1.vocab_model
    assert t2.vocab_model == train_bpe(spec, w2, 800, cache=False).vocab_model               # what these songs give, learned afresh
    _fill(d, songs[:6])
    assert learn()[1].vocab_model == t1.vocab_model and f1.stat().st_mtime_ns == mtime        # back to the first songs: their tokenizer


def test_a_damaged_tokenizer_file_is_named_and_a_damaged_cache_relearned(views, tmp_path):
    spec, man, words = views["music21-piano"]
    tok = train_bpe(spec, words, 600, view="music21-piano", cache=tmp_path)
    path = bpe_cache_path("music21-piano", spec, 600, words[words.split == "train"], tmp_path)
    good = path.read_text()
    path.write_text(good[:len(good) // 2])                                       # half a file
    with pytest.raises(ValueError, match=f"{path}: not a saved tokenizer, the file is not valid JSON"): load_tokenizer(path)
    assert train_bpe(spec, words, 600, view="music21-piano", cache=tmp_path).vocab_model == tok.vocab_model
    assert path.read_text() == good                                              # learned again and written whole
    path.write_text(good.replace('"tokenization": "REMI"', '"tokenization": "os"'))
    with pytest.raises(ValueError, match=f"{path}: not a saved MidiTok tokenizer \\(its 'tokenization' is 'os'\\)"): load_tokenizer(path)
    assert not list(tmp_path.rglob("*.tmp*"))


def test_tracks_kept_apart_let_merges_cross_them(hands, tmp_path):
    "Piano recordings with both hands on program 0: merged, no BPE token can span the hands; kept apart (the default), some do."
    for p in sorted(hands.rglob("*.mid"))[:12]: shutil.copy(p, tmp_path / p.name)
    spec = spec_for(f"folder:{tmp_path}", velocities=False)
    share = {}
    for mode in ("merge", "separate"):
        man = load_corpus(f"folder:{tmp_path}", progress=False, n_jobs=2, same_program=mode)
        mt = merge_table(train_bpe(spec, view_words(man, spec.build(), n_jobs=2), 2000, cache=False))
        share[mode] = mt.cross_track.mean()
        for t in mt.tokens[mt.cross_track]: assert {"Program_0", "Program_1"} <= set(t.split()), t   # a token spanning both hands
    assert share["merge"] == 0 and share["separate"] > 0.02, share
