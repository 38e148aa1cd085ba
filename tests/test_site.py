"""The rendered companion in a real browser: Debian's headless Chromium driven by Selenium.

* the static site (`tools/site.py`): the README's figures and a notebook's figures render from file:// URLs,
  every page is linked from the index, formulas are MathML the browser lays out (no MathJax), and 11_listen's
  page (executed for the site) plays its embedded audio and
  shows engraved notation (verovio's inline SVG: staves, clefs, note heads drawn and visible);
* a real JupyterLab server: each explorer of `sage_paper.explore` answers a control changed in the browser (attention,
  memory horizons, tokenization), and the playground generates and puts a playable <audio> in the page.

The browser resolves no host but the local server (`--host-resolver-rules`): whatever the pages show must not come
from a CDN. Skipped only where chromium or chromedriver is not installed (`tools/setup.sh` installs them as root)."""
import importlib.util, json, os, re, shutil, signal, socket, subprocess, sys, urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): "
                "apt-get install -y --no-install-recommends chromium chromium-driver", allow_module_level=True)

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

# tools/site.py, loaded by path (the name `site` is the standard library's)
_spec = importlib.util.spec_from_file_location("sage_site", ROOT / "tools" / "site.py")
sage_site = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(sage_site)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    "Headless Chromium: muted, audio may start without a gesture, no host resolves but localhost."
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
              "--mute-audio", "--autoplay-policy=no-user-gesture-required", "--no-first-run",
              "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        o.add_argument(a)
    d = webdriver.Chrome(options=o, service=Service(executable_path=CHROMEDRIVER))
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def wait(driver, cond, timeout=30, msg=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(cond, msg)


IMAGES = "return Array.from(document.images).map(i => [i.getAttribute('src').slice(0, 60), i.complete, i.naturalWidth])"


def images_rendered(driver, at_least):
    "Wait until the page has at least `at_least` <img> and every one is loaded with a width; returns them."
    def done(d):
        imgs = d.execute_script(IMAGES)
        return imgs if len(imgs) >= at_least and all(c and w > 0 for _, c, w in imgs) else False
    try: return wait(driver, done, 30)
    except Exception:
        pytest.fail(f"{driver.current_url}: images not all rendered (want >= {at_least}): {driver.execute_script(IMAGES)}")


def test_index_and_a_notebook_page_show_their_figures(site, browser):
    n_readme = len(re.findall(r"!\[[^\]]*\]\([^)]+\.png\)", (ROOT / "README.md").read_text()))
    assert n_readme >= 3, "the README links fewer figures than this test expects"
    browser.get((site / "index.html").as_uri())
    imgs = images_rendered(browser, n_readme)
    assert sum(s.startswith("figures/") for s, _, _ in imgs) == n_readme, imgs
    # the reader's answer comes first: the first section is "What we found", with a finding per paper before the claims table
    heads = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent.trim())")
    assert heads and heads[0].startswith("What we found"), heads
    found = browser.execute_script("""const h = Array.from(document.querySelectorAll('h2')).find(h => h.textContent.startsWith('What we found'));
        let t = '', e = h.nextElementSibling; while (e && e.tagName !== 'H2') { t += e.textContent + '\\n'; e = e.nextElementSibling; } return t;""")
    assert "SAGE-Music" in found and "DSMR" in found and "[" in found and "seed" in found, found[:500]
    # the claims' figure says how to read it: its legend, in words, under the picture (threshold, paper, verdict colours)
    alt = browser.execute_script("return Array.from(document.images).map(i => i.alt).find(a => a.startsWith('Every claim')) || ''")
    assert all(w in alt for w in ("threshold", "paper", "better", "holds", "fails")), alt
    # the navigation links every notebook's page, and each link leads to a file of the site
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('#site-nav a')).map(a => a.href)")
    want = {(site / p.relative_to(ROOT)).with_suffix(".html").as_uri() for p in sage_site.notebooks()}
    assert want <= set(hrefs), want - set(hrefs)
    assert len(want) >= 17 and all(Path(urllib.request.url2pathname(h[len("file://"):])).is_file() for h in hrefs)
    # a notebook with figures in its stored outputs: every one of them is an <img> that renders
    nb = ROOT / "nbs" / "05_attention.ipynb"
    n_png = sum("image/png" in o.get("data", {}) for c in nbformat.read(nb, 4).cells for o in c.get("outputs", []))
    assert n_png >= 2, f"{nb.name} keeps {n_png} figures"
    browser.get((site / "nbs" / "05_attention.html").as_uri())
    imgs = images_rendered(browser, n_png)
    assert sum(s.startswith("data:image/png") for s, _, _ in imgs) >= n_png
    code = browser.execute_script("return Array.from(document.querySelectorAll('.jp-InputArea-editor')).map(e => e.textContent).join('\\n')")
    assert "def " in code and "#| export" not in code and "#| hide" not in code and "default_exp" not in code, code[:300]
    browser.find_element(By.CSS_SELECTOR, "#site-nav summary").click()
    browser.find_element(By.CSS_SELECTOR, "#site-nav a[href='../index.html']").click()
    wait(browser, lambda d: d.current_url.endswith("/index.html"), msg="the nav link back to the index")


