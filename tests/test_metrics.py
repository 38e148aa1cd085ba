"Tests of sage_paper.metrics: the four NMSI terms, NMSI, per-program NMSI and bits per note."
import math

import numpy as np
import pytest
from symusic import Score, Tempo

from sage_paper.metrics import (NMSIConfig, NMSI_TERMS, bits_per_note, bits_per_note_from_token_nll, chroma_similarity,
                                density_similarity, groove_similarity, make_score, nmsi, nmsi_by_program, nmsi_terms,
                                note_density, notes_array, onset_patterns, self_similarity_matrix, structure_similarity)

TERM_FNS = [chroma_similarity, groove_similarity, structure_similarity, density_similarity]


def shifted(notes, dt=0.0, dp=0):
    "Notes (tuples in beats) moved by `dt` beats and `dp` semitones."
    return [(n[0] + dt, n[1], n[2] + dp) + tuple(n[3:]) for n in notes]


def bars(pitch_rows, rhythm=(0, 1, 2, 3), dur=1.0, start=0):
    "One bar per row of pitches, with the given onsets inside each 4-beat bar."
    return [(start + 4 * b + o, dur, p) for b, row in enumerate(pitch_rows) for o, p in zip(rhythm, row)]


# A little 8-bar tune in C major: phrase A A B A, twice; rhythm varies within the bar.
A, B = [60, 64, 67, 64], [65, 69, 72, 69]
TUNE = bars([A, A, B, A] * 2, rhythm=(0, 1, 1.5, 3))
# Disjoint pitch classes (C#, F#, G# chords) on the "e" and "a" sixteenths TUNE never uses: 6 notes a beat, not 1.
FAR = [(b + f, 0.25, p) for b in range(32) for f in (0.25, 0.75) for p in (61, 66, 68)]


@pytest.fixture(scope="module")
def chorales(tmp_path_factory):
    "Two Bach chorales from music21's corpus, written to MIDI and read back with symusic."
    from music21 import corpus
    out = {}
    for name in ("bach/bwv66.6", "bach/bwv4.8"):
        path = tmp_path_factory.mktemp("midi") / (name.split("/")[1] + ".mid")
        corpus.parse(name).write("midi", fp=str(path))
        out[name] = Score(str(path))
    return out


# --- notes_array and make_score -------------------------------------------------------------------------------

def test_notes_array_beats_drums_and_order():
    s = make_score([(2, 1, 64), (0, 2, 60, 90), (0, 0.5, 36, 70, 33), (1, 0.25, 38, 100, -1)], tpq=96)
    a = notes_array(s)
    assert a.shape == (3, 5)
    assert a.tolist() == [[0, 0.5, 36, 70, 33], [0, 2, 60, 90, 0], [2, 1, 64, 80, 0]]
    drums = notes_array(s, include_drums=True)
    assert sorted(drums[:, 4].tolist()) == [-1, 0, 0, 33] and drums[drums[:, 4] == -1, 0].tolist() == [1.0]
    assert notes_array(s, programs=[0])[:, 2].tolist() == [60, 64]


def test_notes_array_same_beats_for_any_tpq_tempo_and_time_unit():
    notes = [(0, 1, 60), (1.5, 0.25, 62), (3.75, 2, 67, 80, 40)]
    ref = notes_array(make_score(notes, tpq=480))
    assert np.array_equal(notes_array(make_score(notes, tpq=96, qpm=61)), ref)
    sec = make_score(notes, tpq=480, qpm=73).to("second")
    assert np.allclose(notes_array(sec), ref)
    assert np.allclose(notes_array(make_score(notes).to("quarter")), ref)


def test_notes_array_and_make_score_errors():
    with pytest.raises(TypeError, match="`score` must be a symusic.Score"):
        notes_array(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="pitch must be in 0..127"):
        make_score([(0, 1, 200)])
    with pytest.raises(ValueError, match="onset and duration must be >= 0"):
        make_score([(-1, 1, 60)])


# --- the four terms --------------------------------------------------------------------------------------------

def test_identical_gives_100_and_terms_one():
    for x in (TUNE, make_score(TUNE), FAR):
        assert nmsi(x, x) == pytest.approx(100.0, abs=1e-6)
        assert all(v == pytest.approx(1.0, abs=1e-9) for v in nmsi_terms(x, x).values())


def test_tritone_lowers_chroma_keeps_groove_structure_density():
    t = nmsi_terms(shifted(TUNE, dp=6), TUNE)
    assert t["chroma"] < 0.5
    assert t["groove"] == pytest.approx(1.0) and t["structure"] == pytest.approx(1.0) and t["density"] == pytest.approx(1.0)
    # a C major triad against an F# major triad shares no pitch class at all
    assert chroma_similarity([(0, 4, 60), (0, 4, 64), (0, 4, 67)], [(0, 4, 66), (0, 4, 70), (0, 4, 73)]) == 0.0


