"Tests of sage_paper.listen: offline rendering with pretty_midi's soundfont, the notebook player, piano rolls, engraved notation."
import numpy as np
import pytest
from symusic import Score

from sage_paper.data import MidiError, build_music21_corpus, read_midi
from sage_paper import listen
from sage_paper.listen import (EngraveError, audio, engrave, engrave_pair, engraved_counts, instrument_name,
                               plot_piano_roll, render_audio, score_snippet, show_pair, show_score, soundfont_path)

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


def bar_ticks(score):
    "Ticks a bar of a score with one time signature."
    assert len(score.time_signatures) == 1, score.time_signatures
    ts = score.time_signatures[0]
    return score.tpq * 4 * ts.numerator // ts.denominator


def svg_of(html):
    "The outer <svg> of an HTML figure from show_score / show_pair."
    return html[html.index("<svg"):html.rindex("</svg>") + 6]


def test_score_snippet_first_bars(chorale):
    snip = score_snippet(chorale, bars=2)
    assert [p.partName for p in snip.parts] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert all([m.number for m in p.getElementsByClass("Measure")] == [1, 2] for p in snip.parts)
    later = score_snippet(chorale, bars=(3, 4))
    assert [m.number for m in later.parts[0].getElementsByClass("Measure")] == [3, 4]   # numbered as in the piece
    assert "Treble8vbClef" in {type(c).__name__ for c in later.recurse().getElementsByClass("Clef")}  # the tenor
    with pytest.raises(ValueError, match="`bars` must be n >= 1"):
        score_snippet(chorale, bars=0)


def test_chorale_first_two_bars_engrave_four_staves_and_every_note(chorale):
    score = read_midi(chorale)
    end = 2 * bar_ticks(score)
    in_bars = sum(n.time < end for t in score.tracks for n in t.notes)
    svg = engrave(chorale, bars=2)
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    k = engraved_counts(svg)
    assert (k["staves"], k["measures"], k["systems"]) == (4, 2, 1), k
    assert k["played"] == in_bars > 20, (k, in_bars)   # every note that starts in bars 1-2, drawn once (ties aside)
    assert k["notes"] == svg.count('class="note"') and k["colored"] == 0
    for voice in ("Soprano", "Alto", "Tenor", "Bass"):
        assert f">{voice}<" in svg, voice   # one staff per track, labelled with the track's name
    assert engraved_counts(engrave(score.to("second"), bars=2)) == k   # a Score in any time unit, the same notation


def test_maestro_excerpt_engraves_on_a_braced_grand_staff(embedded):
    path = embedded / "MIDIs_one_track" / "Maestro_1.mid"
    score = read_midi(path)
    on = score.tracks[0].notes.numpy()["time"] / score.tpq   # quarters; 4/4 bars of 4 quarters
    assert len(score.tracks) == 1 and score.tracks[0].program == 0 and bar_ticks(score) == 4 * score.tpq
    svg = engrave(path, bars=(10, 12))
    k = engraved_counts(svg)
    assert (k["staves"], k["measures"], k["voices"]) == (2, 3, 1), k   # a held note under others is cut: one voice a staff
    assert 'class="grpSym"' in svg   # the brace joining the two hands
    assert ">10<" in svg   # bars numbered as in the piece
    rounded = np.round(on * 4) / 4   # a performance is rounded to sixteenths
    assert k["played"] == int(((rounded >= 36) & (rounded < 48)).sum()) > 10, k
    shown = show_score(path, bars=(10, 12)).data
    assert "Maestro_1.mid: bars 10-12" in shown and "a performance" in shown
    assert engraved_counts(svg_of(shown))["played"] == k["played"]


