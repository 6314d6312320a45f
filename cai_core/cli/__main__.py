"""`python -m cai_core.cli ...`: the `cai` command."""
from cai_core.cli.main import main

if __name__ == "__main__":
    main()
