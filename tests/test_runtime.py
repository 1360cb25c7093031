"""runtime.py: one engine per model and options, built once even when threads race for it."""

import threading
import time

import numpy as np
import pytest

import darkfold
from darkfold import runtime
from darkfold.threads import default_threads


def test_threads_racing_on_a_fresh_model_build_one_engine(monkeypatch):
    built = []

    class SlowEngine(runtime.Engine):
        def __init__(self, *args, **kwargs):
            built.append(1)
            time.sleep(0.2)  # long enough for every thread to arrive while it is built
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runtime, "Engine", SlowEngine)
    model = darkfold.load()
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    results = [None] * 4

    def call(k):
        results[k] = model.forward(x, threads=1)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert all(np.array_equal(r[15], results[0][15]) for r in results)
    runtime.release(model)


def test_an_engine_is_kept_per_model_and_options_and_released_on_request():
    model = darkfold.load()
    assert runtime.engine_for(model, threads=1) is runtime.engine_for(model, threads=1)
    assert runtime.engine_for(model, threads=1, fold=False) is not runtime.engine_for(model, threads=1)
    other = darkfold.load()
    assert runtime.engine_for(other, threads=1) is not runtime.engine_for(model, threads=1)
    runtime.release(model)
    assert model not in runtime._engines and other in runtime._engines
    runtime.release(other)


@pytest.mark.parametrize("layers", [[1.7], [True], ["1"], [1, 2.0], 5, "15"])
def test_layer_indices_must_be_whole_numbers(tiny_model, layers):
    # int(1.7) is 1: forward(layers=[1.7]) ran layer 1.
    x = np.zeros((1, 3, 416, 416), np.float32)
    with pytest.raises(darkfold.ModelError, match=r"layers.*(is not a layer index|expected a list of layer)"):
        tiny_model.forward(x, layers=layers)
    assert list(tiny_model.forward(x, layers=[np.int64(8), 8])) == [8]


def test_more_threads_than_cpus_run_on_the_cpus_with_a_warning(tiny_model):
    cpus = default_threads()
    with pytest.warns(RuntimeWarning, match=f"threads={cpus + 1} is more than the {cpus} CPUs"):
        engine = runtime.engine_for(tiny_model, threads=cpus + 1)
    assert engine.workers.threads == cpus and engine is runtime.engine_for(tiny_model, threads=cpus)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "2"])
def test_threads_must_be_a_whole_number_of_at_least_1(tiny_model, threads):
    with pytest.raises(darkfold.ModelError, match="expected a whole number of at least 1"):
        tiny_model.forward(np.zeros((1, 3, 416, 416), np.float32), threads=threads)
