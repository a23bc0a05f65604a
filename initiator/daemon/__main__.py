"""`python -m initiator.daemon`: run uiscsid."""

import sys

from .uiscsid import main

sys.exit(main())
