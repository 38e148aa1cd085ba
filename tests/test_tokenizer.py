"Tokenizers: round trips on real pieces, attribute types (BPE included), tokens per note, bad input."
import numpy as np
import pytest
from symusic import Score

from sage_paper import tokenizer as T
from sage_paper.data import read_midi


def _pieces(corpus):
    ok = corpus[corpus.status == "ok"]
    return {c: g.iloc[0] for c, g in ok.groupby("composer")}


@pytest.mark.parametrize("kind", T.TOKENIZER_KINDS)
@pytest.mark.parametrize("composer", ["bach", "haydn", "palestrina"])
@pytest.mark.parametrize("view", ["multitrack", "piano"])
def test_round_trip_on_corpus_pieces(small_corpus, kind, composer, view):
    row = _pieces(small_corpus)[composer]
    spec = T.spec_for(f"music21-{view}", kind)
    score = Score(row[f"{view}_path"])
    r = T.round_trip_errors(spec.build(), score)
    assert r["notes"] == score.note_num() and (r["missing"], r["extra"]) == (0, 0)


@pytest.mark.parametrize("kind", T.TOKENIZER_KINDS)
def test_round_trip_on_a_maestro_performance_with_velocities(embedded, kind):
    score = read_midi(embedded / "MIDIs_one_track" / "Maestro_2.mid")
    tok = T.spec_for("maestro-embedded", kind).build()
    assert tok.config.use_velocities
    r = T.round_trip_errors(tok, score)
    assert r["missing"] == r["extra"] == 0 and r["notes"] > 1000


def test_round_trip_within_quantization_against_the_raw_score(small_corpus):
    "Against the *raw* notes: same pitches, onsets within half a grid step (1/16 beat at 8 steps per beat)."
    row = _pieces(small_corpus)["bach"]
    score = Score(row.multitrack_path)
    tok = T.TokenizerSpec("REMI").build()
    dec = T.decode(tok, T.encode(tok, score))
    raw, out = T.note_tuples(score), T.note_tuples(dec)
    assert len(raw) == len(out)
    assert sorted(r[2] for r in raw) == sorted(o[2] for o in out)
    assert max(abs(a[1] - b[1]) for a, b in zip(raw, out)) <= 1 / 16


def test_pooled_ids_have_one_column_per_field(small_corpus):
    score = Score(_pieces(small_corpus)["bach"].multitrack_path)
    for kind in T.POOLED_KINDS:
        tok = T.TokenizerSpec(kind).build()
        ids = T.encode(tok, score)
        assert ids.ndim == 2 and ids.shape[1] == len(tok.vocab)
        assert all((ids[:, f] < len(v)).all() for f, v in enumerate(tok.vocab))


def test_attribute_types_count_the_notes(small_corpus):
    "In an untrained REMI stream without velocities, there is exactly one pitch and one duration token per note."
    for row in _pieces(small_corpus).values():
        tok = T.TokenizerSpec("REMI").build()
        score = tok.preprocess_score(Score(row.multitrack_path))
        ids = T.encode(tok, score)
        attr = T.attribute_types(tok)[ids]
        n = score.note_num()
        assert (attr == T.ATTR_ID["pitch"]).sum() == n and (attr == T.ATTR_ID["duration"]).sum() == n
        assert (attr == T.ATTR_ID["program"]).sum() == n    # multi-track REMI: a Program token per note
        assert (attr == T.ATTR_ID["compound"]).sum() == 0


def test_bpe_tokens_take_the_type_of_their_parts(small_corpus):
    tok = T.TokenizerSpec("REMI", multitrack=False).build()
    base = T.attribute_types(tok)
    paths = list(small_corpus[small_corpus.status == "ok"].piano_path)
    tok.train(vocab_size=len(tok) + 200, model="BPE", files_paths=paths)
    parts, attr = T.token_parts(tok), T.attribute_types(tok)
    assert len(attr) == len(tok) == len(base) + 200
    np.testing.assert_array_equal(attr[: len(base)], base)
    assert sum(len(p) >= 2 for p in parts[len(base):]) > 150      # most learned tokens are real merges
    for i in range(len(base), len(tok)):
        kinds = {T.base_attribute(p) for p in parts[i]} or {"special"}   # the word-boundary marker alone
        assert attr[i] == (T.ATTR_ID[kinds.pop()] if len(kinds) == 1 else T.ATTR_ID["compound"])
    # a BPE-encoded piece is shorter and decodes to the same notes
    score = Score(paths[0])
    ids = T.encode(tok, score)
    plain = T.encode(T.TokenizerSpec("REMI", multitrack=False).build(), score)
    assert len(ids) < len(plain) and ids.max() >= len(base)
    assert T.round_trip_errors(tok, score)["missing"] == 0


def test_pooled_tokenizers_have_no_per_token_attributes():
    with pytest.raises(ValueError, match="CPWord is pooled"):
        T.attribute_types(T.TokenizerSpec("CPWord").build())


def test_single_track_tokenizer_merges_the_tracks_into_the_piano_view(small_corpus):
    p = _pieces(small_corpus)["haydn"]
    piano = T.TokenizerSpec("REMI", multitrack=False).build()
    assert T.encode(piano, Score(p.multitrack_path)).tolist() == T.encode(piano, Score(p.piano_path)).tolist()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_tokens_per_note_reports_bad_files(small_corpus, embedded, n_jobs):
    man = small_corpus[small_corpus.status == "ok"].head(2).assign(path=lambda d: d.multitrack_path)
    bad = man.head(1).assign(piece_id="corrupt", path=str(embedded / "MIDIs_corrupted" / "ValueError_Control168.mid"))
    import pandas as pd
    df = T.tokens_per_note(T.TokenizerSpec("TSD").build(), pd.concat([man, bad]), n_jobs=n_jobs)  # a worker's bad file too
    assert list(df.error == "") == [True, True, False] and "ValueError_Control168.mid" in df.error.iloc[2]
    assert (df.tokens_per_note.iloc[:2] > 2).all() and np.isnan(df.tokens_per_note.iloc[2])


@pytest.mark.parametrize("bad,match", [(dict(kind="REMIX"), "kind='REMIX'"), (dict(num_velocities=0), "num_velocities=0")])
def test_bad_specs_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        T.TokenizerSpec(**bad)
