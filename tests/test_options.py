"""oblique.options: one declared value, one text parser with one set of true/false words, one wording of a
bad value, one error that names its setting."""

from __future__ import annotations

import numpy as np
import pytest

from oblique.options import (
    FALSE_WORDS,
    TRUE_WORDS,
    Option,
    OptionError,
    check_folder,
    is_integer,
    is_number,
    parse_bool,
    parse_text,
)


@pytest.mark.parametrize(
    "option,expected",
    [
        (Option("n", 5, minimum=1, maximum=100), "an integer from 1 to 100"),
        (Option("n", 5, minimum=1), "an integer >= 1"),
        (Option("n", 5, maximum=100), "an integer <= 100"),
        (
            Option("x", 0.5, minimum=0, maximum=1, min_exclusive=True, max_exclusive=True),
            "a number > 0 and < 1",
        ),
        (Option("x", 0.5, minimum=0, maximum=1000.0, min_exclusive=True), "a number > 0 and <= 1000"),
        (Option("x", 0.5, minimum=0.0, maximum=1e6), "a number from 0 to 1000000"),
        (Option("x", 0.5, minimum=1e-3), "a number >= 0.001"),
        (Option("seed", 0, minimum=0, maximum=2**63, max_exclusive=True), "an integer >= 0 and < 2**63"),
        (Option("seed", 0, minimum=0, maximum=2**32 - 1), "an integer from 0 to 4294967295"),
        (Option("form", "closed", choices=("closed", "autograd")), "one of closed, autograd"),
        (Option("on", True), "true or false"),
        (Option("name", "x"), "text"),
        (Option("ms", [0.5], minimum=0, maximum=10), "a list of numbers from 0 to 10"),
        (Option("hp", {}), "a table of NAME = VALUE"),
    ],
)
def test_what_is_valid_is_said_in_one_wording(option, expected):
    assert option.expected() == expected


def test_the_error_names_the_setting_or_the_table_that_holds_it():
    iters = Option("iters", 5, "Newton iterations", minimum=1, maximum=100)
    with pytest.raises(OptionError) as e:
        iters.convert("0")
    assert str(e.value) == "iters must be an integer from 1 to 100; got '0'" and e.value.settings == (
        "iters",
    )
    with pytest.raises(OptionError) as e:
        iters.convert(1000, table="hp", of="oni")
    assert str(e.value) == "hp iters must be an integer from 1 to 100; got 1000 (oni)"
    assert e.value.settings == ("hp",)
    assert e.value.render(lambda s: "--" + s) == "--hp iters must be an integer from 1 to 100; got 1000 (oni)"
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "option,given,want",
    [
        (Option("n", 5), "5000", 5000),
        (Option("n", 5), " 1e3 ", 1000),
        (Option("n", 5), 7.0, 7),
        (Option("n", 5), np.int64(3), 3),
        (Option("x", 0.5), "0.8", 0.8),
        (Option("x", 0.5), 1, 1.0),
        (Option("x", 0.5), np.float32(0.25), 0.25),
        (Option("b", False), "ON", True),
        (Option("b", False), "no", False),
        (Option("b", False), True, True),
        (Option("s", "x", choices=("a", "b")), "b", "b"),
        (Option("t", 1, optional=True), None, None),
    ],
)
def test_convert_reads_text_and_numbers_as_the_kind(option, given, want):
    got = option.convert(given)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    "option,given",
    [
        (Option("n", 5), "2.5"),
        (Option("n", 5), 2.5),
        (Option("n", 5), "abc"),
        (Option("n", 5), True),  # true and false are never numbers
        (Option("n", 5), float("inf")),
        (Option("x", 0.5), "nan"),
        (Option("x", 0.5), float("inf")),
        (Option("x", 0.5), 10**400),  # too large for a float: refused, not an OverflowError
        (Option("x", 0.5), "1" + "0" * 400),
        (Option("x", 0.5), False),
        (Option("b", False), 1),  # nor numbers true or false
        (Option("b", False), "maybe"),
        (Option("b", False), ""),
        (Option("s", "x", choices=("a", "b")), "c"),
        (Option("s", "x"), 3),
        (Option("n", 5), None),
        (Option("n", 5, minimum=1), 0),
        (Option("x", 0.5, minimum=0, min_exclusive=True), 0.0),
        (Option("x", 0.5, maximum=1, max_exclusive=True), "1"),
    ],
)
def test_convert_refuses_what_is_not_valid_with_the_value_as_given(option, given):
    with pytest.raises(OptionError, match=r" must be .*; got ") as e:
        option.convert(given)
    assert e.value.settings == (option.name,) and "\n" not in str(e.value)


