"Tests of sage_paper.desk: the blind listening test's append-only answers, its statistics (checked against the claims ledger and the binomial definition), continuations of the same bars in every checkpoint's tokens, the widgets headless, and a MIDI file of one's own."
import math, multiprocessing as mp, re

import numpy as np
import pandas as pd
import pytest
import torch

from sage_paper.claims import askvhs_claims, wilson
from sage_paper.data import load_corpus, read_midi
from sage_paper.recurrence import bar_lines
from sage_paper.explore import list_checkpoints, load_checkpoint, token_view
from sage_paper.listen import engraved_counts
from sage_paper.evaluate import cached_sampler, model_attr_table, prompt_and_reference, sample_bars, token_bars, window_sampler
from sage_paper.generate import generate
from sage_paper.tokenizer import encode, grammar_for
from sage_paper.desk import (ANSWERS, LISTENING_COLUMNS, continue_bars, every_tokenizer, listening_summary, listening_test,
                             merges_used, read_answers, record_answer, sign_test, tokenizer_table, your_piece)


@pytest.fixture(scope="module")
def chorales():
    man = load_corpus("music21-multitrack", composers=("bach",), max_per_composer=2, progress=False)
    return man, [read_midi(p) for p in man.path]


@pytest.fixture(scope="module")
def checkpoints():
    return {n: load_checkpoint(n) for n in list_checkpoints().name}


# ---- answers ----

def test_each_answer_is_one_appended_row_and_earlier_bytes_never_change(tmp_path):
    p = tmp_path / "sub" / "answers.csv"
    record_answer(p, "bach/a", "MHA", "AS-KVHS G=2", "A")
    snapshots = [p.read_bytes()]
    for i, a in enumerate(["B", "none", "A", "B"]):
        record_answer(p, f"bach/{i}", "AS-KVHS G=2", "MHA", a)
        assert p.read_bytes().startswith(snapshots[-1]); snapshots.append(p.read_bytes())
    d = pd.read_csv(p, dtype=str)
    assert list(d.columns) == list(LISTENING_COLUMNS) and len(d) == 5
    assert d.preferred.tolist() == ["MHA", "MHA", "none", "AS-KVHS G=2", "MHA"]
    assert p.read_text().count("time,") == 1 and p.read_text().endswith("\n")


def test_an_empty_file_gets_its_header_and_a_foreign_one_is_refused_untouched(tmp_path):
    p = tmp_path / "empty.csv"; p.write_text("")
    record_answer(p, "x", "MHA", "BPE 2k", "none")
    assert p.read_text().splitlines()[0] == ",".join(LISTENING_COLUMNS)
    q = tmp_path / "results.csv"; q.write_text("variant,bits\nMHA,3.0\n")
    with pytest.raises(ValueError, match="results.csv: not a listening-test CSV"): record_answer(q, "x", "MHA", "BPE 2k", "A")
    assert q.read_text() == "variant,bits\nMHA,3.0\n"
    with pytest.raises(ValueError, match="answer='a'"): record_answer(p, "x", "MHA", "BPE 2k", "a")
    with pytest.raises(ValueError, match="both 'MHA'"): record_answer(p, "x", "MHA", "MHA", "A")
    assert len(pd.read_csv(p)) == 1


def _answer_many(path, worker, n):
    for i in range(n): record_answer(path, f"w{worker}/{i}", "MHA", "AS-KVHS G=2", ANSWERS[(worker + i) % 3])


def test_processes_answering_at_once_never_lose_or_interleave_a_row(tmp_path):
    p = tmp_path / "shared.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_answer_many, args=(p, w, 40)) for w in range(4)]
    for q in procs: q.start()
    for q in procs: q.join(60)
    assert all(q.exitcode == 0 for q in procs)
    d = pd.read_csv(p, dtype=str)
    assert len(d) == 160 and p.read_text().count("time,prompt_id") == 1 and d.notna().all().all()
    assert set(d.prompt_id) == {f"w{w}/{i}" for w in range(4) for i in range(40)}
    expect = d.answer.map({"A": "MHA", "B": "AS-KVHS G=2", "none": "none"})
    assert (d.preferred == expect).all()