def test_experiment_pages_show_their_recorded_run(site, browser):
    "Every experiment page is the record of a run (profile, device, commit at the top), and its figures render."
    exps = [p for p in sage_site.notebooks() if p.parent.name == "experiments"]
    recorded = {p: sage_site.records(p) for p in exps}
    assert all(recorded.values()), [p.name for p, r in recorded.items() if not r]   # the repository keeps a record of each
    p = next(p for p in exps if p.stem.startswith("e02"))
    prof, rec = recorded[p][0]
    n_fig = len(re.findall(r"!\[[^\]]*\]\(\.\./[^)]+\.png\)", rec.read_text()))
    assert n_fig >= 2, f"{rec} links {n_fig} figures"
    browser.get((site / "nbs" / "experiments" / f"{p.stem}.html").as_uri())
    imgs = images_rendered(browser, n_fig)
    assert sum(f"/figures/{prof}/" in s for s, _, _ in imgs) == n_fig, imgs
    top = browser.find_element(By.CSS_SELECTOR, "blockquote").text
    assert "Recorded run" in top and f"profile {prof}" in top and "commit" in top, top
    assert "injected-parameters" in (site / "nbs" / "experiments" / f"{p.stem}.html").read_text()


def test_listen_page_plays_its_embedded_audio(site, browser):
    page = site / "nbs" / "11_listen.html"
    n_file = page.read_text(encoding="utf-8").count("<audio")
    assert n_file >= 2, f"{page} holds {n_file} <audio> players"   # a chorale and a MAESTRO performance
    browser.get(page.as_uri())
    srcs_js = "return Array.from(document.querySelectorAll('audio source')).map(s => s.src.slice(0, 30))"
    srcs = wait(browser, lambda d: (lambda s: s if len(s) >= n_file else False)(d.execute_script(srcs_js)), 30,
                f"the page shows fewer <audio> than its file holds ({n_file}): {browser.execute_script(srcs_js)}")
    assert all(s.startswith("data:audio/wav;base64,") for s in srcs), srcs
    images_rendered(browser, 2)  # the two piano rolls
    audio = browser.find_element(By.TAG_NAME, "audio")
    duration = wait(browser, lambda d: d.execute_script("return arguments[0].duration > 0 && arguments[0].duration", audio),
                    msg="the audio's metadata (duration) never loaded")
    assert 9.5 < duration < 10.5, duration  # `audio(piece.path, max_seconds=10)`
    err = browser.execute_async_script("""const [a, done] = arguments; a.muted = true;
        a.play().then(() => done(null), e => done(String(e)));""", audio)
    assert err is None, f"play() was refused: {err}"
    wait(browser, lambda d: d.execute_script("return arguments[0].currentTime", audio) > 0.2, 20,
         "currentTime did not advance while playing")
    assert browser.execute_script("return !arguments[0].paused && arguments[0].error === null", audio) is True


