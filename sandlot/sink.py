"""The one place a sandbox's output passes on its way to a person or a file.

Whatever sandboxed code prints may hold a secret the sandbox was given, and
may hold bytes a terminal acts on (OSC 52 writes the clipboard, OSC 0 sets the
window title, OSC 8 makes links, CSI moves the cursor and recolours text). A
:class:`Sink` does two things, in this order:

1. it replaces every secret value with ``[redacted NAME]``
   (:class:`sandlot.secrets.Redactor`), for every destination: notebook cells
   and their saved file, replies to MCP clients, transcripts and trajectories,
   logs, the command line;
2. for a terminal only, it shows every control character other than newline
   and tab as a visible escape: ESC becomes the four characters ``\\x1b``, BEL
   ``\\x07``, a carriage return ``\\x0d``, a C1 control such as U+009B ``\\x9b``;
   bytes that are not UTF-8 become ``\\xNN`` too. The command lines that print a
   sandbox's output take ``--raw`` to pass it through unescaped (still redacted).

Output piped to a file or another program is never escaped, so binary output
stays byte for byte what the sandbox wrote, less the secrets.

Files that may hold a sandbox's output are created with mode 0600
(:data:`PRIVATE`): notebooks, transcripts, trajectories, logs.

With no secrets configured and no terminal a sink passes text through as it
is, at the cost of one attribute test.
"""

from __future__ import annotations

import codecs
import os
import re
from typing import IO, Any

from .secrets import Redactor, StreamRedactor

PRIVATE = 0o600  # the mode of every file that may hold a sandbox's output
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but \t and \n, DEL, C1


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that creates the file with mode 0600, and makes
    an existing one 0600: ``open(path, "a", opener=private_opener)``."""
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _visible(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def escape_controls(text: str) -> str:
    """``text`` with each control character but newline and tab written as ``\\xNN``."""
    return _CONTROLS.sub(_visible, text)


class Sink:
    """Makes a sandbox's output fit to show or keep: secrets redacted, and on a terminal
    control characters escaped.

    >>> from sandlot.secrets import Redactor
    >>> Sink(Redactor({"KEY": "s3cret"}), terminal=True).text("KEY=s3cret\\x1b]0;t\\x07")
    'KEY=[redacted KEY]\\\\x1b]0;t\\\\x07'
    """

    def __init__(self, redactor: Redactor | None = None, *, terminal: bool = False) -> None:
        """``terminal``: the output goes to a terminal (escape control characters)."""
        self.redactor = redactor if redactor else None
        self.terminal = terminal

    @classmethod
    def to(cls, stream: IO[Any], redactor: Redactor | None = None, *, raw: bool = False) -> Sink:
        """A sink for output written to ``stream``: it escapes when ``stream`` is a
        terminal, unless ``raw``."""
        isatty = getattr(stream, "isatty", None)
        return cls(redactor, terminal=not raw and callable(isatty) and bool(isatty()))

    def __bool__(self) -> bool:
        """Whether this sink changes anything at all."""
        return self.redactor is not None or self.terminal

    def text(self, text: str) -> str:
        """``text`` as it may be shown or kept."""
        if self.redactor is not None:
            text = self.redactor.redact(text)
        return escape_controls(text) if self.terminal else text

    def bytes(self, data: bytes) -> bytes:
        """``data`` as it may be shown or kept (for a terminal, as UTF-8 with escapes)."""
        stream = self.stream()
        return stream.feed(data) + stream.flush()

    def data(self, value: Any) -> Any:
        """``value`` (JSON-like: dicts, lists, tuples, strings, bytes) with every string
        and bytes, dict keys included, made fit to show; other leaves are kept.

        A numpy array of strings, bytes or records that held something to change
        comes back as a list.
        """
        if not self:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            return self.bytes(bytes(value))
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if isinstance(kind, str) and kind not in "biufcmM":  # not a plain numeric array
            items = value.tolist()
            cleaned = self.data(items)
            return value if cleaned == items else cleaned
        return value

    def stream(self) -> ByteStream:
        """A filter for one byte stream that arrives in chunks (a process's stdout)."""
        return ByteStream(self)

    def text_stream(self) -> TextStream:
        """A filter for one text stream that arrives in chunks (a kernel's stdout)."""
        return TextStream(self)


class ByteStream:
    """One chunked byte stream through a :class:`Sink`.

    A secret split across two chunks is still redacted (the last bytes that
    could begin one are held until the next chunk), and on a terminal a UTF-8
    character split across chunks is decoded whole. :meth:`flush` gives what is
    held once the stream ends.
    """

    def __init__(self, sink: Sink) -> None:
        self._redact: StreamRedactor | None = sink.redactor.stream() if sink.redactor else None
        self._decoder = (
            codecs.getincrementaldecoder("utf-8")("backslashreplace") if sink.terminal else None
        )

    def feed(self, data: bytes) -> bytes:
        """The part of the stream so far that is safe to show or keep."""
        if self._redact is not None:
            data = self._redact.feed(data)
        if self._decoder is not None:
            data = escape_controls(self._decoder.decode(data)).encode()
        return data

    def flush(self) -> bytes:
        """What is held back, once the stream has ended."""
        data = self._redact.flush() if self._redact is not None else b""
        if self._decoder is not None:
            data = escape_controls(self._decoder.decode(data, final=True)).encode()
        return data


class TextStream:
    """One chunked text stream through a :class:`Sink`; see :class:`ByteStream`."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._bytes = sink.stream() if sink.redactor is not None else None
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")

    def feed(self, text: str) -> str:
        """The part of the stream so far that is safe to show or keep."""
        if self._bytes is None:
            return self._sink.text(text)
        return self._decoder.decode(self._bytes.feed(text.encode("utf-8", "surrogatepass")))

    def flush(self) -> str:
        """What is held back, once the stream has ended."""
        if self._bytes is None:
            return ""
        return self._decoder.decode(self._bytes.flush(), final=True)
