"""`python -m initiator.ctl`: run uiscsictl."""

import sys

from .uiscsictl import main

sys.exit(main())
