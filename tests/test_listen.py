"Tests of sage_paper.listen: offline rendering with pretty_midi's soundfont, the notebook player, piano rolls, snippets."
import numpy as np
import pytest
from symusic import Score

from sage_paper.data import MidiError, build_music21_corpus, read_midi
from sage_paper.listen import (audio, instrument_name, plot_piano_roll, render_audio, score_snippet, show_snippet,
                               soundfont_path)

SR = 16000


@pytest.fixture(scope="module")
def chorale(tmp_path_factory):
    "One real Bach chorale from music21's corpus in the multi-track view (one track per voice), converted afresh."
    man = build_music21_corpus(("bach",), max_per_composer=1, out_dir=tmp_path_factory.mktemp("music21"), n_jobs=1,
                               progress=False)
    row = man.iloc[0]
    assert row.status == "ok", row.error
    return row.multitrack_path


@pytest.fixture(scope="module")
def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


def rms(x): return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_soundfont_ships_with_pretty_midi():
    p = soundfont_path()
    assert p.name == "TimGM6mb.sf2" and p.parent.name == "pretty_midi" and p.stat().st_size > 1_000_000
    with open(p, "rb") as f: head = f.read(12)
    assert head[:4] == b"RIFF" and head[8:12] == b"sfbk"  # a SoundFont 2 file
    with pytest.raises(FileNotFoundError, match="'missing.sf2' is missing from the installed package 'pretty_midi'"):
        soundfont_path("missing.sf2")
    with pytest.raises(FileNotFoundError, match="'no_such_pkg_42' that ships it is not installed"):
        soundfont_path(package="no_such_pkg_42")


def test_chorale_clip_renders_non_silent_audio_of_the_right_length(chorale):
    score = read_midi(chorale)
    seconds = score.to("second").end()
    assert seconds > 6, seconds
    x = render_audio(chorale, sample_rate=SR, max_seconds=3)
    assert x.dtype == np.float32 and x.shape == (3 * SR,)  # cut at max_seconds exactly
    assert rms(x) > 1e-2 and rms(x[-SR // 2:]) > 1e-3  # sounding up to the cut
    assert np.isfinite(x).all()
    # a whole (short) score lasts its duration, plus a few ms of release
    head = score.to("second").clip(0, 3.0, clip_end=True)  # notes that end within 3 s
    y = render_audio(head, sample_rate=SR, stereo=True)
    assert y.shape[0] == 2 and abs(y.shape[1] / SR - head.end()) < 0.1, (y.shape, head.end())
    assert rms(y) > 1e-2


def test_rendering_is_deterministic(chorale):
    a = render_audio(chorale, sample_rate=SR, max_seconds=2)
    b = render_audio(read_midi(chorale), sample_rate=SR, max_seconds=2)  # path or Score: the same sound
    np.testing.assert_array_equal(a, b)
    c = render_audio(read_midi(chorale).to("quarter"), sample_rate=SR, max_seconds=2)  # any time unit
    np.testing.assert_array_equal(a, c)


def test_empty_and_bad_inputs_are_named(chorale, embedded):
    with pytest.raises(ValueError, match="`score` has no notes"):
        render_audio(Score(480))
    with pytest.raises(ValueError, match="`score` has no notes"):
        plot_piano_roll(Score(480))
    with pytest.raises(ValueError, match="`score_or_path` has no notes"):
        score_snippet(Score(480))
    with pytest.raises(MidiError, match="empty.mid: the file holds no notes"):
        render_audio(embedded / "MIDIs_one_track" / "empty.mid")
    with pytest.raises(ValueError, match="`max_seconds` must be > 0"):
        render_audio(chorale, max_seconds=0)
    with pytest.raises(TypeError, match="`score` must be a symusic.Score or the path"):
        render_audio(np.zeros(3))
    with pytest.raises(FileNotFoundError, match="nope.sf2"):
        render_audio(chorale, max_seconds=1, soundfont="nope.sf2")


def test_corrupt_midi_error_names_the_file(embedded):
    bad = embedded / "MIDIs_corrupted" / "ValueError_Control168.mid"
    assert bad.is_file(), bad
    with pytest.raises(MidiError) as e:
        render_audio(bad)
    assert str(bad) in str(e.value) and "corrupt or unreadable MIDI" in str(e.value)
    with pytest.raises(MidiError, match="no_such.mid: no such file"):
        audio("no_such.mid")


def test_audio_is_embedded_and_writes_nothing(chorale, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = audio(chorale, sample_rate=8000, max_seconds=1)
    assert a.data[:4] == b"RIFF" and a.filename is None and a.url is None
    assert len(a.data) >= 2 * 8000  # 1 s of 16-bit mono
    assert list(tmp_path.iterdir()) == []


def test_piano_roll_one_colour_per_track(embedded, plt):
    path = embedded / "MIDIs_multitrack" / "Funkytown.mid"
    score = read_midi(path)
    tracks = [t for t in score.tracks if t.note_num() > 0]
    assert len(tracks) >= 3, len(tracks)
    ax = plot_piano_roll(path, title="Funkytown")
    assert len(ax.collections) == len(tracks)
    colours = {tuple(np.round(c.get_facecolor()[0], 4)) for c in ax.collections}
    assert len(colours) == len(tracks)
    notes = sum(len(c.get_paths()) for c in ax.collections)
    assert notes == sum(t.note_num() for t in tracks)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [c.get_label() for c in ax.collections]
    for text, t in zip(legend, tracks):  # "GM name (track name)"
        assert text.startswith(instrument_name(t.program, t.is_drum)), (text, t.program, t.is_drum)
    assert sum(text.startswith("Drums") for text in legend) == sum(t.is_drum for t in tracks) >= 1
    assert ax.get_title() == "Funkytown" and ax.get_xlabel() == "time (beats)"
    plt.close(ax.figure)


def test_piano_roll_max_beats_and_given_axes(chorale, plt):
    fig, ax = plt.subplots()
    out = plot_piano_roll(chorale, ax=ax, max_beats=8)
    assert out is ax and ax.get_xlim() == (0, 8)
    assert len(ax.collections) == 4  # soprano, alto, tenor, bass
    right = max(v[:, 0].max() for c in ax.collections for v in (p.vertices for p in c.get_paths()))
    assert right <= 8 + 1e-9
    assert "Choir Aahs" in ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)


def test_score_snippet_first_bars(chorale, capsys):
    snip = score_snippet(chorale, bars=2)
    assert len(snip.parts) == 4
    assert all(1 <= len(p.getElementsByClass("Measure")) <= 2 for p in snip.parts)
    assert show_snippet(snip.parts[0], fmt="text") == "text"
    out = capsys.readouterr().out
    assert "music21.stream.Measure 1" in out and "music21.note.Note" in out and "Measure 3" not in out
    with pytest.raises(ValueError, match="`bars` must be a positive integer"):
        score_snippet(chorale, bars=0)


def test_a_stuck_render_is_stopped_with_an_error_naming_the_input():
    "symusic 0.5.8 never returns on GM program 76 at pitch 108: the render is stopped and reported."
    import time
    from symusic import Note, Score, Track
    s = Score(8); t = Track(program=76); t.notes.append(Note(0, 94, 108, 80)); s.tracks.append(t)
    t0 = time.time()
    with pytest.raises(TimeoutError, match="took over 2"): render_audio(s, timeout=2)
    assert time.time() - t0 < 10
    ok = Score(8); t = Track(program=76); t.notes.append(Note(0, 94, 100, 80)); ok.tracks.append(t)
    assert np.abs(render_audio(ok, timeout=20)).max() > 0   # the same instrument, another pitch: rendered in the child
