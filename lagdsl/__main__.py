"""`python -m lagdsl`: the same as the `lagdsl` command."""

from lagdsl.cli import main

if __name__ == "__main__":
    main()
