"""`python -m specrepro.bench <bench> ...`: runs the bench CLI (see specrepro.bench)."""

from specrepro.bench import main

if __name__ == "__main__":
    main()
