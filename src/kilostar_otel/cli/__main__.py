"""``python -m kilostar_otel.cli``."""

import sys

from kilostar_otel.cli import main

sys.exit(main())
