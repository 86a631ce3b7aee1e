"""Analysis of factorized training: dynamics tracking, comparisons across runs, figures."""