def test_time_signatures_hold_on_every_staff(embedded):
    "A waltz in 3/4 split over a grand staff, and signature changes (8/4, 3/4, 8/4) inside the bars shown, on 4 staves."
    waltz = embedded / "MIDIs_one_track" / "6354774_Macabre Waltz.mid"
    assert (read_midi(waltz).time_signatures[0].numerator, read_midi(waltz).time_signatures[0].denominator) == (3, 4)
    snip = score_snippet(waltz, bars=4)
    assert [[m.barDuration.quarterLength for m in p.getElementsByClass("Measure")] for p in snip.parts] == [[3.0] * 4] * 2
    etude = embedded / "MIDIs_one_track" / "6338816_Etude No. 4.mid"
    snip = score_snippet(etude, bars=(6, 8))
    assert len(snip.parts) == 4   # two piano tracks, each on a grand staff
    for p in snip.parts:
        assert [(m.number, m.barDuration.quarterLength) for m in p.getElementsByClass("Measure")] == [(6, 8.0), (7, 3.0), (8, 8.0)]
    k = engraved_counts(engrave(etude, bars=(6, 8)))
    assert (k["measures"], k["staves"]) == (3, 4), k


def test_bad_inputs_are_named_by_engrave_and_shown_by_show_score(chorale, tmp_path):
    with pytest.raises(ValueError, match="`score_or_path` has no notes"):
        engrave(Score(480))
    missing = tmp_path / "nothing_here.mid"
    with pytest.raises(MidiError, match="nothing_here.mid: no such file"):
        engrave(missing)
    n_bars = -(-read_midi(chorale).end() // bar_ticks(read_midi(chorale)))
    with pytest.raises(ValueError, match=f"has {n_bars} bars"):
        engrave(chorale, bars=(n_bars + 1, n_bars + 2))
    with pytest.raises(TypeError, match="`score_or_path` must be a symusic.Score or the path"):
        engrave([60, 62, 64])
    for bad, reason in ((Score(480), "`score_or_path` has no notes"), (missing, "nothing_here.mid: no such file")):
        html = show_score(bad).data   # never raises: the reason takes the notation's place
        assert 'class="sage-score-fallback"' in html and reason in html and "<svg" not in html, html


def test_engraving_that_fails_or_hangs_becomes_an_engrave_error_with_the_reason(chorale, monkeypatch):
    with pytest.raises(EngraveError, match=r"engraving bars 1-\d+ of '.*' took over 0.001 s"):
        engrave(chorale, bars=None, timeout=0.001)   # stopped in the child, named
    def broken(m, width, scale): raise RuntimeError("verovio is broken today")
    monkeypatch.setattr(listen, "_svg", broken)   # the forked child inherits it
    with pytest.raises(EngraveError, match="could not engrave bars 1-2 of .*verovio is broken today") as e:
        engrave(chorale, bars=2)
    assert "music21.stream.Measure 1" in e.value.listing and "Measure 3" not in e.value.listing
    html = show_score(chorale, bars=2).data
    assert "No engraved notation" in html and "verovio is broken today" in html and "music21.stream.Measure 1" in html


def test_engrave_pair_colours_exactly_the_continuation(chorale):
    score = read_midi(chorale)
    bar = bar_ticks(score)
    prompt = score.copy().clip(0, 2 * bar + score.tpq, clip_end=False)   # the notes starting in bars 1-2 and on beat 1 of bar 3
    svg = engrave_pair(prompt, score, bars=(2, 4))
    k = engraved_counts(svg)
    shown_new = sum(2 * bar + score.tpq <= n.time < 4 * bar for t in score.tracks for n in t.notes)
    assert k["measures"] == 3 and k["played"] == sum(bar <= n.time < 4 * bar for t in score.tracks for n in t.notes)
    assert k["colored"] == shown_new > 0, (k, shown_new)   # exactly the new notes of bars 2-4 are coloured
    # the default window: two bars before the bar where the continuation starts (bar 3), six bars in all
    auto = engraved_counts(engrave_pair(prompt, score))
    assert auto["measures"] == min(6, -(-score.end() // bar))
    html = show_pair(prompt, score, bars=(2, 4)).data
    assert f"in colour ({shown_new} notes)" in html and listen.CONTINUATION_COLOR in html
    assert engraved_counts(engrave_pair(score, score, bars=2))["colored"] == 0   # nothing new, nothing coloured
    with pytest.raises(ValueError, match="`continued` has no notes"):
        engrave_pair(prompt, Score(480))
    assert "No engraved notation" in show_pair(prompt, "no_such.mid").data


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
