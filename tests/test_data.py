"Data: two views of the music21 corpus, manifests, splits, loaders and bad-file handling, on real files."
import shutil

import pandas as pd
import pytest
from symusic import Score

from sage_paper import data as D


def test_views_have_one_track_per_part_and_one_piano_track(small_corpus):
    ok = small_corpus[small_corpus.status == "ok"]
    assert len(ok) == 9 and set(ok.composer) == {"bach", "haydn", "palestrina"}
    for r in ok.itertuples():
        multi, piano = Score(r.multitrack_path), Score(r.piano_path)
        assert len(multi.tracks) == r.parts >= 2
        assert [t.program for t in multi.tracks] == [int(p) for p in r.programs.split()]
        assert multi.note_num() == r.notes
        assert len(piano.tracks) == 1 and piano.tracks[0].program == 0
        assert r.piano_notes == piano.note_num() <= r.notes
        # the same music: every (onset, pitch) of the multi-track view is in the piano view
        on = lambda sc: {(n.time, n.pitch) for t in sc.tracks for n in t.notes}
        assert on(multi) == on(piano)


def test_vocal_parts_get_distinct_programs_and_quartets_keep_theirs(small_corpus):
    for r in small_corpus[small_corpus.composer != "haydn"].itertuples():
        progs = r.programs.split()
        assert len(set(progs)) == min(len(progs), len(D.VOICE_PROGRAMS)), r.piece_id
    for r in small_corpus[small_corpus.composer == "haydn"].itertuples():
        assert set(map(int, r.programs.split())) <= {40, 41, 42, 43}


def test_split_is_per_piece_and_deterministic(small_corpus):
    split = D.assign_splits(D.music21_sources().piece_id)
    assert all(split[p] == s for p, s in zip(small_corpus.piece_id, small_corpus.split))
    assert set(small_corpus.split) == {"train", "valid", "test"}


def test_cache_is_reused(small_corpus, tmp_path):
    out = tmp_path / "c"
    m1 = D.build_music21_corpus(("bach",), 2, out_dir=out, n_jobs=1, progress=False)
    stamp = {p: (out / p).stat().st_mtime_ns for p in m1.multitrack_path}
    m2 = D.build_music21_corpus(("bach",), 2, out_dir=out, n_jobs=1, progress=False)
    assert {p: (out / p).stat().st_mtime_ns for p in m2.multitrack_path} == stamp
    pd.testing.assert_frame_equal(m1.drop(columns="seconds"), m2.drop(columns="seconds"))


def test_a_bad_source_is_reported_and_the_rest_kept(tmp_path, monkeypatch):
    bad = tmp_path / "broken.krn"
    bad.write_text("**kern\n*M4/4\nthis is not humdrum\n")
    real = D.music21_sources

    def with_bad(composers=D.DEFAULT_COMPOSERS):
        df = real(composers)
        return pd.concat([df.head(2), pd.DataFrame([dict(piece_id="bach/broken", composer="bach", source=str(bad))])], ignore_index=True)

    monkeypatch.setattr(D, "music21_sources", with_bad)
    man = D.build_music21_corpus(("bach",), out_dir=tmp_path / "out", n_jobs=1, progress=False)
    assert list(man.status) == ["ok", "ok", "error"] or sorted(man.status) == ["error", "ok", "ok"]
    row = man[man.piece_id == "bach/broken"].iloc[0]
    assert row.error and row.multitrack_path == ""
    saved = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert "bach/broken" in set(saved.piece_id)          # the report is on disk too
    assert (man.status == "ok").sum() == 2


def test_read_midi_names_the_file(embedded, tmp_path):
    with pytest.raises(D.MidiError, match="ValueError_Control168.mid: corrupt"):
        D.read_midi(embedded / "MIDIs_corrupted" / "ValueError_Control168.mid")
    with pytest.raises(D.MidiError, match="empty.mid: the file holds no notes"):
        D.read_midi(embedded / "MIDIs_one_track" / "empty.mid")
    big = embedded / "MIDIs_one_track" / "Maestro_1.mid"
    with pytest.raises(D.MidiError, match="Maestro_1.mid: .* over the limit of 100"):
        D.read_midi(big, max_notes=100)
    with pytest.raises(D.MidiError, match="over the limit of 1,000"):
        D.read_midi(big, max_bytes=1000)
    assert D.read_midi(embedded / "MIDIs_one_track" / "empty.mid", allow_empty=True).note_num() == 0


def test_embedded_maestro_is_real_and_long(embedded):
    m = D.embedded_piano("maestro")
    assert len(m) == 10 and (m.status == "ok").all()
    assert m.notes.sum() == 101_901 and m.notes.min() > 2_000
    assert sorted(m.split.value_counts().to_dict().items()) == [("test", 1), ("train", 8), ("valid", 1)]
    with pytest.raises(ValueError, match="kind='jazz'"):
        D.embedded_piano("jazz")


def test_folder_loader_reports_corrupt_and_empty_files(embedded, tmp_path):
    for sub in ("MIDIs_corrupted", "MIDIs_one_track"):
        shutil.copytree(embedded / sub, tmp_path / sub)
    man = D.midi_folder(tmp_path, progress=False)
    bad = man[man.status == "error"].set_index("piece_id").error
    assert set(bad.index) == {"MIDIs_corrupted/ValueError_Control168", "MIDIs_one_track/empty"}
    assert "no notes" in bad["MIDIs_one_track/empty"]
    assert len(D.load_corpus(f"folder:{tmp_path}", progress=False)) == len(man) - 2


def test_maestro_loader_uses_the_csv_split(embedded, tmp_path):
    (tmp_path / "2004").mkdir()
    rows = []
    for i, split in zip((1, 2, 3), ("train", "validation", "test")):
        shutil.copy(embedded / "MIDIs_one_track" / f"Maestro_{i}.mid", tmp_path / "2004" / f"piece{i}.midi")
        rows.append(dict(canonical_composer=f"C{i}", canonical_title="t", split=split, year=2004,
                         midi_filename=f"2004/piece{i}.midi", audio_filename="", duration=1.0))
    pd.DataFrame(rows).to_csv(tmp_path / "maestro-v3.0.0.csv", index=False)
    man = D.load_corpus(f"maestro:{tmp_path}", progress=False)
    assert list(man.split) == ["train", "valid", "test"] and list(man.composer) == ["C1", "C2", "C3"]
    with pytest.raises(FileNotFoundError, match="maestro-v"):
        D.maestro(tmp_path / "2004")


@pytest.mark.parametrize("valid,test", [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_split_shares_are_rejected(valid, test):
    with pytest.raises(ValueError, match=f"valid={valid}"):
        D.assign_splits(["a", "b", "c"], valid, test)


def test_unknown_corpus_and_composer_are_named():
    with pytest.raises(ValueError, match="'lakh'"):
        D.load_corpus("lakh")
    with pytest.raises(ValueError, match="'nobody'"):
        D.music21_sources(("nobody",))
    with pytest.raises(ValueError, match="max_per_composer=0"):
        D.select_pieces(D.music21_sources(("bach",)), 0)


def test_cache_key_follows_content_not_mtime(tmp_path):
    "A cached conversion stays valid where music21 is reinstalled (new mtimes), and not when the source changes."
    import os
    from sage_paper.data import _source_key
    a, b = tmp_path / "a.mxl", tmp_path / "b.mxl"
    a.write_bytes(b"score"); b.write_bytes(b"score")
    os.utime(b, (1, 1))
    assert _source_key(a) == _source_key(b)
    b.write_bytes(b"scorf")
    assert _source_key(a) != _source_key(b)
