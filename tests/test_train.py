"Tests of sage_paper.train: schedule, config errors, loss, exact resume (in and across processes), DDP gradients."
import json, math, os, shutil, socket, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sage_paper.train import (TrainConfig, Trainer, BatchStream, lm_loss, evaluate, lr_at, param_groups,
                              rng_state, set_rng_state, seed_everything, resolve_amp, shard_batch)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------- tiny models and data following the contract
class TinyLM(nn.Module):
    "Embedding + GRU + head(s): flat tokens (B, T) -> logits (B, T, V); pooled (B, T, F) -> list of F logits."
    def __init__(self, vocab=8, d=16, fields=None, dropout=0.0):
        super().__init__()
        self.fields = fields
        sizes = [vocab] * (fields or 1)
        self.emb = nn.ModuleList(nn.Embedding(v, d) for v in sizes)
        self.rnn, self.drop = nn.GRU(d, d, batch_first=True), nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(d, v) for v in sizes)

    def forward(self, tokens, attr=None):
        if self.fields: x = sum(e(tokens[..., f]) for f, e in enumerate(self.emb))  # (B, T, d)
        else: x = self.emb[0](tokens)  # (B, T, d)
        h = self.drop(self.rnn(x)[0])  # (B, T, d)
        logits = [hd(h) for hd in self.heads]
        return logits if self.fields else logits[0]


def cycle_batch(step, B=8, T=16, vocab=8, seed=0):
    "batch_at(step): sequences counting up by a random stride (1 or 2) from a random start, ids 1..vocab-1."
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    start = torch.randint(0, vocab - 1, (B, 1), generator=g)
    stride = torch.randint(1, 3, (B, 1), generator=g)
    return {'tokens': (start + stride * torch.arange(T)) % (vocab - 1) + 1}  # (B, T)


class ShuffledBatches:
    "A re-iterable of 3 batches, reshuffled each epoch through set_epoch (like a DistributedSampler)."
    def __init__(self, n_batches=3, B=8, T=16, seed=0):
        self.data = torch.cat([cycle_batch(i, B, T, seed=seed)['tokens'] for i in range(n_batches)])  # (n*B, T)
        self.B, self.seed, self.epoch = B, seed, 0
    def set_epoch(self, epoch): self.epoch = epoch
    def __iter__(self):
        perm = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.seed + 7 * self.epoch))
        for i in range(0, len(perm), self.B): yield {'tokens': self.data[perm[i:i + self.B]]}


class CarryLoss:
    "Stateful loss_fn: prepends the last k tokens of the previous batch as context (stands in for a recurrent memory)."
    def __init__(self, k=3): self.k, self.prev = k, None
    def __call__(self, model, batch):
        tok = batch['tokens']
        self.prev, prev = tok[:, -self.k:].clone(), self.prev
        if prev is not None: tok = torch.cat([prev, tok], 1)  # (B, k+T)
        return lm_loss(model, {'tokens': tok})
    def state_dict(self): return {'prev': self.prev}
    def load_state_dict(self, sd): self.prev = sd['prev']


def resume_cfg(ckpt_dir, **kw):
    "Config of the exact-resume runs: dropout, 3-batch epochs, windows and evaluations across the cut."
    return TrainConfig(**{**dict(max_steps=14, batch_size=8, lr=1e-2, warmup_steps=3, eval_every=5, eval_batches=2,
                                 log_every=3, ckpt_dir=str(ckpt_dir), device='cpu', deterministic=True, progress=False), **kw})


def resume_trainer(ckpt_dir, init_seed=0):
    torch.manual_seed(init_seed)
    return Trainer(TinyLM(dropout=0.2), ShuffledBatches(), resume_cfg(ckpt_dir), loss_fn=CarryLoss(),
                   val_batches=[cycle_batch(i, seed=9) for i in range(2)])


def ddp_batch(step):
    "Global batch of 6 where the first half is mostly padding: ranks see very different token counts."
    tok = cycle_batch(step, B=6, T=12)['tokens']  # (B, T)
    tok[:3, 5:] = 0
    return {'tokens': tok}


def ddp_cfg(ckpt_dir):
    return TrainConfig(max_steps=3, batch_size=6, lr=1e-2, warmup_steps=1, grad_clip=0.5, log_every=1, eval_every=0,
                       ckpt_dir=str(ckpt_dir), device='cpu', deterministic=True, progress=False)


def weights(model): return {k: v.detach().clone() for k, v in model.state_dict().items()}


def sub_env():
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env['OMP_NUM_THREADS'] = '1'
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), str(TESTS), env.get('PYTHONPATH', '')])
    return env


