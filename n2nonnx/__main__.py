"""``python -m n2nonnx`` is the ``n2nonnx`` command."""

import sys

from n2nonnx.cli import main

sys.exit(main())
