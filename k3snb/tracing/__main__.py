"""``python -m k3snb.tracing {trace,intercept,probe} [options] -- CMD...`` (see ``--help``)."""

import sys

from ._tracer import main

if __name__ == "__main__":
    sys.exit(main())
