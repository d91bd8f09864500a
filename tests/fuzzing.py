"""What the fuzz tests share: settings, the one-line check, TOML-like values, mutations of valid tables."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Settings of every fuzz test: enough examples to find the odd input, no per-example deadline.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_line(err: Exception) -> None:
    """The documented error: one non-empty line."""
    assert "\n" not in str(err) and str(err), repr(err)


SCALARS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-5, 5),
    st.text(max_size=6),
    st.booleans(),
)
# Anything a TOML file can hold: scalars, arrays and tables, nested.
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def paths(node, prefix=()):
    """Every path (tuple of keys and indices) into a nested dict/list, the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


@st.composite
def mutated(draw, valid: dict, n_max: int = 3):
    """``valid`` with 1 … ``n_max`` random edits: a value replaced, a key deleted, or a key added."""
    data = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, n_max))):
        where = paths(data)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=6))] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
            else:
                parent[path[-1]] = draw(VALUES)
    return data
