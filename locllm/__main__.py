import sys

from locllm.cli import main

sys.exit(main())
