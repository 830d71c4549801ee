"""The review page in a real browser: headless Chromium loads gallery.html built from real photos,
every image (400 px, 100 px and 40 px views) must load, and a screenshot is kept for a person to look at."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from headshots.workspace import Workspace
from tests.browser import CHROMIUM, need_chromium
from tests.browser import FLAGS as BROWSER_FLAGS

FLAGS = ["--headless", *BROWSER_FLAGS]
# Injected at the end of a copy of the page: lazy images become eager, so they hold back the load
# event whatever the window's height; once it fires, the title reports how many images decoded.
COUNT_SCRIPT = """<script>
const images = [...document.images];
images.forEach(i => { i.loading = 'eager'; });
window.addEventListener('load', () => {
  document.title = 'loaded ' + images.filter(i => i.complete && i.naturalWidth > 0).length + ' of ' + images.length;
});
</script>"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def gallery(prepared_user, make_config, faces_dir, analyzer) -> Path:
    """gallery.html of real photos scored as if generated: two of alice, a stranger, a group, a blank."""
    from infer.gallery import write_gallery
    from infer.score import score

    cfg = make_config("alice")
    out = Workspace.from_config(cfg).samples_dir(cfg.run)
    out.mkdir(parents=True)
    sources = {"alice-a.png": "georgia-tech/s01/08.jpg", "alice-b.png": "georgia-tech/s01/12.jpg",
               "stranger.png": "georgia-tech/s02/08.jpg",
               "group.png": "azure-samples/_unlabelled_or_multiface/test-image-person-group.jpg"}
    for name, src in sources.items():
        Image.open(faces_dir / src).convert("RGB").save(out / name)
    Image.new("RGB", (128, 128), (90, 90, 90)).save(out / "blank.png")
    names = [*sources, "blank.png"]
    manifest = {"images": [{"file": n, "style": "linkedin", "seed": i} for i, n in enumerate(names)]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    score(cfg, analyzer)
    return write_gallery(cfg)


def test_every_gallery_image_loads_in_chromium(gallery, tmp_path):
    need_chromium("check the gallery in a browser")
    page = gallery.read_text()
    expected = len(re.findall(r"<img ", page))
    assert expected == 3 * 5  # 400 px square, 100 px and 40 px circles for each of the five outputs

    probe = gallery.with_name("gallery-check.html")  # beside the original: same relative image paths
    probe.write_text(page.replace("</body>", COUNT_SCRIPT + "</body>"))
    dom = chromium(tmp_path / "profile-dom", "--virtual-time-budget=15000", "--dump-dom", probe.as_uri())
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert title is not None, dom.stderr[-2000:]
    assert title.group(1) == f"loaded {expected} of {expected}", dom.stderr[-2000:]

    screenshot = tmp_path / "gallery.png"
    shot = chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1400,1600",
                    "--virtual-time-budget=15000", gallery.as_uri())
    assert screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1400, 1600)
        assert len(set(image.convert("L").resize((140, 160)).getdata())) > 50  # photos drawn, not a blank page
    print(f"gallery screenshot: {screenshot}")
