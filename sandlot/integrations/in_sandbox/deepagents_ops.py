# Sent as text to a SandlotBackend's REPL by integrations/deepagents.py; never run on the host.
# Each function prints one JSON object (ASCII only) and nothing else; the host checks
# every field of it, since code in the sandbox can replace these functions.
import json as _sandlot_da_json
import os as _sandlot_da_os
import stat as _sandlot_da_stat
import time as _sandlot_da_time

# Pseudo-filesystems are endless and hold no user files: a walk from / skips them.
_SANDLOT_DA_PRUNE_AT_ROOT = frozenset({"proc", "sys", "dev"})
_SANDLOT_DA_READ_FLAGS = (
    _sandlot_da_os.O_RDONLY | _sandlot_da_os.O_NONBLOCK | _sandlot_da_os.O_NOFOLLOW
)


def _sandlot_da_reply(value):
    print(_sandlot_da_json.dumps(value))


def _sandlot_da_root_error(root, want_dir):
    """The error code for a search root that cannot be searched, or None."""
    try:
        mode = _sandlot_da_os.stat(root).st_mode
    except FileNotFoundError:
        return "path_not_found"
    except PermissionError:
        return "permission_denied"
    except OSError as exc:
        return "os_error: " + type(exc).__name__
    if _sandlot_da_stat.S_ISDIR(mode):
        return None
    if want_dir or not _sandlot_da_stat.S_ISREG(mode):
        return "not_a_directory"
    return None


def _sandlot_da_walk(root, skip_dirs, deadline, max_files, max_bytes):
    """Regular files under directory root, relative to it, links never followed.

    Returns (files, unreadable, cut): cut when the time, count or size budget ran out.
    """
    files = []
    unreadable = 0
    size = 0
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with _sandlot_da_os.scandir(_sandlot_da_os.path.join(root, rel) if rel else root) as it:
                entries = sorted(it, key=lambda entry: entry.name, reverse=True)
        except OSError:
            unreadable += 1
            continue
        for entry in entries:
            if _sandlot_da_time.monotonic() > deadline or len(files) >= max_files:
                return files, unreadable, True
            child = rel + "/" + entry.name if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    at_root = not rel and _sandlot_da_os.path.realpath(root) == "/"
                    if entry.name in skip_dirs or (
                        at_root and entry.name in _SANDLOT_DA_PRUNE_AT_ROOT
                    ):
                        continue
                    stack.append(child)
                elif entry.is_file(follow_symlinks=False):
                    size += len(child) + 8
                    if size > max_bytes:
                        return files, unreadable, True
                    files.append(child)
            except OSError:
                unreadable += 1
    files.sort()
    return files, unreadable, False


def _sandlot_da_glob(root, budget, max_files, max_bytes):
    """The regular files under root; the host matches them against the pattern."""
    error = _sandlot_da_root_error(root, want_dir=True)
    if error is not None:
        _sandlot_da_reply({"error": error})
        return
    deadline = _sandlot_da_time.monotonic() + budget
    files, unreadable, cut = _sandlot_da_walk(root, (), deadline, max_files, max_bytes)
    _sandlot_da_reply({"files": files, "unreadable": unreadable, "cut": cut})


def _sandlot_da_lines(path):
    """The lines of regular file path as text, or None for anything else or binary data."""
    try:
        fd = _sandlot_da_os.open(path, _SANDLOT_DA_READ_FLAGS)
    except OSError:
        return None
    with open(fd, "rb") as handle:
        if not _sandlot_da_stat.S_ISREG(_sandlot_da_os.fstat(fd).st_mode):
            return None
        data = handle.read()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", "surrogateescape").split("\n")


def _sandlot_da_grep(root, pattern, skip_dirs, chosen, budget, max_count, max_bytes):
    """Lines holding pattern, as [relative path, line number, text]; "" is root itself.

    chosen: the host's file with the relative paths to search (its glob filter), or None
    for every regular file under root.
    """
    error = _sandlot_da_root_error(root, want_dir=False)
    if error is not None:
        _sandlot_da_reply({"error": error})
        return
    deadline = _sandlot_da_time.monotonic() + budget
    unreadable = 0
    cut = False
    if not _sandlot_da_os.path.isdir(root):
        targets = [""]
    elif chosen is not None:
        with open(chosen, encoding="utf-8") as handle:
            targets = _sandlot_da_json.load(handle)
        _sandlot_da_os.remove(chosen)
    else:
        targets, unreadable, cut = _sandlot_da_walk(root, skip_dirs, deadline, 1 << 20, 1 << 30)
    matches = []
    size = 0
    for rel in targets:
        if _sandlot_da_time.monotonic() > deadline:
            cut = True
            break
        lines = _sandlot_da_lines(_sandlot_da_os.path.join(root, rel) if rel else root)
        if lines is None:
            continue
        for number, line in enumerate(lines, 1):
            if pattern in line:
                size += len(rel) + len(line) + 16
                if size > max_bytes or (max_count is not None and len(matches) > max_count):
                    cut = True
                    break
                matches.append([rel, number, line])
        if cut:
            break
    _sandlot_da_reply({"matches": matches, "unreadable": unreadable, "cut": cut})