def test_time_shift_and_rhythm_change_lower_groove():
    assert groove_similarity(shifted(TUNE, dt=4), TUNE) == pytest.approx(1.0)  # a whole bar later: same groove
    assert nmsi(shifted(TUNE, dt=8), TUNE) == pytest.approx(100.0)  # and the same everything (re-based to its first bar)
    assert groove_similarity(shifted(TUNE, dt=0.5), TUNE) < 0.7  # an eighth later
    other_rhythm = bars([A, A, B, A] * 2, rhythm=(0, 0.75, 2, 2.5))
    g = groove_similarity(other_rhythm, TUNE)
    assert g < 0.8
    assert chroma_similarity(other_rhythm, TUNE) > 0.95  # same pitches, similar durations


def test_disjoint_everything_is_low():
    t = nmsi_terms(FAR, TUNE)
    assert t["chroma"] == 0.0 and t["groove"] == 0.0
    assert t["density"] == pytest.approx(1 / 6)
    assert nmsi(FAR, TUNE) < 40


def test_terms_in_unit_interval_and_symmetric():
    rng = np.random.default_rng(0)
    pieces = [TUNE, FAR, shifted(TUNE, dt=0.25, dp=5), bars([A, B, [62, 65, 69, 72]], rhythm=(0, 0.5, 1, 3.25))]
    for _ in range(4):  # random pieces of different lengths
        n = int(rng.integers(3, 40))
        pieces.append(np.stack([np.sort(rng.uniform(0, 30, n)), rng.uniform(0.1, 3, n), rng.integers(30, 90, n)], 1))
    for g in pieces:
        for r in pieces:
            terms = nmsi_terms(g, r)
            assert set(terms) == set(NMSI_TERMS)
            for name, fn in zip(NMSI_TERMS, TERM_FNS):
                assert 0.0 <= terms[name] <= 1.0
                assert terms[name] == pytest.approx(fn(g, r))
                assert fn(g, r) == pytest.approx(fn(r, g), abs=1e-12), name
            assert 0.0 <= nmsi(g, r) <= 100.0


def test_structure_sees_repetition_not_key():
    ababab = bars([A, B] * 4)
    aaaabbbb = bars([A] * 4 + [B] * 4)
    assert structure_similarity(shifted(ababab, dp=6), ababab) == pytest.approx(1.0)
    assert structure_similarity(aaaabbbb, ababab) < 0.8
    ssm = self_similarity_matrix(ababab)
    assert ssm.shape == (8, 8)
    assert np.allclose(ssm, ssm.T) and np.allclose(ssm[::2, ::2], 1) and (ssm[0, 1] < 1)


def test_structure_resamples_different_lengths():
    # the same A-B alternation at half the length keeps the same block pattern after resampling
    long, short = bars([A, A, B, B] * 2), bars([A, B] * 2)
    assert structure_similarity(short, long) == pytest.approx(1.0)
    assert structure_similarity(bars([A, B, B, A]), long) < 0.9


def test_density_ratio():
    quarters = [(b, 1, 60) for b in range(8)]
    eighths = [(b / 2, 0.5, 60) for b in range(16)]
    assert note_density(quarters) == 1.0 and note_density(eighths) == 2.0
    assert density_similarity(eighths, quarters) == pytest.approx(0.5)


def test_onset_patterns_grid():
    p = onset_patterns([(0, 1, 60), (0, 1, 64), (2.5, 1, 62), (5.25, 1, 60)])
    assert p.shape == (2, 16)
    assert p[0].nonzero()[0].tolist() == [0, 10] and p[1].nonzero()[0].tolist() == [5]
    assert onset_patterns([(0, 1, 60)], bar_beats=3, steps_per_beat=2).shape == (1, 6)


# --- invariances ----------------------------------------------------------------------------------------------

def test_invariant_to_tpq_and_tempo():
    g, r = make_score(shifted(TUNE, dt=0.25, dp=2), tpq=480), make_score(TUNE, tpq=480)
    g96, r96 = make_score(shifted(TUNE, dt=0.25, dp=2), tpq=96, qpm=70), make_score(TUNE, tpq=96, qpm=150)
    assert nmsi(g96, r96) == pytest.approx(nmsi(g, r), abs=1e-9)
    assert nmsi_terms(g96, r) == pytest.approx(nmsi_terms(g, r96))
    assert nmsi(r96, r) == pytest.approx(100.0, abs=1e-6)
    # a tempo change in the middle of the piece changes seconds, not beats
    rt = make_score(TUNE, tpq=480)
    rt.tempos.append(Tempo(4 * 480, qpm=60))
    assert nmsi(rt, r) == pytest.approx(100.0, abs=1e-6)
    assert nmsi(rt.to("second"), r) == pytest.approx(100.0, abs=1e-6)


