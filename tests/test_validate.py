from __future__ import annotations

import math

import pytest

from lrkit._validate import broadcast, choice, positive_float, positive_int


def test_accepts_good_values() -> None:
    assert positive_int(3, "n") == 3 and positive_float(2, "lr") == 2.0 and choice("a", "mode", ["a", "b"]) == "a"
    assert broadcast(0.1, 3, "lr") == [0.1] * 3 and broadcast([1, 2], 2, "seeds") == [1, 2]
    assert broadcast("A", 2, "init") == ["A", "A"]


@pytest.mark.parametrize("fn,args,err,msg", [
    (positive_int, (0, "steps"), ValueError, "steps must be a positive int"),
    (positive_int, (2.0, "steps"), TypeError, "steps must be an int"),
    (positive_int, (True, "steps"), TypeError, "steps must be an int"),
    (positive_float, (-1.0, "lr"), ValueError, "lr must be a positive finite float"),
    (positive_float, (math.inf, "lr"), ValueError, "lr must be a positive finite float"),
    (positive_float, ("0.1", "lr"), TypeError, "lr must be a positive finite float"),
    (choice, ("c", "mode", ["a", "b"]), ValueError, r"mode must be one of \('a', 'b'\), got 'c'"),
    (broadcast, ([1, 2], 3, "seeds"), ValueError, "seeds must be one value or a list of 3"),
])
def test_errors_name_the_argument_and_what_is_allowed(fn, args, err, msg) -> None:
    with pytest.raises(err, match=msg):
        fn(*args)
