"""Secrets: values from the host's environment or a ``.env`` file, kept out of sight.

A sandbox gets secrets two ways: ``SandboxConfig.secrets`` names host
environment variables, and ``SandboxConfig.env_file`` names a ``.env`` file
whose every entry is a secret. The values are read when a sandbox starts and go
into its environment through a descriptor, never a command line; they are never
stored in the config, so printing a config shows none of them.

Where sandlot shows a sandbox's output to an LM or a person, or saves it (RLM
turns and trajectories, DSPy's interpreter, notebook sessions and their files,
MCP replies, experiment transcripts, the CLI's terminal), a :class:`Redactor`
replaces every secret value with ``[redacted NAME]``; :mod:`sandlot.sink` is
where output meets it. Values shorter than
``MIN_REDACTED`` characters are not redacted: they would match everywhere and
carry little; do not keep a secret that short.

``.env`` syntax: ``KEY=VALUE`` lines, an optional ``export`` before the key,
``#`` comments on their own line or after an unquoted value (after a space),
blank lines. A value in single quotes is taken as it is; in double quotes,
``\\n``, ``\\t``, ``\\"`` and ``\\\\`` are escapes. No ``${VAR}`` expansion. Any
other line is an error naming the file and the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import SandboxConfig

MIN_REDACTED = 4
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The entries of a ``.env`` file; a malformed line is a ConfigError with file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"env file {os.fspath(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"env file {os.fspath(path)!r} cannot be read: {exc}") from None
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            key, value = _parse_line(stripped)
        except ValueError as exc:
            # The line is not shown: it may hold a secret.
            raise ConfigError(f"{os.fspath(path)}:{number}: {exc}") from None
        found[key] = value
    return found


def _parse_line(line: str) -> tuple[str, str]:
    if line.startswith("export ") or line.startswith("export\t"):
        line = line[len("export") :].lstrip()
    key, sep, rest = line.partition("=")
    key = key.strip()
    if not sep:
        raise ValueError("expected KEY=VALUE")
    if not _KEY.match(key):
        raise ValueError("the text before '=' is not an environment variable name")
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        value, end = _quoted(rest, quote)
        tail = rest[end:].strip()
        if tail and not tail.startswith("#"):
            raise ValueError(f"unexpected text after the closing {quote}")
        return key, value
    comment = re.search(r"\s#", rest)
    return key, (rest[: comment.start()] if comment else rest).rstrip()


def _quoted(text: str, quote: str) -> tuple[str, int]:
    """The value inside the quotes at the start of ``text``, and the index after the closing one."""
    out: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and quote == '"' and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise ValueError(f"the value's {quote} is not closed (a value is one line)")


def secret_values(config: SandboxConfig) -> dict[str, str]:
    """The secrets a sandbox with ``config`` gets: its env file's entries and its named secrets.

    Raises ConfigError when a named secret is not set on the host or the env
    file cannot be read. A name in both takes the host environment's value.
    """
    values = read_env_file(config.env_file) if config.env_file is not None else {}
    source = config._secret_values if config._secret_values is not None else os.environ
    values.update(named_secrets(config.secrets, source))
    return values


def all_secret_values(*configs: SandboxConfig | None) -> dict[str, str]:
    """The secrets the sandboxes with ``configs`` get, together (None entries are skipped)."""
    values: dict[str, str] = {}
    for config in configs:
        if config is not None:
            values.update(secret_values(config))
    return values


def named_secrets(names: list[str], source: Mapping[str, str]) -> dict[str, str]:
    """The values of ``names`` in ``source`` (the environment); ConfigError for any not set."""
    missing = [name for name in names if name not in source]
    if missing:
        raise ConfigError(
            f"secrets: {', '.join(missing)} not set in the host environment; "
            "set them, or remove them from SandboxConfig.secrets (or --secret)"
        )
    return {name: source[name] for name in names}


def carry_secrets(config: SandboxConfig, values: Mapping[str, str]) -> None:
    """Give ``config`` its named secrets' values from ``values``, not this process's environment.

    A session server starts sandboxes for clients whose environment it does not
    share: the client reads the values and sends them along.
    """
    config._secret_values = named_secrets(config.secrets, values)


class Redactor:
    """Replaces secret values in text with ``[redacted NAME]``.

    >>> Redactor({"API_KEY": "sk-12345"}).redact("key=sk-12345")
    'key=[redacted API_KEY]'
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a value that contains another is replaced whole.
        kept = sorted(
            ((v, k) for k, v in secrets.items() if len(v) >= MIN_REDACTED),
            key=lambda item: -len(item[0]),
        )
        self._names = {value: name for value, name in kept}
        self._text = re.compile("|".join(re.escape(v) for v, _ in kept)) if kept else None
        self._bytes = (
            re.compile(b"|".join(re.escape(v.encode()) for v, _ in kept)) if kept else None
        )
        self.longest = max((len(v.encode()) for v, _ in kept), default=0)

    @classmethod
    def for_config(cls, config: SandboxConfig) -> Redactor:
        """A redactor for the secrets a sandbox with ``config`` gets."""
        return cls(secret_values(config))

    def __bool__(self) -> bool:
        return self._text is not None

    def redact(self, text: str) -> str:
        """``text`` with every secret value replaced."""
        if self._text is None or not text:
            return text
        return self._text.sub(lambda m: f"[redacted {self._names[m.group()]}]", text)

    def redact_bytes(self, data: bytes) -> bytes:
        """``data`` with every secret value (as UTF-8) replaced."""
        if self._bytes is None or not data:
            return data
        return self._bytes.sub(
            lambda m: f"[redacted {self._names[m.group().decode()]}]".encode(), data
        )

    def stream(self) -> StreamRedactor:
        """A redactor for a byte stream that arrives in chunks."""
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts a chunked byte stream: a value split across two chunks is still caught.

    ``feed`` returns what can be shown now and holds back the last bytes that
    could begin a secret value (fewer than its longest value); ``flush`` returns
    what is held once the stream ends.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """The part of the stream so far that is safe to show."""
        pattern = self.redactor._bytes
        if pattern is None:
            return data
        text = self._held + data
        # Only the last (longest - 1) bytes can be the start of a value still arriving.
        cut = max(0, len(text) - (self.redactor.longest - 1))
        out: list[bytes] = []
        done = 0
        for match in pattern.finditer(text):
            if match.start() >= cut:
                break
            out += [text[done : match.start()], self.redactor.redact_bytes(match.group())]
            done, cut = match.end(), max(cut, match.end())
        out.append(text[done:cut])
        self._held = text[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The bytes held back, redacted."""
        held, self._held = self._held, b""
        return self.redactor.redact_bytes(held)
