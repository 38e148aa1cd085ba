"""The efficient-attention lesson (nbs/lesson_efficient_attention.ipynb): every exercise has a question, a cell for the
student and a folded solution whose checks pass; the lesson runs in seconds without a corpus; its stored outputs are small
and hold no machine paths; the index links it first."""
import json, re, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "lesson_efficient_attention.ipynb"


def cells():
    return json.loads(NB.read_text())["cells"]


def src(c) -> str:
    return "".join(c["source"])


def tags(c) -> list:
    return c.get("metadata", {}).get("tags", [])


@pytest.fixture(scope="module")
def ran():
    "Every code cell of the lesson run in order in one namespace (exercise cells as shipped, unfilled), and the seconds it took."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.display import display
    ns = {"__name__": "__lesson__", "display": display}
    t = time.perf_counter()
    for i, c in enumerate(cells()):
        if c["cell_type"] != "code": continue
        try: exec(compile(src(c), f"<lesson cell {i}>", "exec"), ns)
        except Exception as e: raise AssertionError(f"lesson cell {i} ({tags(c) or 'lesson'}) failed: {e!r}\n{src(c)[:300]}") from e
        plt.close("all")
    return ns, time.perf_counter() - t


def test_every_exercise_has_a_question_a_student_cell_and_a_folded_solution():
    cs = cells()
    sols = [i for i, c in enumerate(cs) if "solution" in tags(c)]
    exs = [i for i, c in enumerate(cs) if "exercise" in tags(c)]
    assert 6 <= len(sols) <= 10 and len(exs) == len(sols), (len(exs), len(sols))
    for n, (e, s) in enumerate(zip(exs, sols), 1):
        q = cs[e - 1]
        assert s == e + 1, f"exercise {n}: its solution must follow its cell"
        assert q["cell_type"] == "markdown" and src(q).startswith(f"**Exercise {n}.**"), f"exercise {n}: no question cell before it"
        sol = cs[s]
        assert sol["cell_type"] == "code" and sol["metadata"].get("jupyter", {}).get("source_hidden") is True, f"solution {n} is not folded"
        assert re.search(r"\bassert\b", src(sol)), f"solution {n} checks nothing"
        assert not sol.get("outputs"), f"solution {n} stores an output (it would show the answer while folded)"
    # nbdev_clean keeps the fold only if settings.ini allows the cell metadata key
    ini = (ROOT / "settings.ini").read_text()
    allowed = re.search(r"^allowed_cell_metadata_keys\s*=(.*)$", ini, re.M).group(1).split()
    assert {"tags", "jupyter"} <= set(allowed)


def test_solutions_pass_and_the_lesson_runs_in_seconds(ran):
    ns, seconds = ran
    assert seconds < 60, f"the lesson's code took {seconds:.0f} s"
    for name in ("sol1_cached", "sol3_gqa_bytes", "sol4_G", "sol5_total", "sol6_mha", "sol7_gqa", "sol8_W", "sol9_r"):
        assert name in ns, f"{name}: a solution did not run"
    assert (ns["sol3_gqa_bytes"], ns["sol4_G"], ns["sol8_W"], ns["sol9_r"]) == (10 * 2**30, 4, 3328, 256)


def test_a_solution_tells_a_right_answer_from_a_wrong_one(ran, capsys):
    ns, _ = ran
    ns["ex3_gqa_bytes"] = 10 * 2**30
    assert ns["your_answer"]("ex3_gqa_bytes", ns["sol3_gqa_bytes"]) is True
    ns["ex3_gqa_bytes"] = 80 * 2**30
    assert ns["your_answer"]("ex3_gqa_bytes", ns["sol3_gqa_bytes"]) is False
    assert "differs" in capsys.readouterr().out
    # the coding exercise: a correct cached step agrees with the full layer, a step that forgets RoPE on the keys does not
    step, full, W4, x1 = ns["gqa_step_solution"], ns["gqa_layer"], ns["W4"], ns["x1"]
    torch = ns["torch"]
    def run(fn):
        ck, cv = torch.zeros(2, 7, 8), torch.zeros(2, 7, 8)
        return torch.stack([fn(x1[t], t, *W4, 4, 2, ck, cv) for t in range(7)])
    ref = full(x1, *W4, H=4, G=2, pos=torch.arange(7))
    assert ns["close"](run(step), ref)
    def no_rope(x_t, t, Wq, Wk, Wv, Wo, H, G, ck, cv):
        ck[:, t:t + 1] = ns["heads"](x_t[None] @ Wk.T, G)
        cv[:, t:t + 1] = ns["heads"](x_t[None] @ Wv.T, G)
        q = ns["rope"](ns["heads"](x_t[None] @ Wq.T, H), torch.tensor([t]))
        return ns["grouped_attention"](q, ck[:, :t + 1], cv[:, :t + 1]).transpose(0, 1).reshape(-1) @ Wo.T
    assert not ns["close"](run(no_rope), ref)


def test_the_lesson_equals_the_project_layers(ran):
    "The lesson's minimal GQA and AS-KVHS layers are the project's CausalSelfAttention on the same weights (and differ on others)."
    ns, _ = ran
    torch, A = ns["torch"], ns["AttentionConfig"]
    torch.manual_seed(11)
    x, pos = torch.randn(5, 32), torch.arange(5)
    att = ns["CausalSelfAttention"](A(d_model=32, n_head=8, n_kv_head=2, attention="gqa")).eval()
    with torch.no_grad():
        W = ns["weights_of"](att)
        assert ns["close"](ns["gqa_layer"](x, *W, H=8, G=2, pos=pos), att(x[None])[0][0])
        assert not ns["close"](ns["gqa_layer"](x, W[0], W[2], W[1], W[3], H=8, G=2, pos=pos), att(x[None])[0][0])  # keys and values swapped


def test_header_outputs_and_size():
    cs = cells()
    head = src(cs[0]) + src(cs[1])
    assert re.search(r"about \d+ seconds on 2 CPU cores", head) and "needs no corpus" in head
    assert not any(c["cell_type"] == "code" and re.match(r"\s*#\s*\|\s*(default_exp|export)", src(c)) for c in cs)
    assert NB.stat().st_size < 1.5e6
    outs = [o for c in cs if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error" or o.get("name") == "stderr"]
    text = json.dumps(outs)
    assert not re.search(r"(/work/|/home/|/tmp/|/root/|/Users/|C:\\\\)", text), "an output names a machine path"
    pngs = [o["data"]["image/png"] for o in outs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 5 and max(len(p) for p in pngs) < 200_000
    words = " ".join(src(c) for c in cs if c["cell_type"] == "markdown").lower()
    assert not re.search(r"\b(issue|ticket|helper|nbdev)\b", words)


def test_index_links_the_lesson_first_for_instructors():
    idx = json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"]
    top = "".join(src(c) for c in idx[:3])
    assert "For instructors" in top and "](nbs/lesson_efficient_attention.ipynb)" in top
    assert "nbs/lesson_efficient_attention.ipynb" in (ROOT / "README.md").read_text()
