"""The remote traceback text: the standard format, less the costly ``^^^`` markers."""

from __future__ import annotations

import re
import traceback

import pytest

from netlet.codec import Codec
from netlet.codec._exceptions import format_traceback


def _deep(n: int) -> int:
    if n == 0:
        raise LookupError("at the bottom", n)
    return _deep(n - 1) + 1


def _chained() -> None:
    try:
        _deep(2)
    except LookupError as e:
        try:
            raise KeyError("wrapped") from e
        except KeyError:
            raise IndexError("while handling")  # noqa: B904 - the context chains


def _caught(func: object, *args: object) -> BaseException:
    try:
        func(*args)  # type: ignore[operator]
    except BaseException as e:
        return e
    raise AssertionError("did not raise")


def _standard_without_markers(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return "\n".join(line for line in text.split("\n")
                     if not re.fullmatch(r"\s*[\^~]+\s*", line))


@pytest.mark.parametrize("exc", [
    _caught(_deep, 0),
    _caught(_deep, 3),  # three identical frames: shown
    _caught(_deep, 40),  # many: collapsed into "[Previous line repeated N more times]"
    _caught(_chained),  # a cause and a context
    _caught(eval, "1 +"),  # a SyntaxError has its own last lines
], ids=["one", "three-repeats", "forty-repeats", "chained", "syntax-error"])
def test_same_text_as_the_traceback_module_less_the_markers(exc: BaseException) -> None:
    assert format_traceback(exc) == _standard_without_markers(exc)


def test_exception_groups_keep_the_standard_format() -> None:
    exc = _caught(lambda: (_ for _ in ()).throw(ExceptionGroup("two", [ValueError(1),
                                                                      KeyError(2)])))
    text = format_traceback(exc)
    assert "ExceptionGroup: two (2 sub-exceptions)" in text
    assert "ValueError: 1" in text
    assert "KeyError: 2" in text


def test_a_sent_exception_carries_it() -> None:
    codec = Codec()
    exc = _caught(_deep, 5)
    out = codec.decode_value(codec.encode_value(exc))
    assert out.remote_traceback == format_traceback(exc)
    assert "_deep(n - 1)" in out.remote_traceback
