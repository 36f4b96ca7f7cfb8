"""The web page in a real browser: Debian's Chromium driven by Playwright, with Chromium's fake camera
showing a drawn selfie, against `facesearch up --demo-pack` (what `make up FACESEARCH_UP_ARGS=--demo-pack`
runs: embedder, search service, embedded PostgreSQL and the web gateway, each its own process).

Skipped, saying why, when no Chromium is installed (`apt-get install chromium`; .ci/run does it).
Screenshots of every page go to $FACESEARCH_ARTEFACTS (default: test-artefacts/) under browser/.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest

from facesearch.v1 import search_pb2_grpc
from tests.faces import FaceSpec, blank_photo, make_photo, render, selfie_face
from tests.fixtures.web import REPO_ROOT, MetadataRecorder, free_port, web_gateway_running

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev dependency")

ME = 3  # the identity the fake camera shows
SELFIE_SIZE = (640, 480)
ARTEFACTS = Path(os.environ.get("FACESEARCH_ARTEFACTS", REPO_ROOT / "test-artefacts")) / "browser"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("FACESEARCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


NO_CHROMIUM = "no Chromium on PATH (apt-get install -y chromium, or set FACESEARCH_CHROMIUM)"


def needs_chromium(test: Any) -> Any:
    """Skips, saying why, where no Chromium is installed; in CI (.ci/run installs it) that is a failure."""
    if chromium_path() is not None or os.environ.get("CI"):
        return test
    return pytest.mark.skip(reason=f"SKIPPED browser test: {NO_CHROMIUM}")(test)


@dataclass
class EventPhoto:
    path: str  # relative to the event folder: the photo's external id
    faces: list[FaceSpec]
    size: tuple[int, int] = (800, 600)
    fmt: str = "jpg"


# The event: ME in five photos (alone, in groups, in a subfolder, as WebP), others without ME, a
# photo with no face, one whose only other face is too small for the quality gates, a corrupt file
# and a file that is not an image.
EVENT = [
    EventPhoto("me-alone.jpg", [FaceSpec(400, 280, 110, ME)]),
    EventPhoto("group-1.jpg", [FaceSpec(150, 200, 70, ME), FaceSpec(420, 330, 80, 8), FaceSpec(660, 160, 60, 9)]),
    EventPhoto("group-2.jpg", [FaceSpec(230, 300, 90, 10), FaceSpec(580, 260, 75, ME)]),
    EventPhoto("day-2/me-again.png", [FaceSpec(520, 300, 95, ME), FaceSpec(180, 220, 55, 11)], fmt="png"),
    EventPhoto("day-2/me-small.webp", [FaceSpec(300, 240, 50, ME)], size=(640, 480), fmt="webp"),
    EventPhoto("others-1.jpg", [FaceSpec(220, 260, 85, 8), FaceSpec(560, 300, 90, 9)]),
    EventPhoto("others-2.jpg", [FaceSpec(400, 300, 100, 12), FaceSpec(700, 80, 12, 13)]),
    EventPhoto("day-2/landscape.png", [], fmt="png"),
]
MINE = {p.path for p in EVENT if any(f.identity == ME for f in p.faces)}
REJECTED = 1  # the radius-12 face of others-2.jpg fails the minimum face size gate
BROKEN = "broken.jpg"
NOT_AN_IMAGE = "notes.txt"


def write_event(folder: Path) -> None:
    for index, photo in enumerate(EVENT):
        target = folder / photo.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(make_photo(photo.faces, photo.size, photo.fmt, seed=index))
    (folder / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / NOT_AN_IMAGE).write_text("not a photo")


def write_y4m(path: Path, bgr: np.ndarray, frames: int = 2) -> None:
    """A YUV4MPEG2 (4:2:0) video of one still image: what --use-file-for-fake-video-capture plays."""
    height, width = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + i420)


@contextmanager
def facesearch_up(tmp_path: Path) -> Iterator[str]:
    """`facesearch up --demo-pack` on free ports with its data under tmp_path; yields the page's URL
    as the banner prints it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEARCH_", "EMBEDDER_", "FACESEARCH_WEB_"))}
    env.update(
        EMBEDDER_GRPC_PORT=str(free_port()),
        EMBEDDER_METRICS_PORT=str(free_port()),
        SEARCH_GRPC_PORT=str(free_port()),
        SEARCH_METRICS_PORT=str(free_port()),
        SEARCH_DATA_DIR=str(tmp_path / "data" / "pgdata"),
        FACESEARCH_WEB_PORT=str(free_port()),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "facesearch.cli", "up", "--demo-pack", "--ready-timeout", "240"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner, deadline = "", time.monotonic() + 300
        while "Press Ctrl-C to stop." not in banner and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            banner += line
        found = re.search(r"web page\s+(http://localhost:\d+)", banner)
        assert found, f"facesearch up printed no web page:\n{banner}"
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


async def screenshot(page: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


async def rect(locator: Any) -> dict[str, float]:
    box = await locator.bounding_box()
    assert box is not None, "element is not displayed"
    return box


async def wait_images_loaded(page: Any, selector: str) -> None:
    await page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth > 0)", arg=selector
    )