MATH = """return Array.from(document.querySelectorAll('math[display=block]')).map(m => {
    const r = m.getBoundingClientRect(), f = m.querySelector('mfrac');
    const [num, den] = f ? Array.from(f.children).map(c => c.getBoundingClientRect()) : [null, null];
    return {ns: m.namespaceURI, w: r.width, h: r.height, tokens: m.querySelectorAll('mi, mn, mo, mtext').length,
            stacked: f ? num.bottom <= den.top + 1 && num.height > 0 && den.height > 0 : null};
})"""


def test_formulas_render_offline_as_mathml(site, browser):
    "04's NMSI and bits per note, 09's memory bytes: MathML laid out by the browser itself (no MathJax, and no host resolves)."
    for name, n in (("04_metrics", 4), ("09_recurrence", 1)):
        page = site / "nbs" / f"{name}.html"
        assert "mathjax" not in page.read_text(encoding="utf-8").lower()
        browser.get(page.as_uri())
        n = max(n, page.read_text(encoding="utf-8").count('<math display="block">'))   # every block formula the file holds
        # on a loaded machine get() may return while the page before is still being replaced: wait for the formulas
        boxes = wait(browser, lambda d: d.current_url.endswith(page.name) and (lambda b: b if len(b) >= n else False)(d.execute_script(MATH)),
                     30, f"{name}: the browser lays out fewer than {n} block formulas")
        for b in boxes:
            assert b["ns"] == "http://www.w3.org/1998/Math/MathML" and b["w"] > 50 and b["h"] > 10 and b["tokens"] > 3, (name, b)
        assert any(b["stacked"] for b in boxes if b["stacked"] is not None) or name == "09_recurrence", (name, boxes)  # a fraction, drawn as one
        assert "$$" not in browser.find_element(By.TAG_NAME, "body").text


SCORES = """return Array.from(document.querySelectorAll('figure.sage-score div > svg')).map(svg => {
    const r = svg.getBoundingClientRect(), first = svg.querySelector('g.measure');
    return {w: r.width, h: r.height, notes: svg.querySelectorAll('g.note').length, clefs: svg.querySelectorAll('g.clef').length,
            staves: first ? first.querySelectorAll(':scope > g.staff').length : 0, brace: !!svg.querySelector('g.grpSym'),
            coloured: svg.querySelectorAll('g.note[color]').length,
            labels: Array.from(svg.querySelectorAll('g.label')).map(l => l.textContent.trim()),
            caption: svg.closest('figure').querySelector('figcaption').textContent};
})"""

# the note head at the middle of the score: scrolled into view, is it what the page shows at that point?
HEAD_SEEN = """const svg = document.querySelectorAll('figure.sage-score div > svg')[arguments[0]];
    const notes = svg.querySelectorAll('g.note use'), head = notes[Math.floor(notes.length / 2)];
    head.scrollIntoView({block: 'center'});
    const r = head.getBoundingClientRect(), hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    return [r.width, r.height, !!hit && svg.contains(hit), getComputedStyle(svg).visibility];"""


def test_listen_page_shows_engraved_notation(site, browser):
    "The chorale on four labelled staves, the MAESTRO excerpt on a braced grand staff, a prompt and its coloured continuation."
    page = site / "nbs" / "11_listen.html"
    text = page.read_text(encoding="utf-8")
    n_file = text.count('<figure class="sage-score"')
    assert n_file >= 3 and 'class="sage-score-fallback"' in text, f"{page}: {n_file} engraved figures"  # + the fallback shown
    browser.get(page.as_uri())
    scores = wait(browser, lambda d: (lambda s: s if len(s) >= n_file else False)(d.execute_script(SCORES)), 30,
                  f"the page shows fewer engraved scores than its file holds ({n_file})")
    for s in scores:   # drawn at a real size, with clefs and many note heads
        assert s["w"] > 300 and s["h"] > 100 and s["clefs"] >= s["staves"] >= 2 and s["notes"] >= 20, s
    chorale = next(s for s in scores if "multi-track view" in s["caption"])
    assert chorale["staves"] == 4 and chorale["labels"][:4] == ["Soprano", "Alto", "Tenor", "Bass"], chorale
    piano = next(s for s in scores if "a performance" in s["caption"])
    assert piano["staves"] == 2 and piano["brace"], piano
    pair = next(s for s in scores if "continuation" in s["caption"])
    assert 0 < pair["coloured"] < pair["notes"], pair
    assert all(s["coloured"] == 0 for s in scores if s is not pair), [(s["coloured"], s["caption"]) for s in scores]
    for i in range(len(scores)):   # each score's note heads are on screen, not hidden or covered
        w, h, seen, visibility = browser.execute_script(HEAD_SEEN, i)
        assert w > 3 and h > 3 and seen and visibility == "visible", (i, scores[i]["caption"], w, h, seen, visibility)


