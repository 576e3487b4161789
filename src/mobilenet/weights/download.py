"""Download, verify and cache pretrained weights; build pretrained models from them.

A download goes to ``NAME.part`` in the cache folder and is resumed with an HTTP ``Range`` request when it was cut
(within the same call, up to ``attempts`` times, and in a later call). The file is checked against its SHA-256 (or
the published prefix of it) before it is renamed into place, so a file under its final name is always a verified
one; a file that fails the check is deleted. A cached file that still verifies is used without any network access.

The cache folder is ``$MOBILENET_HOME/weights``, by default ``~/.cache/mobilenet/weights``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from mobilenet.errors import MobilenetError
from mobilenet.models.builder import MobileNet
from mobilenet.models.registry import _ALIASES, parse_name

DEFAULT_HOME = "~/.cache/mobilenet"
_CHUNK = 1 << 16
_CHECKSUM = re.compile(r"^[0-9a-f]{8,64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(\d+|\*)$")
# Pretrained weights fix these options: a different value would load the weights into another function.
_FIXED_BY_WEIGHTS = frozenset({"width_multiplier", "alpha", "padding", "bn_eps", "in_chans"})


class _Interrupted(Exception):
    """The transfer stopped early; what arrived is kept in the .part file."""


def default_cache_dir() -> Path:
    """Where downloaded weights live: ``$MOBILENET_HOME/weights`` (default ``~/.cache/mobilenet/weights``)."""
    home = os.environ.get("MOBILENET_HOME") or DEFAULT_HOME
    return Path(home).expanduser() / "weights"


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_checksum(value: str | None, allow_unverified: bool, url: str) -> str | None:
    if value is None:
        if not allow_unverified:
            raise MobilenetError(
                f"no checksum is known for {url}; pass its SHA-256 (or allow_unverified=True to trust the transfer)"
            )
        return None
    text = value.strip().lower()
    if not _CHECKSUM.match(text):
        raise MobilenetError(
            f"checksum {value!r} is not a SHA-256 hex digest or a prefix of at least 8 hex digits of one"
        )
    return text


def _name_from_url(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise MobilenetError(f"cannot name a cache file after {url!r}; pass filename=")
    return name


def download(
    url: str,
    sha256_or_prefix: str | None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    filename: str | None = None,
    allow_unverified: bool = False,
    attempts: int = 3,
    timeout: float = 60.0,
    progress: bool | None = None,
) -> Path:
    """The verified file at ``url``, from the cache or downloaded (resuming a partial download) into it.

    ``sha256_or_prefix`` is the file's SHA-256, or the published prefix of it (torchvision's file names carry 8 hex
    digits); a mismatch deletes the downloaded file and raises :class:`MobilenetError`.
    """
    expected = _expected_checksum(sha256_or_prefix, allow_unverified, url)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (filename or _name_from_url(url))
    if target.is_file():
        if expected is None or sha256_of(target).startswith(expected):
            return target
        target.unlink()  # a cached file that no longer verifies is fetched again
    part = target.with_name(target.name + ".part")
    _transfer(url, part, max(1, attempts), timeout, progress)
    actual = sha256_of(part)
    if expected is not None and not actual.startswith(expected):
        part.unlink(missing_ok=True)
        raise MobilenetError(
            f"{url}: checksum mismatch (expected sha256 {expected}{'...' if len(expected) < 64 else ''}, got "
            f"{actual}); the download was deleted: try again, and if it persists the file has changed upstream"
        )
    os.replace(part, target)
    return target


def _transfer(url: str, part: Path, attempts: int, timeout: float, progress: bool | None) -> None:
    problem = ""
    for _ in range(attempts):
        try:
            _fetch(url, part, timeout, progress)
            return
        except _Interrupted as exc:
            problem = str(exc)
    kept = part.stat().st_size if part.exists() else 0
    raise MobilenetError(
        f"{url}: download failed {attempts} time(s) ({problem}); {kept} bytes are kept in {part} and the next "
        "try resumes from there"
    )


def _fetch(url: str, part: Path, timeout: float, progress: bool | None) -> None:
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "mobilenet-weights-downloader"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return  # nothing left to send: the .part is whole, and the checksum says whether it is right
        raise MobilenetError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Interrupted(f"cannot connect: {getattr(exc, 'reason', exc)}") from None
    with response:
        start = _resume_offset(response, have)
        if start is None:
            part.unlink(missing_ok=True)  # the next attempt asks for the whole file
            raise _Interrupted("the server resumed at another offset than asked")
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        try:
            _write(response, part, start, total, progress)
        except (http.client.HTTPException, OSError) as exc:
            raise _Interrupted(f"transfer cut: {type(exc).__name__}") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"transfer cut after {size} of {total} bytes")


def _resume_offset(response: Any, have: int) -> int | None:
    """Where the response's bytes go: after what we have (a 206 continuing it), from the start (a 200, which
    ignored the Range header), or nowhere (None: a 206 for another range)."""
    if response.status != 206:
        return 0
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return have if match is not None and int(match[1]) == have else None


def _write(response: Any, part: Path, start: int, total: int | None, progress: bool | None) -> None:
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.name[: -len(".part")])
    try:
        with open(part, "r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


# ----------------------------------------------------------------------------------------------------------
# Pretrained models
# ----------------------------------------------------------------------------------------------------------


def pretrained_model(name: str, source: str, **overrides: Any) -> MobileNet:
    """``create_model(name, pretrained=source)``: download (or reuse), verify, convert and load official weights.

    ``name``'s architecture and width pick the file (see :mod:`mobilenet.weights.sources`); its resolution and the
    other options apply on top: ``num_classes`` (or ``include_top=False``) replaces the head with a fresh one.
    """
    from mobilenet.weights.sources import find_file
    from mobilenet.weights.torch_import import model_from_state_dict, read_state_dict

    arch, alpha, resolution = parse_name(name)
    options = {_ALIASES.get(key, key): value for key, value in overrides.items()}
    fixed = sorted(set(options) & _FIXED_BY_WEIGHTS)
    if fixed:
        raise MobilenetError(f"pretrained weights fix {', '.join(fixed)}; leave them out or use pretrained=None")
    entry = find_file(source, arch, alpha)
    if entry.sha256 is None:
        raise MobilenetError(
            f"no published checksum for {entry.url}, so it is not downloaded automatically; fetch and check it "
            f"yourself, then `mobilenet import FILE -o OUT --from-layout {entry.source} --arch {entry.source_name}`"
        )
    path = download(entry.url, entry.sha256, filename=entry.filename)
    model = model_from_state_dict(
        read_state_dict(path),
        entry.source,
        entry.source_name,
        source_name=f"{entry.url} (sha256 {entry.sha256}, {entry.checksum_note})",
    )
    model.weights_info["license"] = entry.license
    return _with_options(model, {"resolution": resolution, **options})


def _with_options(model: MobileNet, options: dict[str, Any]) -> MobileNet:
    """The pretrained model rebuilt with ``options``; layers whose shape changes (the head) start fresh."""
    config = model.config.replace(**options)
    if config == model.config:
        return model
    rebuilt = MobileNet(config)
    target = rebuilt.state_dict()
    kept = {k: v for k, v in model.state_dict().items() if k in target and target[k].shape == v.shape}
    fresh = sorted(set(target) - set(kept))
    if any(not key.startswith(("classifier.", "pre_logits.")) for key in fresh):
        raise MobilenetError(f"options {sorted(options)} change the pretrained body ({fresh[:3]}); leave them out")
    rebuilt.load_state_dict(kept, strict=False)
    rebuilt.weights_info = dict(model.weights_info)
    if fresh:
        rebuilt.weights_info["extra"] = {**model.weights_info.get("extra", {}), "fresh_layers": fresh}
    return rebuilt.eval()