def _answers(path, n=6):
    "A real answers file: `n` answers recorded by `record_answer`."
    for i in range(n): record_answer(path, f"bach/{i}", *(("MHA", "AS-KVHS G=2") if i % 2 else ("AS-KVHS G=2", "MHA")), ANSWERS[i % 3])
    return path.read_bytes()


def test_an_answer_after_a_file_saved_without_its_last_newline_starts_a_new_line(tmp_path):
    p = tmp_path / "a.csv"
    good = _answers(p)
    p.write_bytes(good.rstrip(b"\n"))                                 # an editor that drops the final newline
    record_answer(p, "bach/new", "MHA", "BPE 2k", "A")
    assert p.read_bytes().startswith(good) and p.read_bytes().count(b"\n") == good.count(b"\n") + 1
    d = read_answers(p)
    assert len(d) == 7 and d.attrs["malformed"] == [] and d.prompt_id.iloc[-1] == "bach/new"
    assert pd.read_csv(p, dtype=str).equals(d)                          # plain pandas reads it too


def test_a_half_written_row_is_skipped_and_named_never_fatal(tmp_path):
    p = tmp_path / "a.csv"
    good = _answers(p)
    p.write_bytes(good + b"2026-03-01T10:00:00+00:00,bach/cut,MHA,AS-KV")   # the last row cut short
    record_answer(p, "bach/after", "MHA", "AS-KVHS G=2", "B")
    lines = p.read_text().splitlines()
    assert lines[-2] == "2026-03-01T10:00:00+00:00,bach/cut,MHA,AS-KV" and lines[-1].endswith(",bach/after,MHA,AS-KVHS G=2,B,AS-KVHS G=2")
    d = read_answers(p)
    assert len(d) == 7 and d.prompt_id.iloc[-1] == "bach/after"
    assert d.attrs["malformed"] == [dict(line=8, text="2026-03-01T10:00:00+00:00,bach/cut,MHA,AS-KV", why="4 fields, a row has 6")]
    with pytest.warns(UserWarning, match=r"a.csv: 1 malformed row left out \(line 8: 4 fields, a row has 6\)"):
        s = listening_summary(p)
    assert s.answers.iloc[0] == 7 and s.attrs["malformed"] == d.attrs["malformed"]


def test_glued_and_hand_edited_rows_are_skipped_and_the_ledger_agrees(tmp_path):
    "A file that an older writer glued two answers into, with rows edited by hand: every bad row is named, the rest counted."
    p = tmp_path / "a.csv"
    good = _answers(p, 8).decode().splitlines()
    glued = good[1] + good[2]                                            # two answers on one line
    edited = [good[3].replace(",none,none", ",maybe,none"), good[4].rsplit(",", 1)[0] + ",BPE 2k", good[5].replace("MHA", "AS-KVHS G=2")]
    p.write_text("\n".join([good[0], *edited, "", good[6], glued, good[7]]) + "\n")
    with pytest.raises(pd.errors.ParserError): pd.read_csv(p, dtype=str)   # what the summary used to do
    d = read_answers(p)
    assert d.prompt_id.tolist() == ["bach/5", "bach/6"]
    assert [(b["line"], b["why"]) for b in d.attrs["malformed"]] == [
        (2, "answer 'maybe' is not one of A, B, none"), (3, "preferred 'BPE 2k' contradicts answer 'A' (which means 'MHA')"),
        (4, "it does not name two different systems"), (7, "11 fields, a row has 6 (two answers on one line?)")]
    with pytest.warns(UserWarning, match="4 malformed rows left out"):
        s = listening_summary(p)
    r = s.iloc[0]
    ledger = next(x for x in askvhs_claims({"listening_test": d}) if x["claim_id"] == "S-subjective")
    assert (r.answers, r.decided, r.prefer_challenger) == (2, 1, 1) and (ledger["our_value"], ledger["ci_low"], ledger["ci_high"]) == pytest.approx((r.share, r.ci_low, r.ci_high))