def test_multitrack_is_merged_and_drums_ignored():
    melody, bass = TUNE, [(4 * b, 4, 36 + (b % 2) * 5, 80, 33) for b in range(8)]
    multi = make_score(melody + bass)
    merged = make_score([n[:3] for n in melody + bass])  # the same notes in one piano track
    assert len(multi.tracks) == 2 and len(merged.tracks) == 1
    assert nmsi(multi, merged) == pytest.approx(100.0, abs=1e-6)
    for other in (make_score(FAR), make_score(shifted(TUNE, dp=3))):
        assert nmsi_terms(multi, other) == pytest.approx(nmsi_terms(merged, other))
    other = make_score(shifted(TUNE, dt=0.5, dp=3))
    drums = [(b / 2, 0.25, 42, 100, -1) for b in range(64)]
    assert nmsi_terms(make_score(melody + bass + drums), other) == pytest.approx(nmsi_terms(multi, other))
    # the bass alone changes the picture: the merged texture differs from the melody alone
    assert nmsi(make_score(melody), multi) < 100.0


def test_nmsi_by_program():
    melody, bass = TUNE, [(4 * b, 4, 36, 80, 33) for b in range(8)]
    ref = make_score(melody + bass)
    assert nmsi_by_program(ref, ref) == pytest.approx({0: 100.0, 33: 100.0})
    gen = make_score(melody + shifted(bass, dp=6))  # bass a tritone off, melody right
    per = nmsi_by_program(gen, ref)
    assert per[0] == pytest.approx(100.0) and per[33] < 100.0
    assert nmsi_by_program(make_score(melody), ref)[33] == 0.0  # the generation dropped the bass
    with pytest.raises(ValueError, match="`r` needs a program column"):
        nmsi_by_program(notes_array(ref), np.asarray(TUNE))


# --- weights and errors ---------------------------------------------------------------------------------------

def test_weights():
    t = nmsi_terms(FAR, TUNE)
    assert nmsi(FAR, TUNE) == pytest.approx(25 * sum(t.values()))
    assert nmsi(FAR, TUNE, weights={"density": 1}) == pytest.approx(100 * t["density"])
    assert nmsi(FAR, TUNE, weights=[2, 0, 0, 2]) == pytest.approx(50 * (t["chroma"] + t["density"]))
    for bad, msg in (([1, 1], "needs 4 values"), ([1, -1, 1, 1], ">= 0"), ([0, 0, 0, 0], "not all 0"),
                     ({"melody": 1}, "unknown terms")):
        with pytest.raises(ValueError, match="`weights`.*" + msg):
            nmsi(TUNE, TUNE, weights=bad)


def test_bar_length_parameter():
    waltz = [(3 * b + o, 1, p) for b in range(8) for o, p in zip((0, 1, 2), (60, 64, 67))]
    assert onset_patterns(waltz, bar_beats=3).shape == (8, 12)
    cfg = NMSIConfig(bar_beats=3)
    assert nmsi(waltz, waltz, cfg=cfg) == pytest.approx(100.0)
    # in 3-beat bars the waltz is one repeated bar; shifting it by a beat moves its downbeat
    assert groove_similarity(shifted(waltz, dt=1), waltz, bar_beats=3) == pytest.approx(1.0)  # all three beats hit anyway
    accent = [(3 * b, 1, 48) for b in range(8)]
    assert groove_similarity(shifted(accent, dt=1), accent, bar_beats=3) == 0.0
    with pytest.raises(ValueError, match="`bar_beats` must be > 0"):
        nmsi(waltz, waltz, cfg=NMSIConfig(bar_beats=0))
    with pytest.raises(ValueError, match="must be whole"):
        groove_similarity(waltz, waltz, bar_beats=2.1, steps_per_beat=4)


