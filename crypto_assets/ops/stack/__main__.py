import sys

from crypto_assets.ops.stack.driver import main

sys.exit(main())
