"""Entry point used by :meth:`Runner.run_python`: ``python -m k3snb.runners._callable JOBDIR``."""

import pickle
import sys
import traceback
from pathlib import Path


def main(job: str) -> int:
    d = Path(job)
    func, args, kwargs = pickle.loads((d / "in.pkl").read_bytes())
    try:
        result = (True, func(*args, **kwargs))
    except BaseException:  # report everything, including SystemExit, to the caller
        result = (False, traceback.format_exc())
    try:
        payload = pickle.dumps(result)
    except Exception:
        payload = pickle.dumps((False, "result not picklable:\n" + traceback.format_exc()))
    (d / "out.pkl").write_bytes(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
