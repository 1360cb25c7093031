"""runtime.py: one engine per model and options, built once even when threads race for it."""

import threading
import time

import numpy as np

import darkfold
from darkfold import runtime


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