def test_a_byte_order_mark_is_accepted_and_a_wrong_header_shown_plainly(tmp_path):
    p = tmp_path / "excel.csv"
    good = _answers(p)
    p.write_bytes(b"\xef\xbb\xbf" + good.replace(b"\n", b"\r\n"))        # a spreadsheet's UTF-8 export: BOM and CRLF
    record_answer(p, "bach/new", "MHA", "BPE 2k", "none")
    d = read_answers(p)
    assert len(d) == 7 and d.attrs["malformed"] == [] and d.preferred.iloc[-1] == "none"
    assert listening_summary(p).answers.sum() == 7
    only_bom = tmp_path / "new.csv"; only_bom.write_bytes(b"\xef\xbb\xbf")   # a file saved empty
    record_answer(only_bom, "x", "MHA", "BPE 2k", "A")
    assert only_bom.read_text(encoding="utf-8-sig").splitlines()[0] == ",".join(LISTENING_COLUMNS) and len(read_answers(only_bom)) == 1
    nbsp = tmp_path / "nbsp.csv"; nbsp.write_text(",".join(LISTENING_COLUMNS).replace("time", "time\u00a0") + "\n")
    with pytest.raises(ValueError, match=r"its header is 'time\\xa0,prompt_id"): record_answer(nbsp, "x", "MHA", "BPE 2k", "A")
    with pytest.raises(ValueError, match=r"not a listening-test CSV"): read_answers(nbsp)
    with pytest.raises(ValueError, match="one line each"): record_answer(p, "bach/a\nb", "MHA", "BPE 2k", "A")


# ---- statistics ----

@pytest.mark.parametrize("n", range(0, 13))
def test_sign_test_is_the_two_sided_binomial_tail(n):
    pmf = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    for k in range(n + 1):
        want = sum(q for i, q in enumerate(pmf) if abs(i - n / 2) >= abs(k - n / 2) - 1e-12)  # outcomes at least as uneven
        assert sign_test(k, n) == pytest.approx(min(1.0, want), abs=1e-12) if n else math.isnan(sign_test(k, n))


def test_summary_counts_both_orders_and_agrees_with_the_claims_ledger(tmp_path):
    p = tmp_path / "a.csv"
    plan = [("MHA", "AS-KVHS G=2", "B")] * 7 + [("AS-KVHS G=2", "MHA", "A")] * 5 + [("AS-KVHS G=2", "MHA", "B")] * 3 + \
           [("MHA", "AS-KVHS G=2", "none")] * 2 + [("MHA", "BPE 2k", "A")] * 4 + [("CPWord (pooled)", "BPE 2k", "A")]
    for a, b, ans in plan: record_answer(p, "x", a, b, ans)
    s = listening_summary(p)
    assert s[["reference", "challenger"]].values.tolist() == [["MHA", "AS-KVHS G=2"], ["MHA", "BPE 2k"], ["MHA", "CPWord (pooled)"],
                                                              ["BPE 2k", "CPWord (pooled)"]]   # the listed pairs, then one found only in the file
    r = s.iloc[0]
    assert (r.answers, r.no_preference, r.decided, r.prefer_challenger) == (17, 2, 15, 12)
    assert (r.share, r.ci_low, r.ci_high) == pytest.approx(wilson(12, 15))
    assert r.sign_test_p == pytest.approx(2 * sum(math.comb(15, i) for i in range(4)) / 2 ** 15)
    assert (s.prefer_challenger[1], s.decided[1], s.answers[2], s.answers[3], s.prefer_challenger[3]) == (0, 4, 0, 1, 1)
    ledger = next(x for x in askvhs_claims({"listening_test": pd.read_csv(p)}) if x["claim_id"] == "S-subjective")
    assert (ledger["our_value"], ledger["ci_low"], ledger["ci_high"]) == pytest.approx((r.share, r.ci_low, r.ci_high))
    assert listening_summary(tmp_path / "none-yet.csv").answers.sum() == 0


# ---- continuations ----

