"""`python -m indexer [--once]`: the same as `patient-search indexer` (one entry point)."""

from __future__ import annotations

import argparse
import sys

from core.logging import configure_logging
from core.settings import configure_normalizers, get_settings
from indexer.runner import start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer", description=__doc__)
    parser.add_argument("--once", action="store_true", help="drain pending changes, then exit")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    configure_normalizers(settings)
    return start(settings, once=args.once)


if __name__ == "__main__":
    sys.exit(main())
