"The BPE study's driver on a real corpus folder: rows, columns, the BPE cache, and the velocity option."
import shutil
from pathlib import Path

from sage_paper.bpe_study import BPEStudyConfig, bpe_study


def test_study_rows_and_columns(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGE_PAPER_DATA", str(tmp_path))
    # the study loads corpora by name: point the music21 cache at the fixture's folder
    shutil.copytree(Path(small_corpus.multitrack_path[0]).parents[1], tmp_path / "cache" / "music21")
    cfg = BPEStudyConfig(views=("music21-multitrack", "music21-piano"), vocab_sizes=(0, 700, 10**6),
                         composers=("bach", "haydn", "palestrina"), max_per_composer=3, lm=None)
    df, pieces, curves = bpe_study(cfg, log=None)
    assert len(df) == 6 and set(df.vocab_size) == {0, 700, 10**6} and len(pieces) == 0 and len(curves) == 0
    for c in ("view", "velocities", "vocab_size", "vocab_size_actual", "tokens_per_note_train", "tokens_per_note_heldout",
              "heldout_vocab_usage", "cross_track_merge_share", "multi_note_merge_share", "merge_len_vocab", "bits_per_note", "nmsi",
              "tokens_per_note_heldout_rel"):
        assert c in df, c
    assert df.tokens_per_note_heldout_rel.notna().all()  # a tokenization-only study keeps its relative columns
    assert (df[df.view == "music21-piano"].cross_track_merge_share.dropna() == 0).all()
    assert (df.groupby("view").tokens_per_note_train.apply(lambda s: s.is_monotonic_decreasing)).all()
    assert list((tmp_path / "cache" / "bpe").rglob("vocab700.json"))
    vel, _, _ = bpe_study(BPEStudyConfig(views=("music21-piano",), vocab_sizes=(0,), composers=("bach",), max_per_composer=3,
                                      lm=None, velocities=True), log=None)
    assert vel.velocities.tolist() == [True] and vel.n_base[0] > df[df.view == "music21-piano"].n_base.iloc[0]  # Velocity tokens added