def test_every_checkpoint_continues_the_same_four_bars_by_four_bars(chorales, checkpoints):
    _, scores = chorales
    onsets = lambda s: np.sort(np.concatenate([t.notes.numpy()["time"] for t in s.tracks if t.note_num()]))
    prompts = {}
    for name, ck in checkpoints.items():
        p, c = continue_bars(ck, scores[0], 4, 4, seed=3)
        bar = lambda t: np.searchsorted(bar_lines(c), t, side="right") - 1   # 0-based bar of each onset
        new = onsets(c)[p.note_num():]
        assert bar(onsets(p)).max() == 3 and len(new) and bar(new).min() >= 4 and bar(new).max() <= 7, (name, bar(new))
        assert (onsets(c)[:p.note_num()] == onsets(p)).all(), name
        prompts[name] = p.note_num()
    assert len(set(prompts.values())) == 1, prompts   # REMI, BPE and CPWord prompts hold the same notes


NAMES = ["MHA", "AS-KVHS G=2", "BPE 2k", "CPWord (pooled)"]   # flat, AS-KVHS, BPE and pooled


def _state(grammar, ids) -> list:
    return [s.tolist() for s in grammar.start(torch.from_numpy(np.asarray(ids))[None])]


@pytest.mark.parametrize("name", NAMES)
def test_cached_sampler_writes_the_window_samplers_tokens_past_the_context(name, chorales, checkpoints):
    """Two 4-bar prompts longer than the checkpoint's context, batched, sampled over several windows: the cached sampler's tokens
    are the window sampler's up to the first window whose grammar state, read from the window alone, is not the whole piece's
    (there the window sampler forgets where it is in the bar), and they are valid REMI, BPE or CPWord."""
    ck = checkpoints[name]
    tok, model, L = ck.tok, ck.model, ck.model.cfg.max_seq_len
    prompts = [prompt_and_reference(tok, encode(tok, s), 4, 1)[0] for s in chorales[1]]
    prompts[1] = prompts[1][:-3]   # another length, cut inside a bar
    assert min(map(len, prompts)) > L, (name, L, [len(p) for p in prompts])
    never, attr, step = (lambda k, g: False), model_attr_table(model, tok), L // 4
    old, new = (s(tok, seed=2, attr_of=attr)(model, prompts, 2 * L, never) for s in (window_sampler, cached_sampler))
    gr = grammar_for(tok)
    for p, o, g in zip(prompts, old, new):
        h = lambda off: np.concatenate([p, g[:off]])
        agree = next((off for off in range(0, len(g), step) if _state(gr, h(off)[-(L - step):]) != _state(gr, h(off))), len(g))
        assert len(g) == 2 * L and agree > L, (name, agree)   # several windows agree
        assert np.array_equal(g[:agree], o[:agree]), name
        assert tok.tokens_errors(np.concatenate([p, g]).tolist()) == 0, name