# -- JupyterLab ---------------------------------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server (no token) on a free port over a folder with a two-cell notebook; stopped cleanly after."
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"; root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from sage_paper.explore import attention_explorer"),
                                         nbformat.v4.new_code_cell("attention_explorer()")],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, root / "explorer.ipynb")
    cells = ["from sage_paper.explore import memory_explorer, tokenization_explorer, playground\n"
             "from sage_paper.data import load_corpus\n"
             "man = load_corpus('music21-multitrack', composers=('bach',), max_per_composer=2, progress=False)",
             "memory_explorer()", "tokenization_explorer(man)",
             "playground(pieces=man, prompt_tokens=32, max_new_tokens=16, max_audio_seconds=3)"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells], metadata=nb.metadata),
                   root / "companions.ipynb")
    settings = tmp / "settings"
    for plugin, value in {"@jupyterlab/docmanager-extension/plugin": {"autosave": False},  # never writes the notebook
                          "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},  # no kernel dialog
                          "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        f = settings / f"{plugin}.jupyterlab-settings"; f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(value))
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"), OMP_NUM_THREADS="1")
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                             "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
                             *(["--allow-root"] if os.geteuid() == 0 else []),
                             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
                             f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.news_url=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"

    def up(_):
        if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited ({proc.returncode}): {(tmp / 'server.log').read_text()[-2000:]}")
        try: return urllib.request.urlopen(f"{url}/api/status", timeout=2).status == 200
        except OSError: return False

    def stop():
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down, then exits
        try: return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill(); return proc.wait(10)
        finally: log.close()
    try: WebDriverWait(None, 60, poll_frequency=0.3, ignored_exceptions=()).until(up, "jupyter lab did not answer in 60 s")
    except BaseException:
        stop(); raise
    yield url
    rc, text = stop(), (tmp / "server.log").read_text()
    assert rc == 0, f"jupyter lab did not stop cleanly ({rc}): {text[-2000:]}"


def run_all_cells(d, tries=3):
    "Run > Run All Cells, through the menu bar; again if no cell was queued (a click can land before the session is ready)."
    prompts = "return Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt')).map(e => e.textContent.trim())"
    for _ in range(tries):
        menu = [m for m in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if m.text.strip() == "Run"]
        assert menu, "no Run menu"
        menu[0].click()
        wait(d, EC.element_to_be_clickable((By.CSS_SELECTOR, "li.lm-Menu-item[data-command='runmenu:run-all']"))).click()
        try: return wait(d, lambda d: all(p not in ("", "[ ]:") for p in d.execute_script(prompts)), 5)
        except TimeoutException: d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # a menu left open
    pytest.fail(f"Run All Cells queued no cell in {tries} tries: prompts {d.execute_script(prompts)}")


def open_and_run(d, lab, name):
    "Open notebook `name` of the lab server, wait for its kernel, run all cells."
    d.get(f"{lab}/lab/tree/{name}?reset")   # ?reset: a fresh workspace, no tab of an earlier test restored
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")), 60, "the notebook did not open")
    # the kernel is ready once the server counts the page's connection to it and the page shows it idle (the page's
    # indicator also reads idle before it has a kernel: a Run click then would be lost)
    def connected(_):
        try: kernels = json.load(urllib.request.urlopen(f"{lab}/api/kernels", timeout=5))
        except OSError: return False   # the server can answer 500 while a kernel is being started: ask again
        return any(k["connections"] > 0 for k in kernels)
    wait(d, connected, 60, "no kernel connected to the notebook")
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")), 60,
         "the kernel did not become idle")
    run_all_cells(d)


