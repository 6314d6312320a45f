import sys

from cai_core.testing.sim_openai.cli import main

if __name__ == "__main__":
    sys.exit(main())