def test_check_converts_nothing_and_check_kind_leaves_the_bounds():
    epochs = Option("epochs", None, kind="int", minimum=1, maximum=10)
    assert epochs.check(3) == 3 and epochs.check_kind(None) is None  # None: filled in later
    for bad in ("3", 3.0, True, None, 0):
        with pytest.raises(OptionError, match=r"^epochs must be an integer from 1 to 10; got "):
            epochs.check(bad)
    assert epochs.check_kind(0) == 0  # of the kind; out of bounds is check's to say
    with pytest.raises(OptionError, match=r"^epochs must be an integer from 1 to 10; got '3'$"):
        epochs.check_kind("3")
    milestones = Option("milestones", None, kind="floats", minimum=0, maximum=10)
    assert milestones.check([0, 2.5]) == [0, 2.5]
    for bad in ([1, "x"], [11], [float("nan")], 3):
        with pytest.raises(OptionError):
            milestones.check(bad)


def test_an_option_without_a_kind_is_a_programming_error():
    with pytest.raises(TypeError, match="give its kind"):
        Option("lr", None)


def test_one_set_of_true_false_words_in_any_case():
    for word in TRUE_WORDS:
        assert parse_bool(word) is True and parse_bool(word.upper()) is True and parse_bool(word.title())
    for word in FALSE_WORDS:
        assert parse_bool(word) is False and parse_bool(word.upper()) is False
    assert set(TRUE_WORDS) == {"true", "yes", "on", "1"} and set(FALSE_WORDS) == {"false", "no", "off", "0"}
    for other in ("maybe", "", "y", "n", "t", "f", "2", "1.0", "none", "enabled"):
        with pytest.raises(ValueError):
            parse_bool(other)


def test_parse_text_reads_each_kind():
    assert parse_text("12", "int") == 12 and parse_text("-3", "int") == -3
    assert parse_text("1e-3", "float") == 1e-3 and parse_text("0.5,1, 2", "floats") == [0.5, 1.0, 2.0]
    assert parse_text("conv", "str") == "conv" and parse_text("off", "bool") is False
    for text, kind in (("x", "int"), ("1.5", "int"), ("x", "float"), ("1,x", "floats")):
        with pytest.raises(ValueError):
            parse_text(text, kind)


def test_numbers_and_integers_are_told_one_way():
    assert is_integer(3) and not is_integer(True) and not is_integer(3.0)
    assert is_number(3) and is_number(0.5) and not is_number(True) and not is_number("1")
    assert not is_number(float("nan")) and is_number(float("nan"), finite=False)
    assert not is_number(float("inf")) and is_number(float("-inf"), finite=False)


def test_a_folder_setting_is_checked_in_one_place(tmp_path):
    (tmp_path / "FILE").write_text("a file\n")
    assert check_folder("out", str(tmp_path / "new")) == str(tmp_path / "new")
    assert check_folder("out", str(tmp_path)) == str(tmp_path)
    with pytest.raises(OptionError, match=r"^out must be a folder name \(not empty\); got ''$"):
        check_folder("out", "")
    with pytest.raises(OptionError, match=r"^out must be a folder name \(not empty\); got 5$"):
        check_folder("out", 5)
    with pytest.raises(OptionError, match=r"^data_root must be a folder name; got 'a\\x00b'$"):
        check_folder("data_root", "a\0b", existing=False)
    with pytest.raises(OptionError, match=r"exists and is not a folder") as e:
        check_folder("out", str(tmp_path / "FILE"))
    assert e.value.settings == ("out",)
    assert check_folder("data_root", str(tmp_path / "FILE"), existing=False)  # only its name is checked

    class StudyLike(OptionError):
        pass

    with pytest.raises(StudyLike):
        check_folder("out", "", error=StudyLike)


def test_every_declared_value_is_one_type_with_one_error():
    from oblique.config import ConfigError
    from oblique.data import DATA_OPTIONS, DataOption, DataOptionError
    from oblique.methods import REGISTRY, Hyper

    assert Hyper is Option and DataOption is Option
    assert ConfigError is OptionError and DataOptionError is OptionError
    assert all(isinstance(h, Option) for cls in REGISTRY.values() for h in cls.hyperparameters)
    assert all(isinstance(o, Option) for options in DATA_OPTIONS.values() for o in options.values())
