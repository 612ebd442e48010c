"""Property tests: on small integer data (exact distances, many ties) the search
must equal the float64 oracle exactly, for any shape, k and batch size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import oracle_kneighbors

import knn_gpu


@st.composite
def problems(draw):
    num_train = draw(st.integers(1, 400))
    num_features = draw(st.integers(1, 4))
    num_queries = draw(st.integers(0, 12))
    values = st.integers(-3, 3)
    train = np.asarray(
        draw(
            st.lists(
                st.lists(values, min_size=num_features, max_size=num_features), min_size=num_train, max_size=num_train
            )
        )
    )
    queries = np.asarray(
        draw(
            st.lists(
                st.lists(values, min_size=num_features, max_size=num_features),
                min_size=num_queries,
                max_size=num_queries,
            )
        )
    ).reshape(num_queries, num_features)
    k = draw(st.integers(1, num_train))
    batch_size = draw(st.one_of(st.none(), st.integers(1, 5)))
    metric = draw(st.sampled_from(["euclidean", "sqeuclidean"]))
    return train.astype(np.float32), queries.astype(np.float32), k, batch_size, metric


@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict"])
@settings(max_examples=150, deadline=None)
@given(problem=problems())
def test_search_equals_oracle_on_integer_data(backend_name, problem):
    train, queries, k, batch_size, metric = problem
    if backend_name == "numpy":
        to_backend, to_numpy = np.asarray, np.asarray
    else:
        xp = pytest.importorskip("array_api_strict")
        device = xp.Device("device1")

        def to_backend(array):
            return xp.asarray(array, device=device)

        def to_numpy(array):
            return np.from_dlpack(array)

    distances, indices = knn_gpu.kneighbors(
        to_backend(queries), to_backend(train), k, metric=metric, batch_size=batch_size
    )
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k, metric)
    np.testing.assert_array_equal(to_numpy(indices), expected_indices)
    np.testing.assert_allclose(to_numpy(distances), expected_distances, rtol=1e-6)