# ---------------------------------------------------------------- configuration and schedule
def test_lr_schedule_values():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # warm-up start
    assert lr_at(9, cfg) == pytest.approx(1e-3)  # warm-up end
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # cosine start
    assert lr_at(55, cfg) == pytest.approx(0.55e-3)  # midpoint of the cosine
    assert lr_at(100, cfg) == pytest.approx(1e-4)  # cosine end = min_lr
    lrs = [lr_at(s, cfg) for s in range(101)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # warm-up increases
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine decreases
    assert lr_at(0, TrainConfig(max_steps=5, warmup_steps=0, lr=2e-3)) == pytest.approx(2e-3)


@pytest.mark.parametrize('kw, field', [
    (dict(max_steps=10, warmup_steps=11), 'warmup_steps'), (dict(lr=0.0), 'lr'), (dict(lr=-1e-3), 'lr'),
    (dict(amp='fp8'), 'amp'), (dict(max_steps=0), 'max_steps'), (dict(batch_size=-2), 'batch_size'),
    (dict(betas=(0.9, 1.0)), 'betas'), (dict(min_lr_ratio=1.5), 'min_lr_ratio'), (dict(grad_clip=-1.0), 'grad_clip'),
    (dict(weight_decay=-0.1), 'weight_decay'), (dict(log_every=0), 'log_every'), (dict(device='gpu?'), 'device')])
def test_bad_config_names_field(kw, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}="): TrainConfig(**kw)


def test_amp_is_gpu_only():
    assert resolve_amp('auto', torch.device('cpu')) == 'off'
    with pytest.warns(UserWarning, match='fp16'): assert resolve_amp('fp16', torch.device('cpu')) == 'off'


def test_param_groups_no_decay_on_norms_biases_embeddings():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(10, 4); self.pos_emb = nn.Parameter(torch.zeros(6, 4))
            self.norm = nn.LayerNorm(4); self.proj = nn.Linear(4, 4); self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.tok.weight  # tied
    m = M()
    decay, no_decay = param_groups(m, 0.1)
    assert [id(p) for p in decay['params']] == [id(m.proj.weight)] and decay['weight_decay'] == 0.1
    assert {id(p) for p in no_decay['params']} == {id(p) for p in (m.tok.weight, m.pos_emb, m.norm.weight, m.norm.bias, m.proj.bias)}
    assert no_decay['weight_decay'] == 0.0


def test_rng_state_round_trip():
    seed_everything(5); st = rng_state()
    import random, numpy as np
    a = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(6); set_rng_state(st)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


# ---------------------------------------------------------------- loss
def test_pad_tokens_ignored():
    torch.manual_seed(0); m = TinyLM().eval()
    x = torch.randint(1, 8, (3, 9))  # (B, T)
    nll, n = lm_loss(m, {'tokens': x})
    padded = torch.cat([x, torch.zeros(3, 5, dtype=torch.long)], 1)  # (B, T+5)
    nll_p, n_p = lm_loss(m, {'tokens': padded})
    assert int(n) == 3 * 8 and int(n_p) == int(n)
    assert nll_p.item() == pytest.approx(nll.item(), rel=1e-5)
    # the pad id really is what is ignored: padding with a real token changes the loss
    nll_t, n_t = lm_loss(m, {'tokens': torch.cat([x, torch.full((3, 5), 3)], 1)})
    assert int(n_t) == 3 * 13 and nll_t.item() > nll.item()


def test_loss_matches_manual_cross_entropy():
    torch.manual_seed(1); m = TinyLM()
    x = torch.randint(1, 8, (2, 7)); x[1, 4:] = 0  # (B, T)
    nll, n = lm_loss(m, {'tokens': x})
    logits = m(x[:, :-1])  # (B, T-1, V)
    keep = x[:, 1:] != 0
    ref = -logits.log_softmax(-1).gather(-1, x[:, 1:, None])[..., 0][keep].sum()
    assert int(n) == int(keep.sum()) == 6 + 3
    assert nll.item() == pytest.approx(ref.item(), rel=1e-5)


def test_pooled_loss_sums_fields_and_ignores_pads_per_field():
    torch.manual_seed(2); m = TinyLM(fields=3)
    x = torch.randint(1, 8, (2, 6, 3))  # (B, T, F)
    x[0, 4:, 2] = 0  # field 2 padded at the end of sequence 0 (positions still count)
    x[1, 5:, :] = 0  # a fully padded position does not count
    nll, n = lm_loss(m, {'tokens': x})
    out = m(x[:, :-1])
    assert isinstance(out, list) and len(out) == 3
    ref = sum(F.cross_entropy(o.flatten(0, 1), x[:, 1:, f].flatten(), ignore_index=0, reduction='sum') for f, o in enumerate(out))
    assert nll.item() == pytest.approx(ref.item(), rel=1e-5)
    assert int(n) == 2 * 5 - 1
    nll_p, n_p = lm_loss(m, {'tokens': torch.cat([x, torch.zeros(2, 3, 3, dtype=torch.long)], 1)})  # (B, T+3, F)
    assert int(n_p) == int(n) and nll_p.item() == pytest.approx(nll.item(), rel=1e-5)
    with pytest.raises(ValueError, match='pooled'): lm_loss(lambda t: torch.zeros(*t.shape[:2], 8), {'tokens': x})
    with pytest.raises(ValueError, match='flat'): lm_loss(lambda t: [torch.zeros(*t.shape, 8)], {'tokens': x[..., 0]})


def test_evaluate_is_exact_over_batchings():
    torch.manual_seed(3); m = TinyLM()
    xs = torch.randint(1, 8, (6, 8)); xs[2, 3:] = 0  # (B, T)
    a, b = evaluate(m, [xs]), evaluate(m, [xs[:1], xs[1:5], xs[5:]])
    assert a['tokens'] == b['tokens'] == 6 * 7 - 5
    assert a['total_nll'] == pytest.approx(b['total_nll'], rel=1e-6)
    assert a['mean_nll'] == pytest.approx(a['total_nll'] / a['tokens']) and a['ppl'] == pytest.approx(math.exp(a['mean_nll']))


# ---------------------------------------------------------------- data stream
def test_batch_stream_positions():
    data = [torch.full((2, 3), i) for i in range(3)]  # three (B, T) batches
    s = BatchStream(data)
    assert [int(next(s)['tokens'][0, 0]) for _ in range(5)] == [0, 1, 2, 0, 1]
    s2 = BatchStream(data); s2.load_state_dict(s.state_dict())
    assert [int(next(s2)['tokens'][0, 0]) for _ in range(2)] == [2, 0]
    with pytest.raises(ValueError, match='one-shot'): BatchStream(x for x in data)
    with pytest.raises(ValueError, match='world_size=4'): shard_batch({'tokens': torch.ones(3, 2)}, 0, 4)


# ---------------------------------------------------------------- training
def test_loss_goes_down_on_a_learnable_task():
    torch.manual_seed(0)
    cfg = TrainConfig(max_steps=40, batch_size=8, lr=2e-2, warmup_steps=4, weight_decay=0.0, eval_every=20,
                      eval_batches=2, log_every=5, device='cpu', progress=False)
    rows = []
    tr = Trainer(TinyLM(), cycle_batch, cfg, val_batches=lambda i: cycle_batch(i, seed=1), callbacks=[lambda t, r: rows.append(r)])
    h = tr.fit()
    assert rows == h and [r['step'] for r in h] == list(range(5, 41, 5))
    assert h[-1]['train_loss'] < 0.5 * h[0]['train_loss']
    vals = [r['val_loss'] for r in h if r['val_loss'] is not None]
    assert len(vals) == 2 and vals[-1] < 0.5 * math.log(8)
    assert h[-1]['lr'] == pytest.approx(lr_at(39, cfg))
    assert set(h[0]) >= {'step', 'lr', 'train_loss', 'val_loss', 'tokens_per_s', 'elapsed'}


def test_exact_resume_in_process(tmp_path):
    straight = resume_trainer(tmp_path / 'a')
    straight.fit()
    part = resume_trainer(tmp_path / 'b')
    part.fit(stop_at=7)
    assert (tmp_path / 'b' / 'last.pt').exists() and part.step == 7
    shutil.copy(tmp_path / 'b' / 'last.pt', tmp_path / 'cut.pt')
    resumed = resume_trainer(tmp_path / 'b', init_seed=123)  # another init: everything must come from the checkpoint
    resumed.fit(resume=True)
    wa, wb = weights(straight.model), weights(resumed.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    key = lambda h: [(r['step'], r['lr'], r['train_loss'], r['val_loss'], r['grad_norm']) for r in h]
    assert key(resumed.history) == key(straight.history)
    assert torch.equal(resumed.loss_fn.prev, straight.loss_fn.prev)
    # control: the same cut without the generator states diverges (so the test can fail)
    other = resume_trainer(tmp_path / 'b', init_seed=123)
    other.load(tmp_path / 'cut.pt')
    seed_everything(99)
    other.fit()
    assert not all(torch.equal(wa[k], v) for k, v in weights(other.model).items())


def test_exact_resume_in_a_new_process(tmp_path):
    straight = resume_trainer(tmp_path / 'a')
    straight.fit()
    resume_trainer(tmp_path / 'b').fit(stop_at=8)
    out = tmp_path / 'resumed.pt'
    code = textwrap.dedent(f"""
        import torch
        from test_train import resume_trainer
        tr = resume_trainer({str(tmp_path / 'b')!r}, init_seed=321)
        tr.fit(resume=True)
        torch.save({{'model': tr.model.state_dict(), 'history': tr.history}}, {str(out)!r})
    """)
    subprocess.run([sys.executable, '-c', code], cwd=REPO, env=sub_env(), check=True, timeout=120)
    got = torch.load(out, weights_only=True)
    wa = weights(straight.model)
    assert all(torch.equal(wa[k], got['model'][k]) for k in wa)
    assert [r['train_loss'] for r in got['history']] == [r['train_loss'] for r in straight.history]


def test_resume_true_without_checkpoint_starts_fresh_and_missing_path_fails(tmp_path):
    tr = Trainer(TinyLM(), cycle_batch, TrainConfig(max_steps=2, batch_size=8, warmup_steps=1, ckpt_dir=str(tmp_path),
                                                    device='cpu', progress=False))
    assert [r['step'] for r in tr.fit(resume=True)] == [2] and (tmp_path / 'last.pt').exists()
    assert json.loads((tmp_path / 'history.json').read_text())[0]['step'] == 2
    other = Trainer(TinyLM(), cycle_batch, TrainConfig(max_steps=2, batch_size=8, warmup_steps=1, lr=5e-3,
                                                       device='cpu', progress=False))
    with pytest.warns(UserWarning, match=r'lr=0\.0003->0\.005'): other.load(tmp_path / 'last.pt')
    assert other.step == 2
    with pytest.raises(FileNotFoundError, match='nowhere.pt'): tr.fit(resume=tmp_path / 'nowhere.pt')


def test_should_stop_from_callback(tmp_path):
    class Stop:
        def after_step(self, t):
            if t.step == 3: t.should_stop = True
    tr = Trainer(TinyLM(), cycle_batch, TrainConfig(max_steps=10, batch_size=8, warmup_steps=1, ckpt_dir=str(tmp_path),
                                                    device='cpu', progress=False), callbacks=[Stop()])
    tr.fit()
    assert tr.step == 3 and torch.load(tmp_path / 'last.pt', weights_only=True)['step'] == 3


# ---------------------------------------------------------------- distributed data parallel
DDP_SCRIPT = """
import sys, torch
from test_train import TinyLM, ddp_batch, ddp_cfg
from sage_paper.train import Trainer
init, out = sys.argv[1:3]
m = TinyLM(); m.load_state_dict(torch.load(init, weights_only=True))
grads = {}
class Grab:
    def after_backward(self, t):
        if t.step == 0: grads.update({n: p.grad.clone() for n, p in t.model.named_parameters()})
tr = Trainer(m, ddp_batch, ddp_cfg(out), callbacks=[Grab()])
tr.fit()
torch.save({'grads': grads, 'world_size': tr.world_size, 'model': tr.model.state_dict()}, f'{out}/rank{tr.rank}.pt')
tr.close()
"""


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_ddp_two_processes_match_one_process(tmp_path):
    torch.manual_seed(0); m = TinyLM()
    torch.save(m.state_dict(), tmp_path / 'init.pt')
    (tmp_path / 'ddp_worker.py').write_text(DDP_SCRIPT)
    env = sub_env()
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--nnodes', '1',
           '--master_addr', '127.0.0.1', '--master_port', str(free_port()),
           str(tmp_path / 'ddp_worker.py'), str(tmp_path / 'init.pt'), str(tmp_path)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{i}.pt', weights_only=True) for i in range(2)]
    assert [x['world_size'] for x in ranks] == [2, 2]
    ck = torch.load(tmp_path / 'last.pt', weights_only=True)  # written by rank 0 only, with both ranks' states
    assert ck['world_size'] == 2 and len(ck['ranks']) == 2 and ck['step'] == 3

    grads = {}
    class Grab:
        def after_backward(self, t):
            if t.step == 0: grads.update({n: p.grad.clone() for n, p in t.model.named_parameters()})
    one = Trainer(m, ddp_batch, ddp_cfg(tmp_path / 'single'), callbacks=[Grab()])
    one.fit()
    for x in ranks:
        for n, g in grads.items(): torch.testing.assert_close(x['grads'][n], g, rtol=1e-4, atol=1e-6)
        for k, w in one.model.state_dict().items(): torch.testing.assert_close(x['model'][k], w, rtol=1e-4, atol=1e-5)
    hist = torch.load(tmp_path / 'last.pt', weights_only=True)['history']
    for a, b in zip(hist, one.history): assert a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-5)
