"""What torchrun starts in the data-parallel tests: `maxact-card`, with one process made to differ.

MAXACT_TEST_RANK_ARGS="1:--seed=1" adds --seed=1 to process 1's command line; MAXACT_TEST_DIE_RANK=1
makes process 1 exit abruptly at its first forward pass (as a killed or crashed worker would).
"""

import os
import sys

rank = os.environ.get("RANK", "0")
extra = os.environ.get("MAXACT_TEST_RANK_ARGS", "")
if extra.startswith(rank + ":"):
    sys.argv.append(extra.split(":", 1)[1])
if os.environ.get("MAXACT_TEST_DIE_RANK") == rank:
    from maxact_card.measure import hooks

    def die(*args, **kwargs):
        os._exit(9)

    hooks.forward.__code__ = die.__code__  # every caller of hooks.forward dies at its first call

from maxact_card.cli import main  # noqa: E402

main()
