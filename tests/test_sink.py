"""The sink on its own: redaction across chunk boundaries, escapes for a terminal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandlot.secrets import Redactor
from sandlot.sink import Sink, escape_controls

SECRET = "sk-ünïcode-9f8e7d"
REDACTOR = Redactor({"KEY": SECRET})


def test_controls_but_newline_and_tab_become_visible() -> None:
    assert escape_controls("a\x1b]52;c;eA==\x07\tb\r\n\x9b\x7f") == (
        "a\\x1b]52;c;eA==\\x07\tb\\x0d\n\\x9b\\x7f"
    )
    assert escape_controls("plain ünïcode\n") == "plain ünïcode\n"


def test_a_sink_with_nothing_to_do_hands_back_what_it_got() -> None:
    sink = Sink(Redactor({}))
    data = {"text": ["x\x1b"]}
    assert not sink and sink.data(data) is data and sink.text("x\x1b") == "x\x1b"


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=4))
def test_a_byte_stream_redacts_and_escapes_whatever_the_chunks(cuts: list[int]) -> None:
    data = f"a\x1b[31m{SECRET}\x07 é\n".encode() + b"\xff"
    stream = Sink(REDACTOR, terminal=True).stream()
    out = b""
    last = 0
    for cut in sorted(min(c, len(data)) for c in cuts):
        out += stream.feed(data[last:cut])
        last = cut
    out += stream.feed(data[last:]) + stream.flush()
    assert out.decode() == "a\\x1b[31m[redacted KEY]\\x07 é\n\\xff"


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=4))
def test_a_text_stream_redacts_a_value_split_anywhere(cuts: list[int]) -> None:
    text = f"before {SECRET} after {SECRET}"
    stream = Sink(REDACTOR).text_stream()
    out = ""
    last = 0
    for cut in sorted(min(c, len(text)) for c in cuts):
        out += stream.feed(text[last:cut])
        last = cut
    out += stream.feed(text[last:]) + stream.flush()
    assert out == "before [redacted KEY] after [redacted KEY]"


def test_data_is_walked_keys_included() -> None:
    sink = Sink(REDACTOR)
    assert sink.data({SECRET: [SECRET, 3, (SECRET,)]}) == {
        "[redacted KEY]": ["[redacted KEY]", 3, ["[redacted KEY]"]]
    }
