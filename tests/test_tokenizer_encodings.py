"""What every route encodes to, pinned bit for bit.

The digests below were computed with the tokenizer as it was before its route features were rewritten
in plain Python (numpy reductions, commit a48c9a7): every shipped model was trained on those values, so
any change to a route's ids or coords (a sum added in another order, hypot for sqrt, a float32 rounding
dropped) fails here. The synthetic database (tests/fakeboard.py) guards it everywhere; the real data,
where present, covers every real route (up to 69 holds, where numpy's pairwise summation matters).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pytest

from climbgrade_runtime.boardlib_db import ClimbFilter
from climbgrade_runtime.graded import LoadedData, load_examples
from climbgrade_runtime.route_features import RouteGeometry, all_route_features, numpy_mean, numpy_std, numpy_sum
from climbgrade_runtime.tokenizer import FEATURES, PLACEMENT, PLACEMENT_ROLE, UNK_ID, ResolvedRoute, Tokenizer

from conftest import REAL_DATA

# (digest of every route's ids and coords, how many of their holds are <UNK>) per hold-token scheme
FAKE_ENCODINGS = {
    PLACEMENT_ROLE: ("9df6a57ed47245c1e36f3b974b60e38701a6e8295b4008cdac51f5064cd42ae2", 21),
    PLACEMENT: ("baeedeb3fb6fb2ce68a2e1a6ae9534c8740dbb869c51754dd94631f5ddd209bc", 0),
}
REAL_ENCODINGS = ("a6c082cb87ab09212a6a0364dd3b64efe6d352af2fdfde38448108e41ae74d7a", 354)
# all_route_features, float64, as bench/gbm.py reads them
FAKE_ROUTE_FEATURES = "17534356a7014b22ebf1432e0df0f391d9b88c468023b182976877cef64776eb"
REAL_ROUTE_FEATURES = "6e31ad8693aa5a474ab33aaea269409858ba1ecf4a5554fc5f09c7cd174b7586"


def every_feature_tokenizer(data: LoadedData, scheme: str) -> Tokenizer:
    """Every feature the tokenizer knows; a vocabulary of every other row's holds, so that the rows
    between them have holds mapped to <UNK> too."""
    routes = [example.route for example in data.examples]
    return Tokenizer.build(data.layouts.values(), routes[::2], data.max_len, hold_tokens=scheme, features=FEATURES)


def encodings_digest(tokenizer: Tokenizer, routes: Iterable[ResolvedRoute]) -> tuple[str, int]:
    """sha256 of every route's ids and coords bytes, in order; and how many holds were <UNK>."""
    digest, unknown = hashlib.sha256(), 0
    for route in routes:
        encoded = tokenizer.encode_resolved(route)
        digest.update(encoded.ids.tobytes())
        digest.update(encoded.coords.tobytes())
        unknown += int((encoded.ids == UNK_ID).sum())
    return digest.hexdigest(), unknown


def route_features_digest(routes: Iterable[ResolvedRoute]) -> str:
    """sha256 of every route's all_route_features (float64) bytes, in order."""
    digest = hashlib.sha256()
    for route in routes:
        values = all_route_features(RouteGeometry.of(route.layout, route.holds))
        assert values.dtype == np.float64
        digest.update(values.tobytes())
    return digest.hexdigest()


def test_sums_means_and_spreads_round_as_numpys() -> None:
    rng = np.random.default_rng(0)
    for n in range(1, 300):  # past 8 (eight running sums) and 128 (halves)
        values = rng.normal(size=n) * 10.0 ** rng.uniform(-3, 3, size=n)
        as_list = values.tolist()
        assert numpy_sum(as_list) == float(values.sum()), n
        assert numpy_mean(as_list) == float(values.mean()), n
        assert numpy_std(as_list) == float(values.std()), n


@pytest.fixture(scope="module")
def fake_data(fake_dbs: tuple[str, str]) -> LoadedData:
    return load_examples(fake_dbs, ClimbFilter())


@pytest.mark.parametrize("scheme", [PLACEMENT_ROLE, PLACEMENT])
def test_synthetic_encodings_are_the_pinned_ones(fake_data: LoadedData, scheme: str) -> None:
    tokenizer = every_feature_tokenizer(fake_data, scheme)
    assert encodings_digest(tokenizer, [example.route for example in fake_data.examples]) == FAKE_ENCODINGS[scheme]


def test_synthetic_route_features_are_the_pinned_ones(fake_data: LoadedData) -> None:
    assert route_features_digest(example.route for example in fake_data.examples) == FAKE_ROUTE_FEATURES


@pytest.fixture(scope="module")
def real_data() -> LoadedData:
    if REAL_DATA is None:
        pytest.skip("../shared/data (or $CLIMBGRADE_DATA) is not present")
    return load_examples([str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db")], ClimbFilter())


def test_every_real_route_encodes_to_the_pinned_bits(real_data: LoadedData) -> None:
    tokenizer = every_feature_tokenizer(real_data, PLACEMENT_ROLE)
    assert max(len(example.route.holds) for example in real_data.examples) >= 16  # numpy sums 16+ values in 8 lanes
    assert encodings_digest(tokenizer, [example.route for example in real_data.examples]) == REAL_ENCODINGS


def test_every_real_route_has_the_pinned_route_features(real_data: LoadedData) -> None:
    assert route_features_digest(example.route for example in real_data.examples) == REAL_ROUTE_FEATURES