def test_empty_inputs():
    empty = make_score([])
    drums_only = make_score([(0, 1, 36, 100, -1)])
    for bad_r in (empty, drums_only, np.zeros((0, 5)), []):
        with pytest.raises(ValueError, match="reference `r` has no"):
            nmsi(TUNE, bad_r)
        for fn in TERM_FNS:
            with pytest.raises(ValueError, match="reference `r` has no"):
                fn(TUNE, bad_r)
    # a silent generation is scoreable: it shares nothing with the reference
    for silent in (empty, drums_only, np.zeros((0, 5))):
        assert nmsi(silent, TUNE) == 0.0
        assert nmsi_terms(silent, TUNE) == dict.fromkeys(NMSI_TERMS, 0.0)
        with pytest.raises(ValueError, match="generated `g` has no"):
            nmsi(silent, TUNE, cfg=NMSIConfig(strict=True))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="`g` note array must have shape"):
        nmsi(np.zeros((3, 2)), TUNE)
    with pytest.raises(TypeError, match="`r` must be a symusic.Score"):
        nmsi(TUNE, "bwv66.6.mid")
    with pytest.raises(ValueError, match="`g` has negative"):
        nmsi([(-1, 1, 60)], TUNE)
    with pytest.raises(ValueError, match="`r` has non-finite"):
        nmsi(TUNE, [(0, np.nan, 60)])


# --- a real piece ---------------------------------------------------------------------------------------------

def test_real_chorales(chorales):
    bwv66, bwv4 = chorales["bach/bwv66.6"], chorales["bach/bwv4.8"]
    assert len(bwv66.tracks) == 4 and notes_array(bwv66).shape[0] == bwv66.note_num()
    assert nmsi(bwv66, bwv66) == pytest.approx(100.0, abs=1e-6)
    other = nmsi(bwv4, bwv66)
    assert 0.0 < other < 100.0
    assert other == pytest.approx(nmsi(bwv66, bwv4))
    # a transposed copy keeps everything but the harmony; the same notes at another resolution are the same
    t = nmsi_terms(bwv66.shift_pitch(6), bwv66)
    assert t["chroma"] < 0.5 and t["groove"] == pytest.approx(1.0) and t["structure"] == pytest.approx(1.0)
    assert nmsi(bwv66.resample(96), bwv66) == pytest.approx(100.0, abs=1e-6)
    # the soprano alone against the four-voice texture: a quarter of the density, far from 100
    sop = bwv66.tracks[0].notes.numpy()
    soprano = np.stack([sop["time"] / bwv66.tpq, sop["duration"] / bwv66.tpq, sop["pitch"]], 1)  # (N, 3)
    assert density_similarity(soprano, bwv66) == pytest.approx(len(soprano) / bwv66.note_num())
    assert nmsi(soprano, bwv66) < 90.0


# --- bits per note --------------------------------------------------------------------------------------------

def test_bits_per_note_arithmetic():
    assert bits_per_note(10 * math.log(2), 10) == pytest.approx(1.0)
    assert bits_per_note(0.0, 5) == 0.0
    # uniform over 256 tokens, 3 tokens a note = 24 bits a note; one 2**24-way token a note: also 24
    assert bits_per_note_from_token_nll(np.full(30, math.log(256)), 10) == pytest.approx(24.0)
    assert bits_per_note_from_token_nll([math.log(2 ** 24)] * 10, 10) == pytest.approx(24.0)
    s = make_score([(i, 1, 60) for i in range(4)] + [(0, 0.25, 42, 100, -1)])  # drums are encoded too: 5 notes
    assert bits_per_note(5 * math.log(2), s) == pytest.approx(1.0)


def test_bits_per_note_from_token_nll_mask_and_torch():
    torch = pytest.importorskip("torch")
    logits = torch.randn(2, 7, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(1))
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), reduction="none").reshape(2, 7)  # (B, T)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False  # padding
    expected = nll[mask].sum().item() / math.log(2) / 6
    assert bits_per_note_from_token_nll(nll, 6, mask=mask) == pytest.approx(expected)
    assert bits_per_note_from_token_nll(nll.numpy(), 6, mask=mask.numpy()) == pytest.approx(expected)
    assert bits_per_note_from_token_nll(nll, 6) > bits_per_note_from_token_nll(nll, 6, mask=mask)


def test_bits_per_note_errors():
    with pytest.raises(ValueError, match="`n_notes` must be > 0"):
        bits_per_note(1.0, 0)
    with pytest.raises(ValueError, match="`n_notes` must be > 0"):
        bits_per_note(1.0, make_score([]))
    with pytest.raises(ValueError, match="`n_notes` must be a whole number"):
        bits_per_note(1.0, 2.5)
    with pytest.raises(ValueError, match="`total_nll_nats`"):
        bits_per_note(-0.1, 3)
    with pytest.raises(ValueError, match="`total_nll_nats`"):
        bits_per_note(float("inf"), 3)
    with pytest.raises(ValueError, match="`mask` shape"):
        bits_per_note_from_token_nll(np.ones(4), 2, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="`token_nll`"):
        bits_per_note_from_token_nll(np.array([1.0, -2.0]), 2)