@pytest.mark.parametrize("name", NAMES)
def test_greedy_in_one_window_is_the_window_samplers_and_the_decoders(name, chorales, checkpoints):
    ck = checkpoints[name]
    tok, model, L = ck.tok, ck.model, ck.model.cfg.max_seq_len
    p = encode(tok, chorales[1][0])[:L // 2]
    n, never, attr = L - len(p), (lambda k, g: False), model_attr_table(model, tok)
    g = cached_sampler(tok, top_k=1, attr_of=attr)(model, [p], n, never)[0]
    assert np.array_equal(g, window_sampler(tok, top_p=1e-9, attr_of=attr)(model, [p], n, never)[0])
    want = generate(model, torch.from_numpy(p), n, grammar=grammar_for(tok), attr_of=attr, greedy=True)[0, len(p):]
    assert np.array_equal(g, want.numpy()) and len(g) == n


@pytest.mark.parametrize("name", NAMES)
def test_cached_sampler_stops_where_the_bars_end(name, chorales, checkpoints):
    "Through sample_bars: the continuation is the never-stopping one's first tokens, cut just before the first token of bar first + 2."
    ck = checkpoints[name]
    tok, model = ck.tok, ck.model
    p, _, first = prompt_and_reference(tok, encode(tok, chorales[1][0]), 4, 1)
    s = lambda: cached_sampler(tok, seed=1, attr_of=model_attr_table(model, tok))
    g = sample_bars(model, tok, [p], [first], 2, [10 * len(p)], s())[0]
    full = s()(model, [p], len(g) + 1, lambda k, g: False)[0]
    tb = token_bars(tok, np.concatenate([p, full]))[len(p):]
    assert np.array_equal(full[:len(g)], g) and (tb[len(g) - 1], tb[len(g)]) == (first + 1, first + 2), name

def test_listening_widget_writes_one_row_per_click_in_a_random_hidden_order(chorales, checkpoints, tmp_path):
    man, _ = chorales
    p = tmp_path / "answers.csv"
    pairs = (("MHA", "AS-KVHS G=2"),)
    lt = listening_test(pairs, man, p, checkpoints, prompt_bars=2, bars=2, max_seconds=2, seed=5)
    firsts = []
    for i, a in enumerate(["A", "B", "none", "A", "B", "A"]):
        shown = dict(lt.state)
        assert not any(n in lt.outputs["head"].value for n in pairs[0])
        assert all("<audio" in lt.outputs[k].outputs[0]["data"]["text/html"] for k in "AB")
        lt.controls[a].click()
        d = pd.read_csv(p, dtype=str)
        assert len(d) == i + 1, "one click, one row"
        last = d.iloc[-1]
        assert (last.prompt_id, last.system_a, last.system_b, last.answer) == (shown["prompt_id"], shown["system_a"], shown["system_b"], a)
        assert last.preferred == {"A": shown["system_a"], "B": shown["system_b"], "none": "none"}[a]
        firsts.append(shown["system_a"])
    assert set(firsts) == set(pairs[0])   # both orders were played
    with pytest.raises(ValueError, match="no checkpoint for"): listening_test((("MHA", "GQA"),), man, p, checkpoints)


# ---- your own piece ----

def test_your_piece_in_every_tokenizer_with_the_corpus_merges(embedded, checkpoints):
    sc = read_midi(embedded / "MIDIs_one_track" / "Maestro_3.mid")
    bpe = checkpoints["BPE 2k"].tok
    toks = every_tokenizer(bpe)
    t = tokenizer_table(sc, toks).set_index("tokenizer")
    assert list(t.index) == ["REMI", "TSD", "CPWord", "Octuple", "REMI + BPE"]
    v_remi, v_bpe = token_view(toks["REMI"], sc, None), token_view(bpe, sc, None)
    assert [q for ps in v_bpe.parts for q in ps] == [q for ps in v_remi.parts for q in ps]   # the merges spell out the REMI tokens
    assert t.loc["REMI + BPE", "tokens"] < t.loc["REMI", "tokens"] == len(v_remi)
    assert t.loc["REMI + BPE", "base_per_token"] == pytest.approx(len(v_remi) / len(v_bpe))
    mu = merges_used(bpe, sc, 5)
    counts = v_bpe[v_bpe.bpe & v_bpe.n_parts.ge(2)].groupby("token").size()   # merges: learned tokens of two or more base tokens
    assert mu.uses.tolist() == sorted(counts, reverse=True)[:5] and (mu.base_tokens >= 2).all()


def test_your_piece_widget_continues_engraves_and_plays(embedded, checkpoints):
    yp = your_piece(embedded / "MIDIs_one_track" / "Maestro_2.mid", {k: checkpoints[k] for k in ("MHA", "BPE 2k")}, max_seconds=3)
    assert [yp.outputs["tabs"].get_title(i) for i in range(5)] == ["REMI", "TSD", "CPWord", "Octuple", "REMI + BPE"]
    for name in ("MHA", "BPE 2k"):
        yp.controls["checkpoint"].value = name; yp.controls["run"].click()
        svg = re.search(r"<svg.*</svg>", yp.outputs["notation"].value, re.S)
        assert svg, yp.outputs["notation"].value[:400]
        k = engraved_counts(svg.group(0))
        assert 0 < k["colored"] < k["notes"] and f"continued by {name}" in yp.outputs["notation"].value, (name, k)
        assert len(yp.outputs["audio"].outputs) == 1
