"""Two processes contend for the run lock of a fresh folder in each trial (tests/test_run_lock.py).

    python tests/lock_contention.py ROOT TRIALS [RUN_DIR_PY]

Both processes wait at a barrier, then for 20 ms each takes `run_lock(ROOT/trial-N)` again and again:
the one that gets it counts itself into a shared counter, holds the lock 1 ms, counts itself out and
releases it; a refused one tries again at once. A trial in which the counter reached 2 had both
processes holding the lock at the same time. RUN_DIR_PY: a file defining
`run_lock` to test instead of pact_cotrain.training.run_dir (e.g. an older version of it).
Prints `both_held: X of N`, `held: Y` (the number of times either process held it) and `errors: Z`
(attempts that failed other than by the refusal).
"""

import importlib.util
import multiprocessing as mp
import os
import sys
import time


def load_run_lock(path: str | None):
    if path is None:
        from pact_cotrain.training.run_dir import run_lock

        return run_lock
    spec = importlib.util.spec_from_file_location("run_dir_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_lock


def worker(root, trials, module_path, barrier, inside, both, held, errors):
    run_lock = load_run_lock(module_path)
    for trial in range(trials):
        folder = os.path.join(root, f"trial-{trial}")
        os.makedirs(folder, exist_ok=True)
        barrier.wait()
        deadline = time.monotonic() + 0.02
        while time.monotonic() < deadline:  # take it, hold it, let it go, take it again: both at once
            try:
                with run_lock(folder, log=lambda *_: None):
                    with inside.get_lock():
                        inside.value += 1
                        if inside.value > 1:
                            both[trial] = 1
                    with held.get_lock():
                        held.value += 1
                    time.sleep(0.001)
                    with inside.get_lock():
                        inside.value -= 1
            except Exception as exc:  # the refusal (RunError); anything else is counted as an error
                if "in use by another run" not in str(exc):
                    with errors.get_lock():
                        errors.value += 1
        barrier.wait()


def main():
    root, trials = sys.argv[1], int(sys.argv[2])
    module_path = sys.argv[3] if len(sys.argv) > 3 else None
    ctx = mp.get_context("fork")
    barrier, inside, held, errors = ctx.Barrier(2), ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    both = ctx.Array("i", trials)
    workers = [ctx.Process(target=worker, args=(root, trials, module_path, barrier, inside, both, held, errors))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]
    print(f"both_held: {sum(both)} of {trials}")
    print(f"held: {held.value}")
    print(f"errors: {errors.value}")


if __name__ == "__main__":
    main()
