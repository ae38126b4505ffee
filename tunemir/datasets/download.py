"""Parallel, resumable, checksum-verified downloads of registry assets.

A file is fetched into `<name>.part` next to its final name and renamed only once its
checksum matches, so a final name always holds a verified file. An interrupted transfer
(dropped connection, killed process) keeps its `.part`; the next attempt asks the server
for the rest with an HTTP Range request. A file already in place is re-hashed; a wrong one
is deleted and fetched again.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from tunemir import __version__
from tunemir.datasets.assets import Asset, candidate_urls
from tunemir.fileio import file_digest

log = logging.getLogger(__name__)
CHUNK = 1 << 20
#: Attempts per URL for transient failures (timeouts, dropped connections); each resumes.
ATTEMPTS = 3
TIMEOUT_S = 60.0


@dataclasses.dataclass
class Outcome:
    """What happened to one asset: `status` is "verified" (already there and correct),
    "downloaded" or "failed"; `detail` says why a download failed, URL by URL."""

    asset: Asset
    status: str
    detail: str = ""
    url: str = ""
    bytes: int = 0


@dataclasses.dataclass
class DownloadSummary:
    outcomes: list[Outcome]
    seconds: float

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when every required asset is verified (optional ones may have failed)."""
        return not any(not o.asset.optional for o in self.failed)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


class _Progress:
    """One tqdm bar counting bytes across threads, with files done in its postfix."""

    def __init__(self, files: int, enabled: bool):
        self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
                        desc="download", dynamic_ncols=True)
        self.files, self.done, self.lock = files, 0, threading.Lock()
        self._postfix()

    def add_total(self, n: int) -> None:
        with self.lock:
            self.bar.total += n
            self.bar.refresh()

    def update(self, n: int) -> None:
        with self.lock:
            self.bar.update(n)

    def file_done(self) -> None:
        with self.lock:
            self.done += 1
            self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"files {self.done}/{self.files}")

    def close(self) -> None:
        self.bar.close()


class _Retry(Exception):
    """A transient failure: try the same URL again (resuming)."""


class _WriteError(Exception):
    """The local file cannot be written: no URL will do better."""


def _part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def _stream(url: str, part: Path, progress: _Progress) -> None:
    """Append the rest of `url` to `part` (whole file if the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"tunemir/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part is complete (or wrong)
            return
        if err.code in (408, 429) or err.code >= 500:
            raise _Retry(f"HTTP {err.code} {err.reason}") from None
        raise
    except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ConnectionRefusedError) or "Name or service not known" in str(reason):
            raise  # the host is down or unknown: retrying will not help
        raise _Retry(str(reason)) from None
    with response:
        if offset and response.status == 206:
            mode = "ab"
            if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                part.unlink()  # an unexpected range: start over
                raise _Retry(f"server answered range {response.headers.get('Content-Range')!r}")
        else:
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        if length is not None:
            progress.add_total(int(length))
        received = 0
        with open(part, mode, buffering=0) as handle:  # unbuffered: a full disk shows at write, not at close
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, socket.timeout, ConnectionError, OSError) as err:
                    raise _Retry(f"connection lost after {offset + received} bytes ({type(err).__name__})") from None
                if not block:
                    break
                _write_all(handle, block, part)
                received += len(block)
                progress.update(len(block))
        if length is not None and received < int(length):
            raise _Retry(f"connection closed after {offset + received} of {offset + int(length)} bytes")


def _write_all(handle, block: bytes, part: Path) -> None:
    view = memoryview(block)
    try:
        while view:
            view = view[handle.write(view):]
    except OSError as err:  # a full disk is no network fault: neither a retry nor another URL helps
        raise _WriteError(f"cannot write {part} ({err.strerror or err}); free some space there or pass "
                          "another --cache-dir (the part written so far is kept and resumed)") from None


def fetch(a: Asset, root: Path, urls: list[str], progress: _Progress | None = None) -> Outcome:
    """Make `root/a.path` a verified copy of `a`, downloading it if needed."""
    progress = progress or _Progress(1, enabled=False)
    final = root / a.path
    if final.exists():
        if file_digest(final, a.algorithm) == a.checksum:
            return Outcome(a, "verified", bytes=final.stat().st_size)
        log.warning("%s: checksum does not match %s; deleting it and downloading again", final, a.checksum)
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(final)
    reasons: list[str] = []
    try:
        return _fetch_part(a, final, part, urls, progress, reasons)
    except _WriteError as err:
        return Outcome(a, "failed", detail=str(err))


def _fetch_part(a: Asset, final: Path, part: Path, urls: list[str], progress: _Progress,
                reasons: list[str]) -> Outcome:
    for url in urls:
        resumed = part.exists()
        while _transfer(a, url, part, progress, reasons):
            digest = file_digest(part, a.algorithm)
            if digest == a.checksum:
                os.replace(part, final)
                return Outcome(a, "downloaded", url=url, bytes=final.stat().st_size)
            part.unlink()
            reasons.append(f"{url}: {a.algorithm} {digest} does not match {a.checksum}")
            if not resumed:
                break
            resumed = False  # the kept part may have been the bad bit: once more from scratch
    return Outcome(a, "failed", detail="; ".join(reasons) or "no URL to try")


def _transfer(a: Asset, url: str, part: Path, progress: _Progress, reasons: list[str]) -> bool:
    """Complete `part` from `url`, retrying transient failures; False when the URL is unusable."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _stream(url, part, progress)
            return True
        except _Retry as err:
            reasons.append(f"{url}: {err}")
            if attempt < ATTEMPTS:
                log.info("%s: %s; resuming (attempt %d of %d)", a.tag, err, attempt + 1, ATTEMPTS)
                time.sleep(0.2 * attempt)
        except (urllib.error.URLError, OSError, ValueError) as err:
            why = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
            reasons.append(f"{url}: {why}")
            return False
    return False


def download_assets(assets: list[Asset] | tuple[Asset, ...], root: Path, jobs: int = 4,
                    overrides: dict[str, str] | None = None, mirror: str | None = None,
                    progress: bool = True) -> DownloadSummary:
    """Fetch and verify `assets` under `root` with `jobs` parallel transfers.

    One asset's failure never stops the others; the summary lists every outcome.
    """
    start = time.perf_counter()
    bar = _Progress(len(assets), enabled=progress)
    outcomes = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(fetch, a, root, candidate_urls(a, overrides, mirror), bar): a for a in assets}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as err:  # noqa: BLE001 - one asset's bug must not lose the others
                outcome = Outcome(futures[future], "failed", detail=f"{type(err).__name__}: {err}")
            outcomes.append(outcome)
            bar.file_done()
            if outcome.status == "failed":
                log.error("%s failed: %s", outcome.asset.tag, outcome.detail)
            else:
                log.debug("%s %s (%d bytes)", outcome.asset.tag, outcome.status, outcome.bytes)
    bar.close()
    outcomes.sort(key=lambda o: o.asset.path)
    return DownloadSummary(outcomes, time.perf_counter() - start)
