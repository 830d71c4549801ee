"""The web app through its API, with Gradio's own client: what a person (or a script) can send, and what
comes back. Real intake (MTCNN, FaceNet) on real photos from ../shared; the app runs in this process on
a free loopback port over a temporary workspace."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from headshots.config import load_config
from headshots.errors import ConfigError, HeadshotsError
from headshots.workspace import ADAPTER_WEIGHTS
from service.accounts import add_account, hash_password, password_matches, read_password_file
from service.app import SERVED, client_network, is_loopback, listen_address, main, safe_file_name
from service.jobs import DONE, QUEUED, RUNNING, STOPPED, Job, JobQueue
from tests.app_server import serve
from tests.conftest import REPO, copy_photos, everything_done, run_make, wait_until

FAVOURITE_TICKED = "data-tick='hs-favourites' data-file='([^']+)'[^>]*aria-pressed='true'"  # a card's pressed Favourite
PAGE = ("who", "sign_in_note", "notes", "photos", "remove_pick", "status", "timer", "review", "favourites", "files", "more_pick")
LIMITS = ("app.max_photos=6", "app.max_pixels=20000000", "app.max_upload_bytes=2000000")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model, faces_dir, analyzer):
    with serve(tmp_path_factory.mktemp("app"), tiny_model, analyzer, *LIMITS) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def client_staging_in_the_tests_folder(tmp_path_factory) -> Iterator[None]:
    """Gradio's client stages each download in a new folder of the system's temporary folder, moves the file out
    and leaves the folder behind, empty: eight in /tmp for each run of these tests, for good. They are staged in
    the tests' own temporary folder instead (the client's module reads `tempfile` for that alone)."""
    import gradio_client.client

    staging = tmp_path_factory.mktemp("client-staging")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gradio_client.client, "tempfile", SimpleNamespace(gettempdir=lambda: str(staging),
                                                                       TemporaryDirectory=tempfile.TemporaryDirectory))
        yield


@pytest.fixture(scope="module")
def selfies(faces_dir) -> list[Path]:
    return sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))


def client_of(server, **kwargs) -> Client:
    """A browser-like client of `server`. What it downloads stays in the test's folder: by default it lands in the
    system's Gradio cache, where a test run left the exported headshots of its photos for good."""
    return Client(server.url, verbose=False, download_files=str(server.data.parent / "downloaded"), **kwargs)


def session(server, name: str) -> tuple[Client, dict]:
    """A new browser-like session that gave its name; returns the client and the page it got."""
    client = client_of(server)
    return client, page(client.predict(name, api_name="/start"))


def page(values: tuple, names: tuple[str, ...] = PAGE) -> dict:
    return dict(zip(names, values))


def signed_in(url: str, name: str, password: str) -> httpx.Client:
    """An HTTP client holding `name`'s session cookie, as a browser holds it after the sign-in form."""
    client = httpx.Client(base_url=url)
    assert client.post("login", data={"username": name, "password": password}).status_code == 200
    return client


def signed_in_as(client: httpx.Client) -> str | bool:
    """The account whose sign-in the client's cookie holds, or False."""
    return client.get("gradio_api/login_check").status_code == 200 and client.get("gradio_api/user").json()


def cached_copy(path: Path) -> Path:
    """Where Gradio's cache serves a copy of `path` from: a folder named by the hash of its bytes."""
    from gradio.processing_utils import hash_file
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / hash_file(path) / path.name


def upload(client: Client, paths: list[Path]) -> dict:
    photos, remove_pick, notes, status, _timer, box = client.predict([handle_file(str(p)) for p in paths], api_name="/upload")
    return {"photos": photos, "remove_pick": remove_pick, "notes": notes, "status": status, "upload": box}


