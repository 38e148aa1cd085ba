"The committed checkpoints (data/checkpoints, trained by nbs/experiments/e06_checkpoints.ipynb): each loads on the CPU from its folder alone and continues a prompt; its card's numbers are those of MODEL_CARD.md and of figures/checkpoints.csv; the folder stays small."
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from sage_paper.data import read_midi
from sage_paper.explore import checkpoint_dir, continue_piece, list_checkpoints, load_checkpoint
from sage_paper.tokenizer import decode, encode

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(checkpoint_dir().glob("*/card.json"))


def test_the_listening_systems_are_committed_and_small():
    names = set(list_checkpoints().name)
    assert {"MHA", "AS-KVHS G=2", "BPE 2k", "CPWord (pooled)"} <= names, names
    total = sum(f.stat().st_size for f in checkpoint_dir().rglob("*") if f.is_file())
    assert total <= 20 * 2**20, f"data/checkpoints holds {total / 2**20:.1f} MiB (at most 20)"
    assert (checkpoint_dir() / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name)
def test_a_checkpoint_loads_on_the_cpu_and_continues_a_prompt(card, embedded):
    torch.set_num_threads(1)
    ck = load_checkpoint(card.parent)
    c = json.loads(card.read_text())
    assert ck.name == c["name"] and not ck.model.training and next(ck.model.parameters()).dtype == torch.float32
    assert ck.model.num_params() == c["params"] and ck.model.cfg.attention == c["attention"] and ck.model.cfg.n_kv_head == c["n_kv_head"]
    assert (ck.tok.is_trained if hasattr(ck.tok, "is_trained") else False) == ("BPE" in c["tokenizer"])
    sc = read_midi(embedded / "MIDIs_one_track" / "Maestro_4.mid")
    n = min(32, ck.model.cfg.max_seq_len // 2)
    prompt = encode(ck.tok, sc)[:n]
    out = continue_piece(ck.model, ck.tok, prompt, n, seed=0)
    assert len(out) == 2 * n and (out[:n] == prompt).all()
    assert decode(ck.tok, out).note_num() > decode(ck.tok, prompt).note_num()
    sd = torch.load(card.parent / "model.pt", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())  # stored in half precision
    assert c["model_bytes"] == (card.parent / "model.pt").stat().st_size


def _md_rows():
    "checkpoint name -> the cells of its row in MODEL_CARD.md's table."
    rows = {}
    for line in (checkpoint_dir() / "MODEL_CARD.md").read_text().splitlines():
        cells = [x.strip() for x in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 12 and cells[0] not in ("checkpoint", "---"): rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name)
def test_the_cards_numbers_are_those_of_model_card_md_and_checkpoints_csv(card):
    c = json.loads(card.read_text())
    r = _md_rows()[c["name"]]
    assert r[1] == f"`{c['folder']}`" == f"`{card.parent.name}`" and r[2] == c["tokenizer"] and r[4] == f"{c['params']:,}" and r[5] == str(c["steps"])
    assert (float(r[6]), float(r[7])) == pytest.approx((c["bits_per_note"], c["untrained_bits_per_note"]), abs=5e-4)
    nm, unm = (tuple(map(float, x.split(" ± "))) for x in (r[8], r[9]))
    assert nm == pytest.approx((c["nmsi"], c["nmsi_se"]), abs=0.05) and unm == pytest.approx((c["untrained_nmsi"], c["untrained_nmsi_se"]), abs=0.05)
    assert r[10] == c["profile"] and r[11].strip("`+") == c["git_sha"][:7]
    t = pd.read_csv(ROOT / "figures" / "checkpoints.csv")
    row = t[(t.profile == c["profile"]) & (t.name == c["name"])]
    assert len(row) == 1, f"figures/checkpoints.csv has {len(row)} rows of {c['name']!r} ({c['profile']})"
    for k in ("bits_per_note", "untrained_bits_per_note", "nmsi", "untrained_nmsi", "params", "steps", "heldout_notes", "model_bytes", "train_seconds"):
        assert row[k].iloc[0] == pytest.approx(c[k]), k
    assert row.git_sha.iloc[0] == c["git_sha"] and c["bits_per_note"] < c["untrained_bits_per_note"]