def test_jupyterlab_explorer_widget_reacts_to_the_browser(lab, browser):
    d = browser
    open_and_run(d, lab, "explorer.ipynb")
    # the explorer: sliders, the attention dropdown, the head-sharing picture and the cost table
    img_sel = ".jp-OutputArea-output img.widget-image"
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0 && arguments[0].src"
    img = wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, img_sel)), 90, "the explorer widget did not appear")
    src0 = wait(d, lambda d: d.execute_script(loaded, img), 30, "the explorer's picture did not load")
    table = d.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-html-content")
    html0 = table.get_attribute("innerHTML")
    assert "askvhs" in html0, html0[:500]
    # change the attention kind in the browser's <select>: the kernel redraws picture and table
    kind = Select(d.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-dropdown select"))
    assert kind.first_selected_option.text == "askvhs"
    kind.select_by_visible_text("mha")
    wait(d, lambda d: (d.execute_script(loaded, img) or src0) != src0, 30, "the picture did not change after the dropdown")
    wait(d, lambda d: table.get_attribute("innerHTML") != html0, 10, "the cost table did not change after the dropdown")
    assert "askvhs" not in table.get_attribute("innerHTML")
    # and a slider, by keyboard on its handle: H 8 -> 9
    src1, html1 = img.get_attribute("src"), table.get_attribute("innerHTML")
    handle = d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-hslider .noUi-handle")[0]
    handle.click(); handle.send_keys(Keys.ARROW_RIGHT)
    readout = d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-hslider .widget-readout")[0]
    wait(d, lambda d: readout.text.strip() == "9", 10, f"the H slider did not move: {readout.text!r}")
    wait(d, lambda d: (d.execute_script(loaded, img) or src1) != src1 and table.get_attribute("innerHTML") != html1, 30,
         "the picture did not change after the slider")


def choose(d, select, text):
    "Pick option `text` of a <select> once the widget has filled in its options."
    wait(d, lambda d: text in [o.text.strip() for o in Select(select).options], 30,
         f"option {text!r} never appeared: {[o.text for o in Select(select).options]}")
    Select(select).select_by_visible_text(text)


def test_jupyterlab_memory_tokenization_and_playground_widgets(lab, browser):
    "The other three explorers in one notebook: a dropdown redraws each; the playground generates, and plays in the page."
    d = browser
    open_and_run(d, lab, "companions.ipynb")
    cell = lambda i: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell")[i]
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0 && arguments[0].src"
    def widget(i, css, timeout=120):
        return wait(d, lambda d: (cell(i).find_elements(By.CSS_SELECTOR, css) or [False])[0], timeout,
                    f"cell {i}: no {css} (the widget did not appear)")
    # memory horizons: variant two_scale -> full changes the picture and the table
    img = widget(1, "img.widget-image")
    src0 = wait(d, lambda d: d.execute_script(loaded, img), 30, "the memory picture did not load")
    table0 = widget(1, ".widget-html-content").get_attribute("innerHTML")
    choose(d, widget(1, ".widget-dropdown select"), "full")
    wait(d, lambda d: (d.execute_script(loaded, img) or src0) != src0, 30, "the memory picture did not change")
    assert widget(1, ".widget-html-content").get_attribute("innerHTML") != table0
    # tokenization: REMI -> TSD recolours the tokens of the piece
    html = widget(2, ".widget-html-content")
    wait(d, lambda d: "<span" in html.get_attribute("innerHTML"), 30, "no coloured tokens")
    html0 = html.get_attribute("innerHTML")
    kind = cell(2).find_elements(By.CSS_SELECTOR, ".widget-dropdown select")[1]
    assert Select(kind).first_selected_option.text == "REMI"
    choose(d, kind, "TSD")
    wait(d, lambda d: html.get_attribute("innerHTML") != html0, 60, "the tokens did not change after REMI -> TSD")
    assert "TimeShift" in html.get_attribute("innerHTML") or "TimeShift" in d.execute_script("return arguments[0].textContent", html)
    # the playground: Generate draws a new piano roll, Listen puts a playable <audio> under it
    roll = widget(3, "img.widget-image")
    src1 = wait(d, lambda d: d.execute_script(loaded, roll), 30, "the prompt's piano roll did not load")
    buttons = {b.text.strip(): b for b in cell(3).find_elements(By.CSS_SELECTOR, "button.widget-button")}
    buttons["Generate"].click()
    wait(d, lambda d: (d.execute_script(loaded, roll) or src1) != src1, 60, "Generate did not redraw the piano roll")
    buttons["Listen"].click()
    audio = widget(3, "audio", 60)
    dur = wait(d, lambda d: d.execute_script("return arguments[0].duration > 0 && arguments[0].duration", audio), 30,
               "the playground's audio has no duration")
    assert 0.5 < dur <= 3.05, dur


def _put_notebook(lab, name, cells):
    "Write a notebook of `cells` into the lab server's root through its contents API (with the _xsrf cookie the server hands out)."
    import http.cookiejar
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{lab}/lab", timeout=30).read()
    xsrf = next((c.value for c in jar if c.name == "_xsrf"), "")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    req = urllib.request.Request(f"{lab}/api/contents/{name}", method="PUT", data=json.dumps({"type": "notebook", "content": nb}).encode(),
                                 headers={"Content-Type": "application/json", "X-XSRFToken": xsrf})
    assert opener.open(req, timeout=30).status in (200, 201)


def test_jupyterlab_listening_test_one_click_writes_exactly_one_row(lab, browser, tmp_path):
    "The blind listening test (sage_paper.desk) in a real JupyterLab: two unnamed players, and a click on an answer appends one row."
    d = browser
    answers = tmp_path / "listening_test.csv"
    _put_notebook(lab, "listening.ipynb", [
        "from sage_paper.desk import listening_test\nfrom sage_paper.data import load_corpus\n"
        "man = load_corpus('music21-multitrack', composers=('bach',), max_per_composer=2, progress=False)",
        f"listening_test(pieces=man, path={str(answers)!r}, prompt_bars=2, bars=2, max_seconds=3, seed=1)"])
    open_and_run(d, lab, "listening.ipynb")
    cell = lambda: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell")[1]
    players = wait(d, lambda d: (lambda a: a if len(a) == 2 else False)(cell().find_elements(By.TAG_NAME, "audio")), 180,
                   "the listening test did not show two players")
    for a in players:
        dur = wait(d, lambda d: d.execute_script("return arguments[0].duration > 0 && arguments[0].duration", a), 30, "a player has no duration")
        assert 0.5 < dur <= 3.05, dur
    text = cell().text
    assert "Trial 1" in text and not any(n in text for n in ("MHA", "AS-KVHS", "BPE", "CPWord")), text   # blind
    assert not answers.exists()
    buttons = {b.text.strip(): b for b in cell().find_elements(By.CSS_SELECTOR, "button.widget-button")}
    assert set(buttons) == {"A is better", "B is better", "no preference"}, set(buttons)
    buttons["B is better"].click()
    wait(d, lambda d: "Trial 2" in cell().text and "1 answer recorded" in cell().text, 120, "the answer was not acknowledged")
    rows = answers.read_text().splitlines()
    assert len(rows) == 2 and rows[0] == "time,prompt_id,system_a,system_b,answer,preferred", rows   # the header and one row
    _, pid, a, b, answer, preferred = rows[1].split(",")
    assert answer == "B" and preferred == b and {a, b} <= {"MHA", "AS-KVHS G=2", "BPE 2k", "CPWord (pooled)"} and pid.startswith("bach/")