@needs_chromium
async def test_upload_an_event_and_find_me_with_the_camera(tmp_path: Path) -> None:
    executable = chromium_path()
    assert executable is not None, f"CI runs the browser test, and there is {NO_CHROMIUM}"
    event_dir = tmp_path / "event"
    write_event(event_dir)
    selfie_file = tmp_path / "selfie.y4m"
    write_y4m(selfie_file, render([selfie_face(ME, SELFIE_SIZE)], SELFIE_SIZE, seed=99))
    (tmp_path / "no-face.png").write_bytes(blank_photo())
    (tmp_path / "other-person.jpg").write_bytes(make_photo([FaceSpec(320, 240, 120, 21)]))
    (tmp_path / "me-profile.jpg").write_bytes(make_photo([FaceSpec(300, 260, 130, ME)], seed=7))
    event = f"party-{uuid.uuid4().hex[:8]}"

    with facesearch_up(tmp_path) as url:
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable,
                args=[
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-video-capture={selfie_file}",
                ],
            )
            try:
                context = await browser.new_context(viewport={"width": 1200, "height": 900})
                await context.grant_permissions(["camera"], origin=url)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                await run_the_event_job(page, url, event, event_dir, tmp_path)
            finally:
                await browser.close()


async def run_the_event_job(page: Any, url: str, event: str, event_dir: Path, tmp_path: Path) -> None:
    expect = playwright_api.expect

    # Events: create the event; it is listed with its counts.
    await page.goto(f"{url}/#events")
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, video')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
            .map(e => e.id || e.outerHTML)"""
    )
    assert unlabelled == [], f"controls without a label: {unlabelled}"
    await page.get_by_label("Name", exact=True).fill(event)
    await page.get_by_label("Display name (optional)").fill("Summer party")
    await page.get_by_role("button", name="Create event").click()
    row = page.locator(f'#events-table tr[data-name="{event}"]')
    await expect(row).to_contain_text("Summer party")
    await expect(page.locator("#events-status")).to_have_text(f"Created event {event}.")

    # Upload: the whole folder, in batches; the summary counts what the service did.
    await page.get_by_role("link", name="Upload").click()
    await expect(page.locator("#collection")).to_have_value(event)
    await page.set_input_files("#upload-folder", str(event_dir))
    await expect(page.locator("#upload-summary")).to_have_attribute("data-done", "true", timeout=180_000)
    faces_stored = sum(1 for p in EVENT for f in p.faces if f.radius >= 16)
    await expect(page.locator("#sum-photos")).to_have_text(str(len(EVENT)))
    await expect(page.locator("#sum-faces")).to_have_text(str(faces_stored))
    await expect(page.locator("#sum-rejected")).to_have_text(str(REJECTED))
    await expect(page.locator("#sum-noface")).to_have_text("1")
    await expect(page.locator("#sum-errors")).to_have_text("2")
    errors = page.locator("#upload-errors li")
    await expect(errors.filter(has_text=BROKEN)).to_contain_text("not an image in a supported format")
    await expect(errors.filter(has_text=NOT_AN_IMAGE)).to_contain_text("not a JPEG, PNG, WebP or BMP file")
    batches = page.locator("#batches li")
    assert await batches.count() == 2  # 9 image files in batches of 6
    for index in range(2):
        await expect(batches.nth(index)).to_contain_text("done")
    await screenshot(page, "2-upload")

    # Dropping files on the drop zone uploads them too (the same photo again: stored, unchanged).
    dropped = await page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
            return transfer;
        }""",
        ["me-alone.jpg", base64.b64encode((event_dir / "me-alone.jpg").read_bytes()).decode()],
    )
    await page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": dropped})
    await expect(batches).to_have_count(1)
    await expect(batches.first).to_contain_text("done")
    await expect(page.locator("#sum-photos")).to_have_text("1")
    await expect(page.locator("#sum-errors")).to_have_text("0")

    await page.get_by_role("link", name="Events").click()
    await expect(row.locator("td").nth(1)).to_have_text(str(len(EVENT)))
    await expect(row.locator("td").nth(2)).to_have_text(str(faces_stored))
    await screenshot(page, "1-events")

    # Find me: the fake camera shows ME's selfie; a page of 4, then "Load more".
    await page.get_by_role("link", name="Find me").click()
    await page.get_by_label("Photos per page").select_option("4")
    await page.get_by_role("button", name="Start camera").click()
    snap = page.get_by_role("button", name="Take selfie")
    await expect(snap).to_be_enabled()
    await snap.click()
    tiles = page.locator("#results li.tile")
    await expect(tiles).to_have_count(4)
    await expect(page.locator("#selfie .box")).to_have_count(1)
    await page.get_by_role("button", name="Load more").click()
    await expect(tiles).to_have_count(len(MINE))
    await expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    shown = [await t.get_attribute("data-photo-id") for t in await tiles.all()]
    assert set(shown) == MINE, f"the grid shows {shown}, the event has ME in {sorted(MINE)}"
    similarities = [float(await t.get_attribute("data-similarity") or "nan") for t in await tiles.all()]
    assert similarities == sorted(similarities, reverse=True), "best first"
    await expect(page.locator("#find-status")).to_have_text(f"{len(MINE)} photos of you, best first.")

    # Each tile's box sits where ME's face was drawn (measured on screen, mapped to photo pixels).
    await wait_images_loaded(page, "#results img")
    by_path = {p.path: p for p in EVENT}
    for tile in await tiles.all():
        photo = by_path[await tile.get_attribute("data-photo-id") or ""]
        mine = next(f for f in photo.faces if f.identity == ME)
        image, box = await rect(tile.locator("img")), await rect(tile.locator(".box"))
        scale = photo.size[0] / image["width"]
        drawn = np.array(
            [
                (box["x"] - image["x"]) * scale,
                (box["y"] - image["y"]) * scale,
                (box["x"] + box["width"] - image["x"]) * scale,
                (box["y"] + box["height"] - image["y"]) * scale,
            ]
        )
        # Within a fifth of the radius, plus the rounding of a thumbnail a few times smaller.
        assert np.abs(drawn - mine.box).max() < 0.2 * mine.radius + 2 * scale, (photo.path, drawn, mine.box)
    await screenshot(page, "3-find-me")

    # Clicking a photo shows it large with every face boxed, ME's solid.
    group = page.locator('#results li.tile[data-photo-id="group-1.jpg"] button')
    await group.click()
    viewer = page.locator("#viewer")
    await expect(viewer).to_be_visible()
    await expect(viewer.locator("#viewer-status")).to_have_text("3 faces in this photo; yours is the solid box.")
    await expect(viewer.locator(".box")).to_have_count(3)
    await expect(viewer.locator(".box:not(.other)")).to_have_count(1)
    await wait_images_loaded(page, "#viewer img")
    image, box = await rect(viewer.locator("img")), await rect(viewer.locator(".box:not(.other)"))
    scale = by_path["group-1.jpg"].size[0] / image["width"]
    centre = ((box["x"] - image["x"] + box["width"] / 2) * scale, (box["y"] - image["y"] + box["height"] / 2) * scale)
    me_there = by_path["group-1.jpg"].faces[0]
    assert abs(centre[0] - me_there.cx) < 0.2 * me_there.radius and abs(centre[1] - me_there.cy) < 0.2 * me_there.radius
    await screenshot(page, "4-photo")
    await page.get_by_role("button", name="Close").click()

    # The similarity slider: at its top nothing is that similar (two renders never embed identically).
    assert max(similarities) < 1.0
    await page.locator("#min-similarity").fill("1")
    await expect(page.locator("#find-status")).to_have_text(
        "No photos of you at this similarity. Try lowering the minimum similarity."
    )
    await expect(tiles).to_have_count(0)
    await page.locator("#min-similarity").fill("0.4")
    await expect(tiles).to_have_count(4)

    # Errors in plain words: a selfie without a face.
    await page.set_input_files("#find-file", str(tmp_path / "no-face.png"))
    await expect(page.locator("#error")).to_have_text("No face found in the picture: no face detected in image 0.")
    await screenshot(page, "5-find-me-error")

    # People: enrol ME from the camera plus a file; identify from the camera; verify someone else.
    await page.get_by_role("link", name="People").click()
    await expect(page.locator("#error")).to_be_hidden()
    await page.get_by_role("button", name="Start camera").click()
    await expect(page.get_by_role("button", name="Add camera photo")).to_be_enabled()
    await page.get_by_label("Person id").first.fill("me")
    await page.get_by_role("button", name="Add camera photo").click()
    await page.set_input_files("#enrol-files", str(tmp_path / "me-profile.jpg"))
    await page.get_by_role("button", name="Enrol", exact=True).click()
    await expect(page.locator("#enrol-result")).to_contain_text("Enrolled me.")
    await expect(page.locator("#enrol-shots .badge")).to_have_count(1)
    await expect(page.locator("#enrol-shots .box")).to_have_count(2)
    await page.get_by_role("button", name="Identify from camera").click()
    await expect(page.locator("#identify-result")).to_contain_text("This is me.")
    await page.locator("#verify-id").fill("me")
    await page.set_input_files("#verify-file", str(tmp_path / "other-person.jpg"))
    await page.get_by_role("button", name="Verify photo").click()
    await expect(page.locator("#verify-result")).to_contain_text("No match")
    await page.locator("#verify-id").fill("nobody")
    await page.get_by_role("button", name="Verify from camera").click()
    await expect(page.locator("#error")).to_contain_text("nobody")
    await screenshot(page, "6-people")

    # A phone-sized screen: the grid still shows every match.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("link", name="Find me").click()
    await page.get_by_label("Photos per page").select_option("12")
    await page.get_by_role("button", name="Take selfie").click()
    await expect(tiles).to_have_count(len(MINE))
    await expect(page.locator("#error")).to_be_hidden()
    await wait_images_loaded(page, "#results img")
    widths = {round((await rect(tile))["width"]) for tile in await tiles.all()}
    assert len(widths) == 1 and widths.pop() < 390 / 2, "two even columns on a phone"
    await screenshot(page, "7-phone")

    # Deleting the event from the Events page removes it and the photos the gateway kept.
    await page.get_by_role("link", name="Events").click()
    await page.get_by_role("button", name=f"Delete {event}").click()
    await expect(page.locator("#events-status")).to_contain_text(f"Deleted {event}: {len(EVENT)} photos")
    await expect(row).to_have_count(0)