def test_bad_files_get_their_reason_not_a_traceback(server, selfies, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not a photo")
    (bad / "fake.jpg").write_text("a text file named like a photo")
    photo = selfies[0].read_bytes()
    (bad / "cut.jpg").write_bytes(photo[:4000])  # ends inside the header: refused at upload
    (bad / "half.jpg").write_bytes(photo[: len(photo) // 2])  # a whole header, half the picture: intake says so
    Image.new("RGB", (400, 300), (120, 140, 160)).save(bad / "wall.jpg")  # no face in it
    client, _ = session(server, "carol")
    (bad / "me_at_home_.jpg").write_bytes(selfies[1].read_bytes())  # Markdown's marks in a name are shown as they are
    result = upload(client, [bad / "notes.txt", bad / "fake.jpg", bad / "cut.jpg", bad / "half.jpg", bad / "wall.jpg", selfies[0],
                             bad / "me_at_home_.jpg"])

    assert "**not added**: notes.txt: not an image file" in result["notes"]
    assert "**not added**: fake.jpg: not an image file" in result["notes"]
    assert "**not added**: cut.jpg: the file is damaged or truncated" in result["notes"]
    assert "added **half.jpg**" in result["notes"] and "added **01.jpg**" in result["notes"]
    assert "added **me\\_at\\_home\\_.jpg**" in result["notes"], result["notes"]
    card = result["photos"].split("data-file='half.jpg'>")[1].split("</div></div>")[0]
    assert "reject" in card and "damaged or truncated" in card and "Export or upload the photo again" in card
    card = result["photos"].split("data-file='wall.jpg'>")[1].split("</div></div>")[0]
    assert "no face found" in card and "<summary>figures</summary><small>face: faces 0</small>" in card  # not "confidence None"
    assert [name for name, _ in result["remove_pick"]["choices"]] == ["01.jpg", "half.jpg", "me_at_home_.jpg", "wall.jpg"]
    assert not any("Traceback" in str(value) for value in result.values())
    assert sorted(p.name for p in (server.data / "carol" / "selfies").iterdir()) == ["01.jpg", "half.jpg", "me_at_home_.jpg", "wall.jpg"]


def png_header(width: int, height: int) -> bytes:
    """A PNG file's signature, header and end, with no pixels: what opening it reads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_upload_limits_are_enforced_with_the_limit_named(server, selfies, tmp_path):
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (5000, 4200), (120, 110, 100)).save(huge, quality=30)  # 21 MP, a few hundred kB
    client, _ = session(server, "dave")
    result = upload(client, [huge, *selfies[:7]])
    assert "**not added**: huge.jpg: 21 megapixels is over the limit of 20." in result["notes"]
    assert result["notes"].count("- added **") == 6  # app.max_photos
    assert "**not added**: 07.jpg: you already have 6 photos, the most one person may keep." in result["notes"]
    for side, size in ((12_000, "144"), (20_000, "more than 240")):  # past Pillow's own limits (a warning, then an error)
        header = tmp_path / f"{side}.png"  # the header alone: its size is all the check reads
        header.write_bytes(png_header(side, side))
        notes = upload(client, [header])["notes"]
        assert f"**not added**: {side}.png: {size} megapixels is over the limit of 20." in notes, notes

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 3_000_000)
    with pytest.raises(ValueError, match="exceeds the maximum file size of 2000000 bytes"):
        upload(client, [big])  # Gradio's client knows the limit...
    response = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.jpg", big.read_bytes())})
    assert response.status_code == 413 and "2000000 bytes" in response.text  # ...and the server enforces it


def test_a_photo_the_disk_could_not_take_leaves_no_cut_off_copy(server, selfies, monkeypatch):
    """A full disk during an upload's copy left a cut-off "photo" under the real name (every later intake called it
    damaged) and showed Gradio's bare "Error" (an app review)."""
    import errno
    import shutil

    def half_then_full(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:1000])
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    ws = server.app.workspace("fern")
    monkeypatch.setattr(shutil, "copyfile", half_then_full)
    with pytest.raises(HeadshotsError, match="no room on the disk") as refused:
        server.app.admit(selfies[0], ws, 0)
    assert "Free some disk space" in refused.value.hint and list(ws.selfies.iterdir()) == []


def test_uploads_wait_for_the_same_persons_own_and_for_no_one_elses(tmp_path, tiny_model, analyzer, selfies):
    """Every upload waited for any other's (one Gradio concurrency group of one, app-wide): with a password file, one
    person's 30 photos held up everyone's. Now two tabs of one person take turns, and another person's runs beside."""
    finished: list[str] = []

    def add(client: Client, photos: list[Path], who: str) -> None:
        notes = upload(client, photos)["notes"]
        added = notes.count("added **") == len(photos) and "not added" not in notes
        finished.append(who if added else f"{who}, refused: {notes}")

    with serve(tmp_path, tiny_model, analyzer) as server:  # room for 30 photos each
        first_tab, _ = session(server, "fay")
        second_tab, _ = session(server, "fay")
        other, _ = session(server, "gus")
        many = threading.Thread(target=add, args=(first_tab, selfies[:10], "fay's ten"))
        many.start()
        # The second tab starts once the first's upload holds fay's turn: its ten files reach the server first, and on
        # a loaded machine that took longer than a fixed half second, so the two came in the other order (a CI flake)
        wait_until(lambda: (turn := server.app.turns.get("fay")) is not None and turn.locked(), 60)
        same_person = threading.Thread(target=add, args=(second_tab, selfies[10:12], "fay's two"))
        same_person.start()
        add(other, selfies[12:13], "gus's one")
        many.join()
        same_person.join()
        assert finished == ["gus's one", "fay's ten", "fay's two"]
        assert len(list((server.data / "fay" / "selfies").iterdir())) == 12


def test_two_people_uploading_one_photo_at_once_each_get_it(server, selfies):
    """Gradio files an upload under a hash of its bytes: two people uploading one photo at once were handed one file,
    and the first upload's clean-up deleted it before the second was read ("not a regular file")."""
    photo = selfies[3]
    sent = [httpx.post(server.url + "gradio_api/upload", files={"files": (photo.name, photo.read_bytes())}).json() for _ in range(2)]
    assert sent[0] == sent[1] and Path(sent[0][0]).is_file()  # one file for both
    for name in ("hana", "ivan"):  # each one's upload handled in turn, as it is when they come a moment apart
        notes = server.app.upload(sent[0], name, None)[server.app.c["notes"]]
        assert notes == f"- added **{photo.name}**", notes
    assert not Path(sent[0][0]).exists()  # the last one done deletes Gradio's copy, as one alone always did
    ui, _ = session(server, "jack")  # and so does the page's upload, through Gradio's own event
    assert upload(ui, [photo])["notes"] == f"- added **{photo.name}**" and not Path(sent[0][0]).exists()


def test_an_upload_beside_a_folder_or_a_broken_link_among_the_photos_is_added(server, selfies):
    """The same-file check read every entry among the photos: a folder of the upload's size, or a broken link, ended
    the upload in a traceback and the rest of the uploaded photos went unsaid (a bad-input probe)."""
    ws = server.app.workspace("gwen")
    (ws.selfies / "old").mkdir(parents=True)
    (ws.selfies / "gone.jpg").symlink_to(ws.selfies / "nowhere.jpg")
    upload = selfies[0]
    assert server.app.admit(upload, ws, 0) == upload.name
    assert (ws.selfies / upload.name).read_bytes() == upload.read_bytes()


def test_unusable_set_is_refused_for_training(server, selfies):
    client, _ = session(server, "erin")
    with pytest.raises(AppError, match="no photos to train on"):
        client.predict(api_name="/train")
    result = upload(client, selfies[:2])
    assert "hs-set reject" in result["photos"]  # why, before how many: "2 of 2 usable" had read as a contradiction
    assert "</span>: only 2 usable photos (need at least 5). 2 of 2 photos usable.<ul>" in result["photos"]
    with pytest.raises(AppError, match=r"not usable yet: only 2 usable photos .* Add 3 more photos"):
        client.predict(api_name="/train")
    assert server.app.jobs.latest("erin") is None
    assert "not usable yet: only 2 usable photos (need at least 5). See 1. Photos" in result["status"]  # said on the Train tab too, with where to look
    again = upload(client, selfies[:1])  # the same file again is not kept twice
    assert "**not added**: 01.jpg: already here, as 01.jpg" in again["notes"]
    assert sorted(p.name for p in (server.data / "erin" / "selfies").iterdir()) == ["01.jpg", "02.jpg"]


@pytest.mark.parametrize("kind", ["train", "generate"])  # Generate trains first when the photos changed since
def test_photos_stay_as_they_are_while_training_runs_on_them(server, selfies, tmp_path, kind):
    """A change would not reach the running training, and would make the next one start over: refused, saying so."""
    person = f"ines-{kind}"
    client, _ = session(server, person)
    upload(client, selfies[:1])
    job = server.app.jobs.submit(person, kind, [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "t.log")
    try:
        wait_until(lambda: job.active, 10)
        refused = upload(client, selfies[1:2])  # said under the box, which is emptied (kept, it offered them again)
        assert "**not added**: Your photos cannot change while your job runs on them" in refused["notes"], refused
        then = "training then starts over" if kind == "train" else "trained again on the new photos before the next images"
        assert then in refused["notes"], refused  # a Generate's person heard of training starting over (web-app walk)
        assert refused["upload"] is None
        with pytest.raises(AppError, match="cannot change while your job runs on them"):
            client.predict(["01.jpg"], api_name="/remove")
        assert sorted(p.name for p in (server.data / person / "selfies").iterdir()) == ["01.jpg"]
    finally:
        server.app.jobs.stop(person)
    assert "02.jpg" in upload(client, selfies[1:2])["notes"]  # stopped: photos may change again
    from tests.conftest import held_elsewhere

    with held_elsewhere(server.data / person / ".prepare.lock"):  # prepared in a terminal or a batch meanwhile
        refused = upload(client, selfies[2:3])
        assert "**not added**: Your photos are being prepared for training" in refused["notes"], refused
        with pytest.raises(AppError, match="being prepared for training"):
            client.predict(["01.jpg"], api_name="/remove")
    assert sorted(p.name for p in (server.data / person / "selfies").iterdir()) == ["01.jpg", "02.jpg"]


def test_a_training_started_in_a_terminal_is_shown_and_waited_for_not_called_interrupted(server, selfies):
    """The app said "Training was interrupted: press Train to continue" while `make train` trained the person, let their
    photos change under it, and its Train became a job that failed, the "failed" staying on (a cross-surface walk)."""
    from tests.conftest import held_elsewhere
    from train.checkpoint import TRAIN_LOCK

    client, _ = session(server, "wren")
    upload(client, selfies[:5])
    run = server.outputs / "wren" / "default"
    run.mkdir(parents=True)
    (run / "progress.json").write_text(json.dumps({"step": 695, "max_steps": 6000, "loss": 0.92, "started": 1.0,
                                                   "updated": 2.0, "resumed_from": 0, "eta_s": 747.0}))
    c = server.app.c
    with held_elsewhere(run / TRAIN_LOCK):
        shown = server.app.status_view("wren")
        said = shown[c["status"]]
        assert said.startswith("**Training, started in a terminal, a batch or an earlier copy of this app:** step **695 of 6000**"), said
        assert "interrupted" not in said
        # followed as the app's own job is (the line stood still until a reload), its buttons greyed
        assert shown[c["timer"]].active and not shown[c["train"]]["interactive"]
        with pytest.raises(AppError, match="A training of yours is running already .started in a terminal.*Press Train again once it ends"):
            client.predict(api_name="/train")
        with pytest.raises(AppError, match="cannot change while a training of yours runs"):
            client.predict(["01.jpg"], api_name="/remove")
        assert server.app.jobs.latest("wren") is None and (server.data / "wren" / "selfies" / "01.jpg").is_file()
        # a finished progress is an earlier training's: this one has not reached its first step
        (run / "progress.json").write_text(json.dumps({"step": 40, "max_steps": 40, "loss": 0.9, "started": 1.0,
                                                       "updated": 2.0, "resumed_from": 0, "eta_s": None}))
        assert "app:** starting (checking and preparing the photos" in server.app.status_view("wren")[c["status"]]
    (run / "progress.json").write_text(json.dumps({"step": 695, "max_steps": 6000, "loss": 0.92, "started": 1.0,
                                                   "updated": 2.0, "resumed_from": 0, "eta_s": 747.0}))
    shown = server.app.status_view("wren")
    assert shown[c["status"]].startswith("**Training was interrupted** at step 695 of 6000"), shown[c["status"]]
    assert shown[c["status"]].endswith("else from the start.") and not shown[c["timer"]].active


def test_one_session_cannot_reach_another_persons_photos(server, selfies):
    alice, _ = session(server, "alice")
    upload(alice, selfies[:2])
    own = server.data / "alice" / "selfies" / "01.jpg"
    assert own.is_file()

    bob, first = session(server, "bob")
    assert "01.jpg" not in first["photos"] and first["remove_pick"]["choices"] == []
    refused = "is not in the list of choices"  # Gradio holds each session's choices; the app checks again itself
    with pytest.raises(AppError, match=refused):
        bob.predict(["01.jpg"], api_name="/remove")
    with pytest.raises(AppError, match=refused):
        bob.predict(["../alice/selfies/01.jpg"], api_name="/remove")
    with pytest.raises(AppError, match=refused):
        bob.predict(["01.jpg"], api_name="/export")
    said = page(bob.predict([], api_name="/export"), ("files", "crops"))  # said where the crops go, and stays there
    assert said["files"] is None and "<b>Not done:</b> Nothing generated yet. Pick styles" in said["crops"], said
    with pytest.raises(AppError, match="Tick the photos to remove first"):  # it answered "removed 0 photo(s)"
        bob.predict([], api_name="/remove")
    assert httpx.get(f"{server.url}gradio_api/file={own}").status_code == 403  # no file is served by its path
    assert own.is_file()

    with pytest.raises(AppError, match=refused):
        bob.predict("linkedin-00.png", 0.35, api_name="/more")  # more like an image bob never generated
    with pytest.raises(gr.Error, match="Pick one of your generated images first"):
        server.app.more("../alice/selfies/01.jpg", 0.35, "bob", None)  # past Gradio's check, the app's own

    nameless = client_of(server)
    with pytest.raises(AppError, match="Tell us your name first"):
        nameless.predict([handle_file(str(selfies[0]))], api_name="/upload")
    assert not cached_copy(selfies[0]).exists()  # refused, and not left in Gradio's cache for an hour (a review)
    assert not cached_copy(selfies[0]).parent.exists()  # nor the folder named by its hash (a new-user walk)
    for name, said in (("../alice", "not allowed"), ("Alice Smith", "not allowed"), ("  ", "Type your name first")):
        refused = page(nameless.predict(name, api_name="/start"))  # said under the box, which stays usable
        assert said in refused["sign_in_note"] and "no spaces" in refused["sign_in_note"] and "Signed in" not in str(refused["who"])
    _, seen = session(server, "ALICE")  # names ignore case, as folders do on macOS and Windows: hers, not a second
    assert seen["who"] == "Signed in as **alice**." and "01.jpg" in seen["photos"] and not (server.data / "ALICE").exists()
    reloaded = server.app.on_load({"name": "ALICE"}, None)  # a browser that remembered the name as typed
    assert reloaded[server.app.c["who"]] == "Signed in as **alice**.", reloaded


def test_the_page_opens_while_the_photos_are_being_checked_elsewhere(server, selfies):
    """Another tab's upload, a batch or `make intake` judging the person's photos holds their intake lock: the page,
    which judges photos last judged elsewhere again, did not open at all (an error box; a review). It shows them as
    they stand."""
    from tests.conftest import held_elsewhere

    selfies_dir = server.data / "dora" / "selfies"
    copy_photos(selfies[:2], selfies_dir)  # never judged by this app: due
    with held_elsewhere(selfies_dir.parent / ".intake.lock"):
        _, opened = session(server, "dora")
    assert opened["who"] == "Signed in as **dora**." and "Your photos (2) are being checked elsewhere" in opened["photos"]
    session(server, "dora")  # judged by this app: verdicts on the page
    copy_photos(selfies[2:3], selfies_dir)  # added since the verdicts the page has (a re-walk: shown as if current)
    with held_elsewhere(selfies_dir.parent / ".intake.lock"):
        _, opened = session(server, "dora")
    assert "being checked already" in opened["notes"] and "may be from before that" in opened["notes"], opened["notes"]


def test_signed_in_name_is_the_only_identity(tmp_path, tiny_model, analyzer, selfies):
    accounts = {"alice": "alice-secret", "bob": "bob-secret"}
    with serve(tmp_path, tiny_model, analyzer, accounts=accounts) as running:
        with pytest.raises(ValueError, match="Could not login"):
            client_of(running, auth=("bob", "alice-secret"))
        alice = client_of(running, auth=("alice", "alice-secret"))
        upload(alice, selfies[:1])
        bob = client_of(running, auth=("bob", "bob-secret"))
        seen = page(bob.predict("alice", api_name="/start"))  # typing another name changes nothing
        assert seen["who"] == "Signed in as **bob**." and "01.jpg" not in seen["photos"]
        assert sorted(p.name for p in running.data.iterdir()) == ["alice"]
        # a name in another case (a phone capitalises the first letter) is that account, as the file spells it: it
        # was refused, and kept as typed it would have opened another, empty folder
        phone = httpx.Client(base_url=running.url)
        assert phone.post("login", files={"username": (None, "Alice "), "password": (None, "alice-secret")}).status_code == 200
        assert signed_in_as(phone) == "alice"
        assert httpx.post(running.url + "login", data={"username": "ALICE", "password": "bob-secret"}).status_code == 400

        # Alice's download is served to her alone: Gradio's file route would hand it to any account with the link.
        samples = running.app.workspace("alice").samples_dir(running.app.run)
        samples.mkdir(parents=True)
        Image.open(selfies[0]).convert("RGB").save(samples / "linkedin-00.png")  # stands in for a generated image
        (samples / "scores.json").write_text(json.dumps({"images": [
            {"file": "linkedin-00.png", "style": "linkedin", "seed": 0, "kept": True, "rank": 1, "similarity": 0.7,
             "similarity_max": 0.8, "reason": "looks like you", "reasons": []}], "kept": 1, "references": 5, "threshold": 0.6}))
        alice.predict("alice", api_name="/start")  # her page again, now offering it to tick
        files = page(alice.predict(["linkedin-00.png"], api_name="/export"), ("files", "crops"))["files"]
        assert sorted(Path(f).name for f in files) == ["cv-360x480-linkedin-00.jpg", "headshots.zip",
                                                        "linkedin-400x400-linkedin-00.jpg", "portrait-384x480-linkedin-00.jpg"]
        link = f"{running.url}gradio_api/file={cached_copy(running.app.download_folder('alice') / 'headshots.zip')}"
        as_alice, as_bob = signed_in(running.url, "alice", "alice-secret"), signed_in(running.url, "bob", "bob-secret")
        assert as_alice.get(link).status_code == 200 and as_bob.get(link).status_code == 404
        assert httpx.get(link).status_code == 404  # nor to no one signed in
        # an earlier download stays hers while Gradio keeps it, and goes with her data
        Image.open(selfies[1]).convert("RGB").save(samples / "linkedin-01.png")
        scores = json.loads((samples / "scores.json").read_text())
        scores["images"].append({**scores["images"][0], "file": "linkedin-01.png", "seed": 1, "rank": 2})
        (samples / "scores.json").write_text(json.dumps(scores))
        alice.predict("alice", api_name="/start")
        alice.predict(["linkedin-01.png"], api_name="/export")
        assert as_alice.get(link).status_code == 200 and as_bob.get(link).status_code == 404
        # both exports are listed for the app's close (or the next app, if it is killed) to remove from Gradio's cache
        listed = (running.app.downloads_root / SERVED).read_text().split()
        assert cached_copy(running.app.download_folder("alice") / "headshots.zip").parent.name in listed
        assert Path(link.partition("file=")[2]).parent.name in listed
        alice.predict(api_name="/delete_my_data")
        assert not Path(link.partition("file=")[2]).exists()  # Gradio's copy is gone too, not left to its hourly clean-up
        assert as_alice.get(link).status_code != 200 and as_bob.get(link).status_code != 200


def test_a_request_under_another_sites_name_is_refused_and_no_answer_may_be_framed(server):
    """DNS rebinding (security walk): a web site whose name resolves to 127.0.0.1 makes the visitor's browser treat
    the app as part of that site, and its script could then sign in as anyone and read or delete their photos. The
    page, its config and the API's queue all answered a request whose Host named another site."""
    port = urlsplit(server.url).port
    for host in ("attacker.example", "127.0.0.1.attacker.example", "localhost.attacker.example", "10.0.0.5"):
        for method, path in (("GET", ""), ("GET", "config"), ("POST", "gradio_api/queue/join")):
            answer = httpx.request(method, server.url + path, headers={"Host": f"{host}:{port}"}, json={"data": ["alice"], "fn_index": 0})
            assert answer.status_code == 400 and f"open http://127.0.0.1:{port}/" in answer.text, (host, path)
    for host in ("127.0.0.1", "localhost", "LocalHost", "[::1]", "app.localhost", "127.0.0.2"):
        assert httpx.get(server.url + "config", headers={"Host": f"{host}:{port}"}).status_code == 200, host
    # nor is the page shown inside another site's (a decoy over its buttons): Gradio sent neither header
    page = httpx.get(server.url)
    assert page.headers["x-frame-options"] == "DENY" and page.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_sign_in_waits_after_too_many_wrong_passwords_for_a_name_or_from_an_address(tmp_path, tiny_model, analyzer):
    """Gradio checked every password it was sent, as fast as they came (security walk: a scripted guesser on the LAN
    got an answer per try, for ever). Each loopback address below stands for another machine."""
    class Checked(dict):  # the accounts, counting the passwords the app checks
        checks = 0

        def get(self, name, default=None):
            Checked.checks += 1
            return super().get(name, default)

    accounts = Checked(alice="alice-secret", bob="bob-secret")
    with serve(tmp_path, tiny_model, analyzer, "app.max_failed_sign_ins=3", "app.sign_in_lockout_s=3", accounts=accounts) as running:
        def sign_in(name: str, password: str, address: str, form: str = "urlencoded") -> int:
            with httpx.Client(base_url=running.url, transport=httpx.HTTPTransport(local_address=address)) as client:
                fields = {"username": name, "password": password}
                if form == "multipart":  # as the page's sign-in form sends it
                    response = client.post("login", files={key: (None, value) for key, value in fields.items()})
                else:
                    response = client.post("login", data=fields)
                assert response.status_code == 200 or response.json() == {"detail": "Incorrect credentials."}  # Gradio's own
                return response.status_code

        async def at_once(name: str, tries: int) -> list[int]:  # from as many addresses
            clients = [httpx.AsyncClient(base_url=running.url, transport=httpx.AsyncHTTPTransport(local_address=f"127.0.1.{n}"))
                       for n in range(tries)]
            answers = await asyncio.gather(*(c.post("login", data={"username": name, "password": "guess"}) for c in clients))
            await asyncio.gather(*(c.aclose() for c in clients))
            return [answer.status_code for answer in answers]

        assert "After 3 wrong passwords within 3 seconds" in httpx.get(running.url + "config").text  # the page says the rule
        # one name guessed from three addresses, one try each: that name waits, whoever asks, right password or not
        assert [sign_in("Bob", "guess", f"127.0.0.{n}") for n in (2, 3, 4)] == [400] * 3
        assert sign_in("bob", "bob-secret", "127.0.0.5") == 400
        assert sign_in("alice", "alice-secret", "127.0.0.5") == 200  # the address and other names are not held
        # one address trying names that are no account: that address waits, for every name
        assert [sign_in(f"mallory{n}", "guess", "127.0.0.6", form="multipart") for n in range(3)] == [400] * 3
        assert sign_in("alice", "alice-secret", "127.0.0.6", form="multipart") == 400
        assert sign_in("alice", "alice-secret", "127.0.0.7", form="multipart") == 200
        time.sleep(3.1)  # the oldest failures are as old as the lockout: both sign in again
        assert sign_in("bob", "bob-secret", "127.0.0.5") == 200 and sign_in("alice", "alice-secret", "127.0.0.6") == 200
        # twenty guesses sent at once: three are checked, however they interleave
        checked = Checked.checks
        assert asyncio.run(at_once("alice", 20)) == [400] * 20 and Checked.checks - checked == 3


def test_a_sign_in_no_page_uses_is_forgotten_and_an_open_page_keeps_its_own(tmp_path, tiny_model, analyzer):
    """Gradio kept every sign-in until the app stopped (security walk: a cookie copied from a browser no one had used
    for days still opened that person's photos)."""
    accounts = {"alice": "alice-secret", "bob": hash_password("bob-secret")}  # as typed, or as --add-account keeps it
    with serve(tmp_path, tiny_model, analyzer, "app.sign_in_idle_s=3", accounts=accounts) as running:
        # alice signs in last, so that her page's first tick follows at once: on a busy CI bob's sign-in (a hash
        # checked) took long enough, after hers, for her sign-in to be forgotten before her page had asked once
        bob = signed_in(running.url, "bob", "bob-secret")
        alice = signed_in(running.url, "alice", "alice-secret")
        copied = httpx.Client(base_url=running.url, cookies=bob.cookies)  # bob's cookie, taken elsewhere
        who = signed_in_as
        for _ in range(8):  # alice's page asks every half second (an open page ticks): hers is kept past 3 s
            assert who(alice) == "alice"
            time.sleep(0.5)
        assert who(bob) is False and who(copied) is False and who(alice) == "alice"
        assert sorted(running.app.demo.server_app.tokens.values()) == ["alice"]
        assert who(signed_in(running.url, "bob", "bob-secret")) == "bob"  # the password opens it again

        async def page_beside_a_sign_in() -> list[str]:  # a hash is checked (~0.4 s) in a thread, not on the event loop
            done: list[str] = []
            async with httpx.AsyncClient(base_url=running.url) as client:
                async def sign_in() -> None:
                    await client.post("login", data={"username": "bob", "password": "bob-secret"})
                    done.append("sign-in")

                async def page() -> None:
                    await asyncio.sleep(0.15)
                    await client.get("gradio_api/login_check")
                    done.append("page")

                await asyncio.gather(sign_in(), page())
            return done

        assert asyncio.run(page_beside_a_sign_in()) == ["page", "sign-in"]


def test_the_password_file_keeps_hashes_written_by_add_account(tmp_path, capsys, monkeypatch, caplog):
    """The password file held every password as typed: anyone who read it, or a backup of it, could sign in as
    anyone. --add-account stores a salted scrypt hash; a typed line still works, with a warning."""
    path = tmp_path / "accounts.txt"

    def add(name: str, password: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))  # a pipe: a terminal is asked twice, unechoed
        return main(["--password-file", str(path), "--add-account", name])

    assert add("alice", "first") == 0 and add("bob", "bob-secret") == 0 and add("Alice", "second") == 0
    assert "alice: account added to" in capsys.readouterr().out
    text = path.read_text()
    assert [line.split(":")[0] for line in text.splitlines()] == ["alice", "bob"] and "first" not in text and "second" not in text
    assert path.stat().st_mode & 0o777 == 0o600
    accounts = read_password_file(path)
    assert password_matches(accounts["alice"], "second") and not password_matches(accounts["alice"], "first")
    assert password_matches(accounts["bob"], "bob-secret") and not password_matches(accounts["bob"], "bob-secret ")
    assert accounts["alice"].split("$")[3] != accounts["bob"].split("$")[3]  # a salt each

    path.write_text("# the office\n" + text + "carol:typed\n")  # a line added by hand, the file left readable
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert password_matches(read_password_file(path)["carol"], "typed")
    assert "passwords of carol as typed" in caplog.text and f"chmod 600 {path}" in caplog.text
    assert add("carol", "hashed-now") == 0
    assert path.read_text().startswith("# the office\nalice:$scrypt$") and "typed" not in path.read_text()

    path.write_text(text.replace("$scrypt$n=131072", "$scrypt$n=1000"))  # not a power of two: scrypt cannot use it
    with pytest.raises(ConfigError, match="line 1: the hash is damaged"):
        read_password_file(path)
    assert add("dave", "") == 2 and "An empty password" in capsys.readouterr().err
    assert main(["--add-account", "dave"]) == 2 and "--add-account needs the file" in capsys.readouterr().err
    assert add("../dave", "x") == 2


def test_make_account_asks_on_a_terminal_twice_and_shows_nothing_typed(tmp_path):
    """`make account USER=alice` at a terminal: the password is asked for twice, never shown, and stored only when
    both agree (run in a pseudo-terminal, as a person's shell runs it)."""
    import pty

    assert "-m service.accounts --password-file 'accounts.txt' --add-account 'alice'" in run_make("-n", "account", "USER=alice").stdout
    path = tmp_path / "accounts.txt"

    def typed(*answers: str) -> tuple[int, str]:
        pid, terminal = pty.fork()
        if pid == 0:  # the child: only exec (forked from a process with threads)
            os.chdir(REPO)
            os.execv(sys.executable, [sys.executable, "-m", "service.accounts", "--password-file", str(path), "--add-account", "alice"])
        shown = b""
        for prompt, answer in zip((b"Password for alice: ", b"The same again: "), answers, strict=True):
            start = len(shown)
            while prompt not in shown[start:]:
                shown += os.read(terminal, 1024)
            os.write(terminal, answer.encode() + b"\n")
        with contextlib.suppress(OSError):  # EIO once the child has gone
            while chunk := os.read(terminal, 1024):
                shown += chunk
        os.close(terminal)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), shown.decode()

    status, shown = typed("correct horse", "correct hrose")
    assert status == 2 and "The two passwords differ; nothing was changed." in shown and not path.exists()
    status, shown = typed("correct horse", "correct horse")
    assert status == 0 and "alice: account added to" in shown
    assert "correct" not in shown  # not echoed
    assert password_matches(read_password_file(path)["alice"], "correct horse")


