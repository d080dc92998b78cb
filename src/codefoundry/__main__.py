"""`python -m codefoundry` is the same as the `codefoundry` console script."""

from codefoundry.cli import main

if __name__ == "__main__":
    main()