@needs_chromium
async def test_the_api_key_entered_on_the_page_reaches_the_service(tmp_path: Path) -> None:
    """The key typed into the page goes to the search service as `authorization: Bearer`; a refused
    key is said in plain words and the key field opens again."""
    executable = chromium_path()
    assert executable is not None, f"CI runs the browser test, and there is {NO_CHROMIUM}"
    recorder = MetadataRecorder()
    server = grpc.aio.server()
    search_pb2_grpc.add_FaceSearchServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    expect = playwright_api.expect
    try:
        with web_gateway_running(f"127.0.0.1:{port}", tmp_path / "web") as web:
            async with playwright_api.async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=executable)
                try:
                    page = await browser.new_page()
                    page.set_default_timeout(60_000)
                    await page.goto(f"{web.url}/#events")
                    await expect(page.locator("#events-table tbody")).to_contain_text("No events yet")
                    await page.get_by_text("API key", exact=True).click()
                    await page.get_by_label("API key").fill("team-key")
                    await page.get_by_role("button", name="Save key").click()
                    await expect(page.locator("details.key")).not_to_have_attribute("open", "")
                    for _ in range(600):  # the page lists the events again, with the key
                        if any(seen.get("authorization") == "Bearer team-key" for seen in recorder.seen):
                            break
                        await asyncio.sleep(0.1)
                    await page.get_by_text("API key", exact=True).click()
                    await page.get_by_label("API key").fill("revoked")
                    await page.get_by_role("button", name="Save key").click()
                    await expect(page.locator("#error")).to_have_text(
                        "The API key is missing or was not accepted. (API key revoked)"
                    )
                    await expect(page.locator("details.key")).to_have_attribute("open", "")
                    await expect(page.get_by_label("API key")).to_be_focused()
                    await screenshot(page, "8-api-key-refused")
                finally:
                    await browser.close()
    finally:
        await server.stop(0)
    keys = [seen.get("authorization") for seen in recorder.seen]
    assert keys[0] is None, "no key until one is entered"
    assert "Bearer team-key" in keys and keys[-1] == "Bearer revoked"