def test_an_account_the_disk_cannot_take_is_said_and_the_file_left_as_it_was(tmp_path):
    """`make account` on a full disk (here a file size limit the new file passes, which Python reports as EFBIG):
    what could not be written and what to do, no traceback, and the password file as it was, every account in it."""
    import resource

    path = tmp_path / "accounts.txt"
    add_account(path, "alice", "alice-secret")
    before = path.read_bytes()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 20, len(before) + 20))

    done = subprocess.run([sys.executable, "-m", "service.accounts", "--password-file", str(path), "--add-account", "bob"],
                          input="bob-secret\n", cwd=REPO, preexec_fn=limit, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "Could not write" in done.stderr and "EFBIG" in done.stderr and "run the same command again" in done.stderr
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["accounts.txt"]


def test_sign_out_comes_from_the_apps_own_page_and_ends_that_browsers_sign_in(tmp_path, tiny_model, analyzer):
    """Gradio signs out on a GET of /logout, by default in every browser of that person: a link or an image on any
    other site could do it. Refused unless the browser says the request came from the app's own page (its Sign out:
    tests/test_app_browser.py) or was typed. Over plain http (here, as on a home network) the sign-in it ends is the
    browser's own: Gradio's ended the one its https-only cookie names, and left this one valid."""
    with serve(tmp_path, tiny_model, analyzer, accounts={"alice": "alice-secret"}) as running:
        laptop, phone = (signed_in(running.url, "alice", "alice-secret") for _ in range(2))
        tokens = running.app.demo.server_app.tokens
        copied = dict(laptop.cookies)
        for site in ("cross-site", "same-site"):  # same-site: another app on this host, or a sibling subdomain
            refused = laptop.get("logout", headers={"Sec-Fetch-Site": site})
            assert refused.status_code == 403 and "own page" in refused.text
            assert signed_in_as(laptop) == "alice" and len(tokens) == 2
        assert laptop.get("logout?all_session=false", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 302
        assert signed_in_as(httpx.Client(base_url=running.url, cookies=copied)) is False
        assert signed_in_as(phone) == "alice" and len(tokens) == 1


def test_the_password_file_is_followed_while_the_app_runs(tmp_path, tiny_model, analyzer, caplog):
    """The file was read once, at start: adding a person meant restarting the app, which ends everyone's jobs, and
    a person taken out of the file, or whose password was changed, stayed signed in until the app stopped."""
    path = tmp_path / "accounts.txt"
    add_account(path, "alice", "alice-1")

    def status(name: str, password: str) -> int:
        return httpx.post(running.url + "login", data={"username": name, "password": password}).status_code

    with serve(tmp_path / "app", tiny_model, analyzer, accounts=path) as running:
        alice = signed_in(running.url, "alice", "alice-1")
        add_account(path, "bob", "bob-1")  # `make account USER=bob` while the app runs
        bob = signed_in(running.url, "bob", "bob-1")
        assert signed_in_as(alice) == "alice" and signed_in_as(bob) == "bob"
        add_account(path, "alice", "alice-2")  # a new password ends the old one's sign-ins
        assert signed_in_as(alice) is False and signed_in_as(bob) == "bob"
        assert status("alice", "alice-1") == 400 and status("alice", "alice-2") == 200
        with caplog.at_level(logging.WARNING):
            path.write_text(path.read_text() + "a line with no password\n")  # an edit gone wrong: nothing changes
            assert signed_in_as(bob) == "bob" and status("alice", "alice-2") == 200
        assert "changed, but cannot be used" in caplog.text and "The accounts read before stay" in caplog.text
        path.write_text("".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("alice:")))
        assert signed_in_as(bob) is False and status("bob", "bob-1") == 400  # taken out of the file


def test_refuses_to_listen_beyond_loopback_without_a_password(capsys, tmp_path):
    assert main(["--host", "0.0.0.0", "--profile", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "error: Listening on 0.0.0.0" in err and "--password-file" in err
    # IPv6 loopback, with or without brackets, is loopback; Gradio is given it in brackets (it builds URLs from it)
    assert is_loopback("::1") and is_loopback("[::1]") and not is_loopback("[::]") and not is_loopback("::")
    assert listen_address("::1") == listen_address("[::1]") == "[::1]"
    assert listen_address("127.0.0.1") == "127.0.0.1" and listen_address("localhost") == "localhost"
    # sign-in tries count against an IPv4 address, or an IPv6 address's /64 (one machine is handed a whole /64)
    assert client_network("10.0.0.5") == "10.0.0.5" and client_network("testclient") == "testclient"
    assert client_network("2001:db8:1:2:aaaa::1") == client_network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    bad = tmp_path / "passwords"
    bad.write_text("alice:one\n../bob:two\n")
    with pytest.raises(ConfigError, match="not allowed"):
        read_password_file(bad)
    bad.write_bytes(b"alice:\xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_password_file(bad)
    bad.write_text("alice:one\nbob:two\nAlice:three\n")  # on macOS, Alice's folder is alice's
    with pytest.raises(ConfigError, match="line 3: 'Alice' is already an account"):
        read_password_file(bad)
    bad.write_text("# people\nalice:one\nbob:two:with:colons\n")
    assert read_password_file(bad) == {"alice": "one", "bob": "two:with:colons"}
    assert safe_file_name("../../etc/passwd") == "passwd" and safe_file_name(".hidden jpg.JPG") == "hidden_jpg.JPG"
    # letters of any script stay (macOS sends them decomposed); emoji, spaces and direction marks do not
    assert safe_file_name("Ju\u0308rgen 😀.jpg") == "Jürgen__.jpg" and safe_file_name("gpj.\u202eexe") == "gpj._exe"
    long = safe_file_name("写" * 120 + ".jpg")  # 364 bytes: over a file name's 255
    assert long.endswith("写.jpg") and len(long.encode()) <= 150


def test_a_taken_or_impossible_port_is_named_with_what_to_do(capsys):
    """A second `make app` on 7860 ended in Gradio's traceback, after the face models had loaded; a port past 65535
    in the server's OverflowError."""
    with socket.socket() as other:  # another program listening on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["--port", str(port), "--profile", "tiny"]) == 2
    err = capsys.readouterr().err
    assert f"error: Port {port} on 127.0.0.1 is taken" in err and f"make app PORT={port + 1}" in err and "Traceback" not in err
    for port in ("99999", "0", "http"):
        with pytest.raises(SystemExit) as refused:
            main(["--port", port, "--profile", "tiny"])
        assert refused.value.code == 2 and "argument --port: invalid port" in capsys.readouterr().err
    assert "-m service.app --profile 'sdxl' --port='8000'" in run_make("-n", "app", "PORT=8000").stdout  # as make app PORT=... runs it


def run_alone(argv: list[str], log_path: Path) -> Job:
    """One job through a queue of its own, to its end."""
    queue = JobQueue([None])
    try:
        job = queue.submit("alice", "train", argv, log_path)
        wait_until(lambda: not job.active, 20)
    finally:
        queue.close()
    return job


def test_job_queue_order_position_and_stop(tmp_path):
    """One worker: the second person waits with a position; a person has one job at a time; a stopped
    job ends and the next one starts."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    queue = JobQueue([None])
    try:
        first = queue.submit("alice", "train", sleeper, tmp_path / "a.log")
        second = queue.submit("bob", "train", sleeper, tmp_path / "b.log")
        wait_until(lambda: first.state == RUNNING, 10)
        assert (first.state, second.state, queue.position(second)) == (RUNNING, QUEUED, 1)
        with pytest.raises(Exception, match="still running"):
            queue.submit("alice", "generate", sleeper, tmp_path / "c.log")
        queue.stop("alice")
        assert first.state == STOPPED
        wait_until(lambda: second.state == RUNNING, 10)
        assert second.state == RUNNING and queue.position(second) == 0
    finally:
        queue.close()
    assert second.state == STOPPED


def test_a_job_pressed_for_while_one_runs_shows_the_one_running(server, tmp_path):
    """A second tab's Generate, while the first tab's job ran, was refused in a box that said "stop it first" over a
    status line that said nothing ran, its Stop greyed (a walk). The box stays; the status line is the job's."""
    app = server.app
    ws = app.workspace("rita")
    ws.adapter_dir(app.run).mkdir(parents=True)
    (ws.adapter_dir(app.run) / ADAPTER_WEIGHTS).write_bytes(b"weights")  # trained before
    job = app.jobs.submit("rita", "train", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "t.log")
    try:
        wait_until(lambda: job.state == RUNNING, 10)
        with pytest.warns(UserWarning, match="Your train job is still running. Wait for it to finish, or stop it first."):
            out = app.generate(["linkedin"], 1, None, None, "rita", None)
        assert out[app.c["status"]].startswith("**Training**") and out[app.c["stop"]]["interactive"] is True, out
        assert app.jobs.latest("rita") is job
    finally:
        app.jobs.stop("rita")


def test_purge_is_refused_from_the_moment_a_job_starts(tmp_path, capsys):
    """A purge 2 s into a web app's Generate went through: the job's process was still importing, before it took any
    lock of its own. It then failed, pointing at a log the purge had deleted. The app holds the job's lock from before
    the process starts until it has ended: a purge is refused while the process runs, and goes through after it; a
    job does not start while a purge holds the lock."""
    from service.jobs import JOB_LOCK, JOBS_FOLDER
    from service.purge import main as purge
    from tests.conftest import held_elsewhere

    (tmp_path / "data" / "dana" / "selfies").mkdir(parents=True)
    jobs_dir = tmp_path / "outputs" / "dana" / "default" / JOBS_FOLDER
    args = ["--user", "dana", f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}"]
    queue = JobQueue([None])
    try:
        job = queue.submit("dana", "generate", [sys.executable, "-c", "import time; time.sleep(60)"], jobs_dir / "generate.log")
        wait_until(lambda: job.process is not None, 10)
        assert purge(args) == 2 and (jobs_dir / "generate.log").is_file()
        assert "dana's data is in use (run 'default': a job of the web app)" in capsys.readouterr().err
        queue.stop("dana")
        assert purge(args) == 0 and not (tmp_path / "outputs" / "dana").exists()
        jobs_dir.mkdir(parents=True)
        with held_elsewhere(jobs_dir / JOB_LOCK):  # a purge under way
            refused = queue.submit("dana", "generate", [sys.executable, "-c", "pass"], jobs_dir / "generate.log")
            wait_until(lambda: not refused.active, 10)
    finally:
        queue.close()
    assert refused.state == "failed" and refused.process is None and "being deleted" in refused.error


def test_a_waiting_job_says_what_it_waits_for(tmp_path):
    """Next in line read "0 jobs ahead of yours" while another person's training ran for minutes."""
    from headshots.workspace import Workspace
    from service.views import job_markdown

    ws, job = Workspace("bob", tmp_path / "data", tmp_path / "out"), Job(2, "bob", "train", [], tmp_path / "b.log")
    assert "waiting in line**, after what is running now." in job_markdown(ws, "default", job, 1)
    assert "after what is running now and 2 jobs waiting before yours" in job_markdown(ws, "default", job, 3)


def test_the_tick_that_says_done_brings_the_review(server, tmp_path):
    from service import views

    """A generation can end while a status tick is under way. The status that says "Done" also stops the timer, so
    that same tick must bring the review: otherwise the person reads "Done" over an empty Review tab, for good (seen
    in CI when the job's state was read before its status). Here the worker ends the job inside the tick."""
    app = server.app
    job = app.jobs.submit("quinn", "generate", [sys.executable, "-c", "import time; time.sleep(0.5)"], tmp_path / "g.log")
    wait_until(lambda: job.state == RUNNING, 10)
    seen = [job.id, job.state]  # what the last tick saw
    status_view = app.status_view

    def ending_meanwhile(user: str, ws=None) -> dict:
        wait_until(lambda: not job.active, 20)  # the worker thread ends the job now
        return status_view(user, ws)

    app.status_view = ending_meanwhile
    try:
        out = app.tick("quinn", seen, views.REVIEW_PAGE, False, [], None, None)
    finally:
        del app.status_view
    assert out[app.c["status"]].startswith("**Done:**") and out[app.c["timer"]].active is False
    # the review itself (this job is a stand-in process that makes no images, so the review says so)
    assert out[app.c["seen"]] == [job.id, DONE] and "Nothing generated yet" in out[app.c["review"]]


def test_a_tab_come_back_to_shows_the_review_as_it_is_now(server):
    """A tab that saw no job of this person (images made with the CLI, an app restarted since) kept its review when
    it was come back to: only a change of job redrew it (a diff review). Coming back redraws it; a tick does not."""
    from service import views

    app = server.app
    assert app.c["review"] not in app.tick("una", None, views.REVIEW_PAGE, False, [], None, None)
    out = app.come_back("una", None, views.REVIEW_PAGE, False, [], None, None)
    assert "Nothing generated yet" in out[app.c["review"]] and app.c["favourites"] in out


def test_own_background_and_clothing_go_to_the_job_as_plain_text(server):
    """What a person types for the background or clothing ends up in the prompts (the browser test follows it into
    the manifest); anything beyond words and plain punctuation is refused, before any job: it would otherwise be read
    as config (`${oc.env:...}` interpolation, YAML lists and maps)."""
    app = server.app
    adapter = app.workspace("ivan").adapter_dir(app.run)
    adapter.mkdir(parents=True)
    (adapter / ADAPTER_WEIGHTS).write_bytes(b"")  # trained, as far as the Generate button is concerned
    for typed in ("${oc.env:HOME}", "red: blue", "[wall]", "x" * 101):
        with pytest.raises(gr.Error, match="words and , . ' & / - only"):
            app.generate(["linkedin"], 1, typed, "", "ivan", None)
    assert app.jobs.latest("ivan") is None
    app.generate(["linkedin"], 1, "  O'Brien's   office, café ", "", "ivan", None)
    job = app.jobs.latest("ivan")
    app.jobs.stop("ivan")
    (typed,) = [arg for arg in job.argv if arg.startswith("infer.style_overrides.")]
    as_read = load_config("ivan", "tiny", overrides=[typed]).infer.style_overrides  # as the job's CLI reads it
    assert dict(as_read) == {"background": "O'Brien's office, café"}
    assert not any("clothing" in arg for arg in job.argv)  # left blank: the style's own


def test_styles_tab_opens_with_the_persons_own_settings_and_a_bad_file_locks_no_one_out(server):
    app, c = server.app, server.app.c
    rosa = server.data / "rosa"
    rosa.mkdir(parents=True)
    (rosa / "settings.yaml").write_text("infer:\n  styles: [doctor, speaker]\n  images_per_style: 2\n"
                                        "  style_overrides:\n    background: hospital corridor\n")
    shown = app.page("rosa")
    assert (shown[c["styles"]], shown[c["background"]], shown[c["clothing"]]) == (["doctor", "speaker"], "hospital corridor", "")
    assert shown[c["count"]] == 1  # the app was started with infer.images_per_style=1: its key=value wins over the file
    assert shown[c["styles_note"]] == ""

    sam = server.data / "sam"
    (sam / "selfies").mkdir(parents=True)
    (sam / "selfies" / "a.jpg").write_bytes(b"not really a photo")
    (sam / "settings.yaml").write_text("train:\n  max_steps: 1\n")  # not a person's to set
    shown = app.page("sam")
    assert shown[c["styles"]] == list(app.defaults.styles) and "settings.yaml was left out" in shown[c["styles_note"]]
    assert "train.max_steps" in shown[c["styles_note"]]
    assert c["status"] in app.status_view("sam")  # the status line still shows
    with pytest.raises(ConfigError, match="train.max_steps"):  # Train says why, not "nothing to train"
        app.training_due("sam")
    app.delete_everything("sam", None)  # their data can still be deleted, the file included
    assert not sam.exists()


def test_delete_my_data_is_refused_while_a_training_of_theirs_runs_elsewhere(server):
    """A training started in a terminal (or by a killed app) would write the adapter back after the deletion: Delete
    my data is refused before anything goes (privacy walk; review: the downloads went before the refusal)."""
    from service.batch import BATCH_LOCK
    from tests.conftest import held_elsewhere
    from train.checkpoint import TRAIN_LOCK

    tia = server.data / "tia"
    (tia / "selfies").mkdir(parents=True)
    (tia / "selfies" / "a.jpg").write_bytes(b"a selfie")
    run = server.outputs / "tia" / "default"
    run.mkdir(parents=True)
    with held_elsewhere(run / TRAIN_LOCK), pytest.raises(gr.Error, match="in use .run .default.: training"):
        server.app.delete_everything("tia", None)
    assert (tia / "selfies" / "a.jpg").is_file() and run.is_dir()
    # a batch running them: refused before their own job in the app is stopped (it was stopped, then refused)
    server.app.jobs.submit("tia", "generate", [sys.executable, "-c", "import time; time.sleep(30)"], run / "t.log")
    try:
        with held_elsewhere(run / BATCH_LOCK), pytest.raises(gr.Error, match="in use .run .default.: a batch"):
            server.app.delete_everything("tia", None)
        assert server.app.jobs.latest("tia").active
    finally:
        server.app.jobs.stop("tia")
    server.app.delete_everything("tia", None)
    assert not tia.exists() and not run.exists()


def test_deleting_images_takes_only_the_persons_own_and_never_under_a_running_job(server, tmp_path):
    app = server.app
    with pytest.raises(gr.Error, match="Tick the images to delete first"):
        app.discard([], 24, False, [], "tess", None)
    with pytest.raises(gr.Error, match=r"Not among your images now: \.\./alice/default/samples/linkedin-00\.png\."):
        app.discard(["../alice/default/samples/linkedin-00.png"], 24, False, [], "tess", None)
    app.jobs.submit("tess", "generate", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "t.log")
    try:
        with pytest.raises(gr.Error, match="Wait for your job to finish"):
            app.discard(["linkedin-00.png"], 24, False, [], "tess", None)
    finally:
        app.jobs.stop("tess")


def test_the_review_draws_a_page_of_cards_and_the_dropped_ones_when_asked(server):
    """Every card carries its pictures, so the tab draws the best page of kept images, with Show more for the rest,
    and the dropped ones only when the person asks for them; the pickers still offer every image."""
    from service import views

    app, c = server.app, server.app.c
    samples = app.workspace("vera").samples_dir(app.run)
    samples.mkdir(parents=True)
    rows = []
    for k in range(views.REVIEW_PAGE + 5):  # a page and 2 more kept, 3 dropped
        Image.new("RGB", (16, 16), (k, 90, 90)).save(samples / f"linkedin-{k:02d}.png")
        kept = k < views.REVIEW_PAGE + 2
        rows.append({"file": f"linkedin-{k:02d}.png", "style": "linkedin", "seed": k, "kept": kept, "rank": k + 1 if kept else None,
                     "similarity": 0.7, "similarity_max": 0.8, "reason": "looks like you", "reasons": []})
    (samples / "scores.json").write_text(json.dumps({"images": rows, "kept": views.REVIEW_PAGE + 2, "references": 5, "threshold": 0.6}))

    shown = app.page("vera")
    assert len(re.findall("class='hs-card ", shown[c["review"]])) == views.REVIEW_PAGE  # the best page, no dropped card
    assert "Showing 24 of 26" in shown[c["review"]] and shown[c["review_more"]]["visible"]
    assert shown[c["dropped_toggle"]]["value"] == "Show the 3 dropped images and why"
    assert len(shown[c["discard_pick"]]["choices"]) == len(rows)  # every image can still be picked

    more = app.show_more(shown[c["shown"]], False, ["linkedin-01.png"], "vera", None)
    assert more[c["shown"]] == 2 * views.REVIEW_PAGE and more[c["review_more"]]["visible"] is False
    assert len(re.findall("class='hs-card kept", more[c["review"]])) == views.REVIEW_PAGE + 2
    assert c["favourites"] not in more  # the person's ticks stay, and show on their cards
    assert re.findall(FAVOURITE_TICKED, more[c["review"]]) == ["linkedin-01.png"]

    # drawn again after a job or a deletion: the favourites ticked stay ticked while their images exist
    again = app.review_view(app.workspace("vera"), views.REVIEW_PAGE, False, ["linkedin-01.png", "linkedin-99.png"])
    assert again[c["favourites"]]["value"] == ["linkedin-01.png"]
    assert re.findall(FAVOURITE_TICKED, again[c["review"]]) == ["linkedin-01.png"]

    # a tick is saved (another person's or an unknown file is not), and the page opened again shows it
    app.keep_favourites(["linkedin-02.png", "../alice/default/samples/linkedin-00.png"], "vera", None)
    assert app.page("vera")[c["favourites"]]["value"] == ["linkedin-02.png"]

    opened = app.toggle_dropped(views.REVIEW_PAGE, False, [], "vera", None)
    assert opened[c["dropped_open"]] is True and opened[c["dropped_toggle"]]["value"] == "Hide the dropped images"
    assert re.findall("hs-card dropped' data-file='([^']+)'", opened[c["review"]]) == ["linkedin-26.png", "linkedin-27.png", "linkedin-28.png"]
    folded = app.toggle_dropped(views.REVIEW_PAGE, True, [], "vera", None)
    assert folded[c["dropped_open"]] is False and "class='hs-card dropped" not in folded[c["review"]]


def test_the_review_shows_the_persons_own_faces_beside_the_images(server, selfies):
    """What the images are judged against: the person's usable photos, cropped to the face at the size of a card's
    avatar view (rejected photos left out); once trained, the photos prepare kept."""
    import base64
    import io
    import shutil

    from service import views

    ws = server.app.workspace("yara")
    ws.selfies.mkdir(parents=True)
    for photo in selfies[:2]:
        shutil.copy(photo, ws.selfies / photo.name)
    box = [0.3, 0.2, 0.6, 0.6]
    ws.intake_report.write_text(json.dumps({"photos": [{"file": selfies[0].name, "verdict": "warn", "face_box": box},
                                                       {"file": selfies[1].name, "verdict": "reject", "face_box": box}]}))
    strip = views.your_faces(ws)
    uris = re.findall("src='data:image/jpeg;base64,([^']+)'", strip)
    assert len(uris) == 1 and f"alt='{selfies[0].name}'" in strip
    assert Image.open(io.BytesIO(base64.b64decode(uris[0]))).size == (100, 100)
    # Once trained, the photos prepare kept: their embeddings are what scoring compares with.
    ws.prepare_report.write_text(json.dumps({"photos": [{"file": selfies[0].name, "kept": False, "face_box": box},
                                                        {"file": selfies[1].name, "kept": True, "face_box": box}]}))
    assert f"alt='{selfies[1].name}'" in views.your_faces(ws) and selfies[0].name not in views.your_faces(ws)
    # a report from before prepare gave fractions held the box in pixels: the same face is shown
    in_fractions = views.your_faces(ws)
    width, height = Image.open(selfies[1]).size
    pixels = [v * s for v, s in zip(box, (width, height, width, height))]
    ws.prepare_report.write_text(json.dumps({"photos": [{"file": selfies[1].name, "kept": True, "face_box": pixels}]}))
    assert views.your_faces(ws) == in_fractions
    (ws.selfies / selfies[1].name).unlink()  # removed since: nothing to show
    assert views.your_faces(ws) == ""


def test_an_image_scoring_never_reached_can_still_be_deleted(server):
    """A damaged image stops scoring, and its error sends the person to the Remove box: so that box offers what the
    manifest names beyond the review, and deleting it goes through (here it then stops at scoring again: this person
    has no reference photos, so the error says that instead)."""
    app, c = server.app, server.app.c
    samples = app.workspace("wes").samples_dir(app.run)
    samples.mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(samples / "linkedin-00.png")
    (samples / "linkedin-01.png").write_bytes(b"\x89PNG cut short")
    entry = {"style": "linkedin", "seed": 0, "prompt": "p", "prompt_2": "p", "negative_prompt": "n"}
    (samples / "manifest.json").write_text(json.dumps({"user": "wes", "run": app.run, "images": [
        {**entry, "file": "linkedin-00.png"}, {**entry, "file": "linkedin-01.png", "seed": 1}]}))
    (samples / "scores.json").write_text(json.dumps({"images": [
        {"file": "linkedin-00.png", "style": "linkedin", "seed": 0, "kept": True, "rank": 1, "similarity": 0.7,
         "similarity_max": 0.8, "reason": "looks like you", "reasons": []}], "kept": 1, "references": 5, "threshold": 0.6}))
    shown = app.page("wes")
    assert shown[c["discard_pick"]]["choices"] == [("#1 linkedin-00.png", "linkedin-00.png"),
                                                   ("linkedin-01.png (not scored)", "linkedin-01.png")]
    assert [file for _, file in shown[c["favourites"]]["choices"]] == ["linkedin-00.png"]  # only scored ones to export
    # the review's count says there are more than it ranks (it said "1 of 1 kept" beside any number unscored)
    assert "1 of 1 kept" in shown[c["review"]] and "1 more image drawn but not scored yet" in shown[c["review"]]
    from service import views

    adapter = app.workspace("wes").adapter_dir(app.run) / ADAPTER_WEIGHTS  # trained: the status line gives the review's count
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"")
    said = views.job_markdown(app.workspace("wes"), app.run, None, 0)
    assert "Your review holds 1 image (1 more drawn, not scored yet), 1 kept" in said, said
    adapter.unlink()
    with pytest.raises(gr.Error, match="No reference face embeddings"):
        app.discard(["linkedin-01.png"], 24, False, [], "wes", None)
    assert not (samples / "linkedin-01.png").exists()
    assert [e["file"] for e in json.loads((samples / "manifest.json").read_text())["images"]] == ["linkedin-00.png"]


def test_a_generation_says_how_many_of_its_images_are_made_or_that_it_trains_first(server):
    """Running: k of n so far. Done: what it made, also after one of them is deleted in the review (a walk saw
    'Done: 3 new images' for a round of 4)."""
    from service import views
    from service.jobs import Job
    from train.recipe import write_progress

    ws = server.app.workspace("uma")
    samples = ws.samples_dir(server.app.run)
    samples.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(samples / "linkedin-00.png")  # an earlier round's
    job = Job(1, "uma", "generate", [], samples / "g.log", state=RUNNING, started=time.time() - 5, expected_images=4)
    Image.new("RGB", (8, 8)).save(samples / "linkedin-00.detail.png")  # the face-detail pass's: not a new image
    assert "1 of 4 images made so far" in views.job_markdown(ws, server.app.run, job, 0)
    (samples / "linkedin-07.png").symlink_to(samples / "gone.png")  # listed, then gone before it was read (a discard)
    assert "1 of 4 images made so far" in views.job_markdown(ws, server.app.run, job, 0)  # the poll failed
    (samples / "linkedin-07.png").unlink()
    # photos added since training: the job trains again before it draws, and says so while it does
    write_progress(ws.progress(server.app.run), 3, 10, 0, 0.25, time.time() - 1)
    said = views.job_markdown(ws, server.app.run, job, 0)
    assert "training your adapter again first (your photos or settings changed): step **3 of 10**" in said, said
    write_progress(ws.progress(server.app.run), 10, 10, 0, 0.2, time.time() - 1)
    assert "1 of 4 images made so far" in views.job_markdown(ws, server.app.run, job, 0)  # trained: drawing now
    Image.new("RGB", (8, 8)).save(samples / "linkedin-01.png")
    job.state = DONE
    assert "**Done:** 2 new images" in views.job_markdown(ws, server.app.run, job, 0)
    (samples / "linkedin-01.png").unlink()  # deleted in the review: the round made it all the same
    assert "**Done:** 2 new images" in views.job_markdown(ws, server.app.run, job, 0)


def test_a_generation_says_what_it_does_before_its_first_image(server):
    """Before its first image a Generate checks the photos and loads the model (18-60 s on the tiny profile, ~30 s on
    SDXL), and said "0 of 4 images made so far" meanwhile, while Train said what it was doing (a walk): it says so too,
    until the first image is written, as Train does until its first step's progress.json."""
    from service import views
    from service.jobs import Job
    from train.recipe import write_progress

    ws, run = server.app.workspace("ulla"), server.app.run
    samples = ws.samples_dir(run)
    samples.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(samples / "linkedin-00.png")
    os.utime(samples / "linkedin-00.png", (time.time() - 60, time.time() - 60))  # an earlier round's
    job = Job(1, "ulla", "generate", [], samples / "g.log", state=RUNNING, started=time.time() + 1, expected_images=4)
    said = views.job_markdown(ws, run, job, 0)
    assert said.startswith("**Generating** (0:00): checking your photos, loading the model to draw 4 images. You can"), said
    job.kind, job.expected_images = "more", 2  # more like this draws from the images: no photos to check
    assert ": loading the model to draw 2 images." in views.job_markdown(ws, run, job, 0)
    job.kind, job.started = "generate", time.time() - 5
    write_progress(ws.progress(run), 10, 10, 0, 0.2, time.time() - 1)  # trained again first, then loading
    assert ": checking your photos, loading the model to draw 2 images." in views.job_markdown(ws, run, job, 0)
    os.utime(samples / "linkedin-00.png")  # the first image of this round
    assert ": 1 of 2 images made so far." in views.job_markdown(ws, run, job, 0)


def test_a_failure_holds_only_until_the_person_changes_what_it_read(server, selfies, tmp_path):
    """"Training failed: your photo set is not usable" and its hint stayed on the status line after the person added the
    photos it asked for, until the next job (a walk). It holds while their photos, settings and images are as the job
    left them (a refused upload changes nothing), then says what the files say, as it does with no job."""
    from tests.conftest import held_elsewhere
    from train.checkpoint import TRAIN_LOCK

    app, c = server.app, server.app.c
    client, _ = session(server, "yara")
    upload(client, selfies[:2])
    refused = ("import sys; print('error: This photo set is not usable yet: only 2 usable photos (need at least 5).'); "
               "print('  -> Add 3 more photos of you alone.'); sys.exit(2)")
    job = app.jobs.submit("yara", "train", [sys.executable, "-c", refused], tmp_path / "t.log")  # a stand-in training
    wait_until(lambda: not job.active, 30)
    failed = "**Training failed:** This photo set is not usable yet: only 2 usable photos (need at least 5).\n\n→ Add 3"
    assert app.status_view("yara")[c["status"]].startswith(failed)
    again = upload(client, selfies[:1])  # not kept twice: the photos are as they were
    assert "already here" in again["notes"] and again["status"].startswith(failed), again
    ws = app.workspace("yara")
    with held_elsewhere(ws.run_dir(app.run) / TRAIN_LOCK):
        said = app.status_view("yara")[c["status"]]
    assert said.startswith("**Training, started in a terminal"), said
    said = upload(client, selfies[2:5])["status"]
    assert said == "Not trained yet: your photos are ready. Press Train (2. Train).", said
    before = job.finished - 5
    os.utime(ws.selfies, (before, before))
    assert app.status_view("yara")[c["status"]].startswith(failed)
    for changed in (ws.person_settings, ws.samples_dir(app.run) / "manifest.json"):  # edited; a deletion in the review
        changed.parent.mkdir(parents=True, exist_ok=True)
        changed.write_text("{}")
        os.utime(changed, (job.finished + 5, job.finished + 5))
        said = app.status_view("yara")[c["status"]]
        assert said.startswith("Not trained yet: your photos are ready"), (changed, said)
        changed.unlink()


def test_done_holds_only_while_nothing_has_changed_since(server, tmp_path):
    """"Done: 1 new image" stayed on the status line until the next job (a walk): over a review an image was deleted
    from, photos added since (so Generate would train again first, unsaid) and a training running in a terminal (Train
    and Generate greyed, unsaid). It is said while it is what happened last; then the status line says what changed."""
    from tests.conftest import held_elsewhere
    from train.checkpoint import TRAIN_LOCK

    app, c = server.app, server.app.c
    ws = app.workspace("xena")
    everything_done(app.settings.config("xena"))  # trained (and generated) on today's photos and settings
    samples = ws.samples_dir(app.run)
    manifest = samples / "manifest.json"
    manifest.write_text(json.dumps({"user": "xena", "run": app.run, "images": [
        {"file": "linkedin-00.png", "style": "linkedin", "seed": 0, "prompt": "p", "prompt_2": "p", "negative_prompt": "n"}]}))
    made = f"from PIL import Image; Image.new('RGB', (8, 8)).save({str(samples / 'linkedin-00.png')!r})"
    job = app.jobs.submit("xena", "generate", [sys.executable, "-c", made], tmp_path / "x.log")  # a stand-in generation
    wait_until(lambda: not job.active, 30)
    assert app.status_view("xena")[c["status"]].startswith("**Done:** 1 new image. Your review holds 1 image")
    (ws.selfies / "02.jpg").write_bytes(b"another photo")
    said = app.status_view("xena")[c["status"]]
    assert "trained on other photos or settings** than you have now: Generate trains it again first" in said, said
    (ws.selfies / "02.jpg").unlink()
    with held_elsewhere(ws.run_dir(app.run) / TRAIN_LOCK):
        said = app.status_view("xena")[c["status"]]
    assert said.startswith("**Training, started in a terminal"), said
    os.utime(manifest, (job.finished + 5, job.finished + 5))  # rewritten since, as a deletion in the review rewrites it
    said = app.status_view("xena")[c["status"]]
    assert said.startswith("**Your adapter is trained**") and "Done" not in said, said


def test_a_preview_is_made_once_per_version_of_a_file_and_forgotten_with_the_data(tmp_path):
    import os

    from service import views

    photo = tmp_path / "linkedin-00.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(photo)
    first = views.data_uri(photo, 32)
    assert views.data_uri(photo, 32) is first  # drawn again: the same preview, not a new encoding
    Image.new("RGB", (64, 48), (30, 30, 200)).save(photo)  # the file changed: a new preview
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 1))
    assert views.data_uri(photo, 32) not in (first, None)
    assert views.data_uri(tmp_path / "gone.png", 32) is None
    views.forget_previews()
    assert views._previews.cache_info().currsize == 0


def test_failed_job_reports_the_cli_error_lines(tmp_path):
    script = "import sys; print('error: The photo set is gone.', file=sys.stderr); print('  -> Upload again.', file=sys.stderr); sys.exit(2)"
    job = run_alone([sys.executable, "-c", script], tmp_path / "a.log")
    assert (job.state, job.error, job.hint) == ("failed", "The photo set is gone.", "Upload again.")


def test_a_job_that_cannot_start_fails_and_the_next_one_runs(tmp_path):
    """A log folder that cannot be made (here a file stands in its way; a full disk fails the same way): that job fails
    with the reason, and the worker goes on to the next job instead of dying with it."""
    (tmp_path / "blocked").write_text("not a folder")
    queue = JobQueue([None])
    try:
        first = queue.submit("alice", "train", [sys.executable, "-c", "pass"], tmp_path / "blocked" / "a.log")
        second = queue.submit("bob", "train", [sys.executable, "-c", "pass"], tmp_path / "b.log")
        wait_until(lambda: not second.active, 20)
    finally:
        queue.close()
    assert (first.state, second.state) == ("failed", DONE)
    assert first.error.startswith("The train job could not start") and "press the button again" in first.hint


def test_the_downloads_of_an_app_that_was_killed_are_removed_by_the_next(tmp_path, monkeypatch):
    """A killed app leaves its download folder and Gradio's cached copies (served to anyone with the link) behind,
    past the person's "Delete my data" in the next app. The next app removes them; a running app's stay (it holds
    the lock beside its folder, as here)."""

    from gradio.processing_utils import hash_file
    from gradio.utils import get_upload_folder

    from service.app import DOWNLOADS_PREFIX, forget_abandoned_folders, held_app_folder, in_use

    # A system temporary folder of this test's own: in the shared one, an app started meanwhile by another test process
    # (make test runs several) would remove the "killed" app's folder first.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    alive, running = held_app_folder(DOWNLOADS_PREFIX)
    dead, dead_lock = held_app_folder(DOWNLOADS_PREFIX)
    dead_lock.release()  # as the operating system does when its app dies
    lost = in_use(Path(tempfile.gettempdir()) / f"{DOWNLOADS_PREFIX}0123")  # an app killed before it made its folder
    lost.touch()
    copies = []
    for root in (dead, alive):
        (root / "alice").mkdir()
        for export in range(2):  # the second export replaced the first one's files; Gradio still serves both
            crop = root / "alice" / "linkedin-400x400-linkedin-00.jpg"
            Image.frombytes("RGB", (8, 8), os.urandom(192)).save(crop)  # its own content, so its own cache folder
            copies.append(Path(get_upload_folder()) / hash_file(crop))
            copies[-1].mkdir(parents=True)
            shutil.copy(crop, copies[-1] / crop.name)
            with (root / SERVED).open("a") as listing:
                listing.write(f"{copies[-1].name}\n")
    try:
        assert forget_abandoned_folders() == [dead]
        assert not dead.exists() and not any(copy.exists() for copy in copies[:2])
        assert not in_use(dead).exists() and not lost.exists()
        assert alive.is_dir() and all(copy.is_dir() for copy in copies[2:]) and in_use(alive).exists()
    finally:
        running.release()
        for path in (alive, *copies):
            shutil.rmtree(path, ignore_errors=True)


def test_an_app_starting_while_another_makes_its_download_folder_leaves_it_be(tmp_path, monkeypatch):
    """Two apps on one machine: the second starts (and removes abandoned download folders) at the moment the first
    makes its own. The first app's folder must survive, or its person's downloads fail."""

    import service.app as app_module
    from service.app import DOWNLOADS_PREFIX, forget_abandoned_folders, held_app_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    removed_meanwhile = []

    class AnotherAppStartsMeanwhile(app_module.FileLock):
        def acquire(self, *args, **kwargs):  # first the other app's sweep, then this lock
            if not removed_meanwhile:
                removed_meanwhile.append(None)
                removed_meanwhile.extend(forget_abandoned_folders())
            return super().acquire(*args, **kwargs)

    monkeypatch.setattr(app_module, "FileLock", AnotherAppStartsMeanwhile)
    root, lock = held_app_folder(DOWNLOADS_PREFIX)
    try:
        assert removed_meanwhile == [None] and root.is_dir()
        assert forget_abandoned_folders() == [] and root.is_dir()  # ... and while it runs
    finally:
        lock.release()


@contextmanager
def app_process(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m service.app` as a person starts it, on a free port, over `tmp_path`'s data: the process and its URL
    once it serves; killed after, if still running."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = subprocess.Popen([sys.executable, "-m", "service.app", "--profile", "tiny", "--port", str(port),
                            f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = next((line for line in iter(app.stdout.readline, "") if line.startswith("headshots app: http")), None)
        assert started, "the app did not start"
        yield app, started.split()[2]
    finally:
        app.kill()
        app.wait()


def test_an_app_keeps_uploads_in_a_folder_of_its_own_which_goes_with_it(tmp_path, face_weights, selfies):
    """Gradio's default upload folder, the system temporary folder's `gradio`, is shared by every Gradio app on the
    machine (another login's made it first: this app could not write there; two apps of one login handed each other's
    uploads away). Started by `main`, the app has a private folder of its own, removed when it closes; a killed app's
    (the selfies uploaded to it) is removed by the next app to start. `kill` or a service manager stops the app with
    SIGTERM: it closes as on Ctrl-C (its jobs ended, its folders removed), not where it stands, which left a training
    running for the next app to meet."""
    import signal
    import stat

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"} | {"TMPDIR": str(system_tmp)}
    with app_process(tmp_path, env) as (killed, url):
        uploaded = httpx.post(url + "gradio_api/upload", files={"files": (selfies[0].name, selfies[0].read_bytes())}).json()
        [folder] = [path for path in system_tmp.glob("headshots-gradio-*") if path.is_dir()]  # and its lock beside it
        assert Path(uploaded[0]).parent.parent == folder and Path(uploaded[0]).is_file()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and not (system_tmp / "gradio").exists()
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert Path(uploaded[0]).is_file()  # left behind, with the selfie
    with app_process(tmp_path, env) as (app, _):
        assert not folder.exists()
        [own] = [path for path in system_tmp.glob("headshots-gradio-*") if path.is_dir()]
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 0  # closed by its own `finally`, not killed by the signal (-15)
    assert not own.exists() and not list(system_tmp.glob("headshots-gradio-*"))


def test_an_app_that_cannot_make_its_folder_says_why_and_what_to_do(tmp_path, monkeypatch, capsys):
    """The app's own folder for uploads (`own_gradio_folder`) cannot be made where the system's temporary folder is
    not a folder (here a file, as a mistyped TMPDIR can name one): the reason and what to do, not a traceback."""

    from tests.app_server import free_port

    not_a_folder = tmp_path / "tmp"
    not_a_folder.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    assert main(["--profile", "tiny", "--port", str(free_port()), f"paths.data_root={tmp_path / 'data'}"]) == 2
    said = capsys.readouterr().err
    assert "Could not make the app's folder for uploads" in said and "Point TMPDIR at a folder" in said, said


def test_a_second_ctrl_c_or_kill_does_not_cut_the_closing_short(tmp_path, monkeypatch, face_weights):
    """Ctrl-C, then Ctrl-C and `kill` again while the app closes (it ends its jobs, up to seconds each): the second one
    cut the close short, leaving jobs running and Gradio's copies of the headshots it served on disk."""
    import signal

    from service import app as app_module

    closed: list[str] = []

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    def pressed_again_while_closing(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # where a second KeyboardInterrupt or SystemExit landed
        closed.append("closed")

    terminate = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(app_module.HeadshotsApp, "launch", interrupted)
    monkeypatch.setattr(app_module.HeadshotsApp, "close", pressed_again_while_closing)
    try:
        assert app_module.main(["--profile", "tiny", f"paths.data_root={tmp_path / 'data'}",
                                f"paths.outputs_root={tmp_path / 'outputs'}"]) == 0
    except (KeyboardInterrupt, SystemExit) as exc:
        pytest.fail(f"the second signal cut the close short: {exc!r}")
    finally:
        signal.signal(signal.SIGTERM, terminate)  # main's own handler, set for the app's life
    assert closed == ["closed"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again afterwards


def test_jobs_run_where_the_app_runs(tmp_path, monkeypatch):
    """An app started outside the project folder: its config's relative paths (data/users, outputs) must name
    the same folders for its jobs, and the job's module must still be found."""
    monkeypatch.chdir(tmp_path)
    script = "import os, service.jobs; open('where.txt', 'w').write(os.getcwd())"
    job = run_alone([sys.executable, "-c", script], tmp_path / "a.log")
    assert job.state == DONE, (tmp_path / "a.log").read_text()
    assert (tmp_path / "where.txt").read_text() == str(tmp_path)


def test_phone_and_browser_formats_are_accepted(server, selfies, tmp_path):
    """PNG with transparency, WebP, and an iPhone's HEIC (through pillow-heif): stored, checked, previewed."""
    client, _ = session(server, "gina")
    image = Image.open(selfies[2])
    image.convert("RGBA").save(tmp_path / "a.png")
    image.save(tmp_path / "b.webp", "WEBP")
    Image.open(selfies[4]).save(tmp_path / "c.heic", format="HEIF")
    result = upload(client, [tmp_path / "a.png", tmp_path / "b.webp", tmp_path / "c.heic"])
    assert all(f"- added **{name}**" in result["notes"] for name in ("a.png", "b.webp", "c.heic")), result["notes"]
    assert result["photos"].count("<div class='hs-photo ") == 3 and "(no preview)" not in result["photos"]
    assert "data-file='c.heic'" in result["photos"] and "data:image/jpeg;base64," in result["photos"]


def test_the_page_shows_the_photos_judged_with_this_apps_settings(server, selfies):
    """`make demo` or a batch judged the photos with other settings (here: 10 photos needed): the page judges them
    again with the app's own when it opens, and records the usable set, so Train starts from prepare."""
    from dataclasses import replace

    from headshots.stages import stages_to_run
    from train.intake import run_intake

    app = server.app
    ws = app.workspace("uma")
    copy_photos(selfies[:5], ws.selfies)
    cfg = app.settings.config("uma")
    run_intake(replace(cfg, intake=replace(cfg.intake, min_photos=10)), app.analyzer)
    assert json.loads(ws.intake_report.read_text())["set"]["verdict"] == "reject"
    shown = app.page("uma")
    assert json.loads(ws.intake_report.read_text())["set"]["verdict"] != "reject"
    assert "need at least 10" not in shown[app.c["photos"]] and shown[app.c["train"]]["interactive"]
    assert stages_to_run(cfg)[0] == "prepare"  # intake is recorded: the Train job does not judge the photos again


def test_a_trained_person_whose_photos_changed_is_told_before_generating(server):
    """Photos or settings changed since training and intake refuses the set: a Generate job would stop at intake,
    so the status line says so and Generate waits, though the adapter is there. With a usable set, a Generate job
    would train again first: the status line says that (a person saw only "Generating" while it trained)."""
    app = server.app
    ws = app.workspace("vic")
    everything_done(app.settings.config("vic"))  # trained (and generated) on today's photos and settings
    ws.intake_report.write_text(json.dumps({"set": {"verdict": "reject", "reason": "only 1 usable photo (need at least 5)"}}))
    shown = app.status_view("vic")
    assert "not usable now: only 1 usable photo (need at least 5). Train and" in shown[app.c["status"]]
    assert not shown[app.c["generate"]]["interactive"] and not shown[app.c["train"]]["interactive"]
    ws.intake_report.write_text(json.dumps({"set": {"verdict": "warn", "reason": "5 usable photos"}}))
    assert app.status_view("vic")[app.c["generate"]]["interactive"]
    ws.prepare_report.write_text(json.dumps({"kept": 5, "rejected": 2, "photos": []}))  # what training used, said
    assert "trained** on 5 of your 7 photos (those rejected in 1. Photos were left out)" in app.status_view("vic")[app.c["status"]]
    (ws.selfies / "02.jpg").write_bytes(b"another photo")  # added since: Generate would train again first, said before
    shown = app.status_view("vic")
    assert "trained on other photos or settings** than you have now: Generate trains it again first" in shown[app.c["status"]]
    assert shown[app.c["generate"]]["interactive"] and shown[app.c["train"]]["interactive"]
    # The same photos, judged since with other intake settings (a batch's): the job checks and prepares them again, and
    # trains only if that changes the prepared photos; "trains it again" was said, and the job left the adapter as it was
    (ws.selfies / "02.jpg").unlink()
    ws.prepare_report.write_text(json.dumps({"kept": 1, "rejected": 0, "photos": [{"file": "01.jpg", "kept": True}]}))
    for stage in ("intake", "prepare"):  # as the batch recorded them
        record = ws.user_stage_records / f"{stage}.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "fingerprint": "with a batch's settings"}))
    shown = app.status_view("vic")[app.c["status"]]
    assert "trained** on 1 of your 1 photo. Settings that check or prepare your photos changed since" in shown, shown
    assert "trains again only if that changes the prepared photos" in shown
