"""File writing that survives a kill: every final file appears whole (temp name + rename) or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptbake.core.config import InputError

MARKER = ".promptbake-output.json"
"""Written into every directory promptbake writes whole ({"kind": ..., "written_by": "promptbake"}): only a
directory that holds it (of the same kind) is ever replaced; anything else at an output path is the user's."""


def current_umask() -> int:
    """The process's umask, from /proc where there is one: os.umask can only read it by setting it, and a file
    another thread creates in that instant would get the wrong permissions."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`. The file gets the
    permissions a plain `open` would give it (mkstemp's are 0600: unreadable to a server under another user)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows to a journal and fsync, so that a kill loses at most a partly written last line."""
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def recover_journal(path: str | Path) -> list[dict]:
    """Read a journal written by `append_jsonl`. A kill mid-write can leave a torn last line: it is cut
    off the file, so that the next append starts on a clean line, and its record is simply redone."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # everything up to the last newline was fsynced whole
    if len(complete) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for a user-given JSONL file, with errors that name the line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.rstrip("\r\n"))  # so an error's column is on this line
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None


def read_marker(path: Path) -> dict | None:
    """The marker of a directory promptbake wrote, or None."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("written_by") == "promptbake" else None


def mark_output(path: Path, kind: str, about: dict | None = None) -> None:
    """Mark `path` as promptbake's output of `kind` (`about`: what else the marker records, e.g. its source)."""
    write_json(path / MARKER, {"kind": kind, "written_by": "promptbake",
                               "written_at": time.strftime("%Y-%m-%d %H:%M:%S"), **(about or {})})


def describe_contents(path: Path, limit: int = 5) -> str:
    """What a directory holds, for a refusal: `3 entries: notes.txt, sub/, x.bin`."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if p.name != MARKER)
    shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def check_output_dir(final: str | Path, kind: str, *, force: bool = True,
                     legacy: Callable[[Path], bool] | None = None, flag: str = "--force") -> dict | None:
    """Refuse (InputError) to replace `final` unless it is missing, empty, or a promptbake output of `kind`;
    with `force=False` a promptbake output is refused too, naming `flag`. `legacy(final)` recognises an output
    of this kind written before promptbake marked its outputs. Returns the marker of what will be replaced
    (None: nothing is)."""
    final = Path(final)
    check_creatable(final)
    if not final.exists() and not final.is_symlink():
        return None
    if not final.is_dir() or final.is_symlink():
        raise InputError(f"{final}: exists and is {'a link' if final.is_symlink() else 'a file'}, not a {kind} "
                         "directory promptbake wrote: choose another path or move it away")
    if not any(final.iterdir()):
        return None
    marker = read_marker(final)
    if marker is None and legacy is not None and legacy(final):
        marker = {"kind": kind, "written_by": "promptbake"}
    if marker is None:
        raise InputError(f"{final}: exists and holds files promptbake did not write ({describe_contents(final)}); "
                         f"it writes a {kind} only into an empty directory or over its own: choose another path or "
                         "move them away")
    if marker.get("kind") != kind:
        raise InputError(f"{final}: holds a promptbake {marker.get('kind')} output, not a {kind} one "
                         f"({describe_contents(final)}): choose another path or move it away")
    if not force:
        raise InputError(f"{final}: holds {describe_output(final, marker)}; {flag} replaces it")
    return marker


def check_creatable(path: str | Path) -> None:
    """Refuse (InputError naming it) an output path that cannot be made: below a file, or in a directory this
    user cannot write. Checked before anything is written, instead of the traceback of the first mkdir."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if existing != path and not existing.is_dir():
        raise InputError(f"{path}: cannot be made: {existing} is a file, not a directory")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot be written: {existing} is not writable by this user")


def describe_output(path: Path, marker: dict) -> str:
    """`a promptbake export of runs/x/sft, written 2026-01-01 10:00:00 (3 entries: ...)`, from its marker."""
    origin = f" of {marker['source']}" if marker.get("source") else ""
    when = f", written {marker['written_at']}" if marker.get("written_at") else ""
    return f"a promptbake {marker['kind']}{origin}{when} ({describe_contents(path)})"


@contextmanager
def atomic_dir(final: str | Path, kind: str, *, legacy: Callable[[Path], bool] | None = None,
               about: dict | None = None) -> Iterator[Path]:
    """Yield a temporary directory next to `final` to fill; on success it replaces `final` by a rename, on any
    failure (a kill included: the temporary name is all that is left) it is removed. A directory under a final
    name is therefore always complete. It is marked as promptbake's output of `kind` (with `about` in the
    marker), and it replaces only such an output (`check_output_dir`): anything else at `final` is refused
    before the temporary directory is made."""
    final = Path(final)
    check_output_dir(final, kind, legacy=legacy)
    final.parent.mkdir(parents=True, exist_ok=True)
    # a write killed earlier left its temporary directory, marked as ours and in progress: it goes now
    for stale in final.parent.glob(f".{final.name}.*"):
        marker = read_marker(stale) if stale.is_dir() and not stale.is_symlink() else None
        if marker is not None and marker.get("kind") == kind and marker.get("in_progress"):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide the output from other users
        mark_output(tmp, kind, {**(about or {}), "in_progress": True})  # replaced by the final marker below
        yield tmp
        mark_output(tmp, kind, about)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
