"""Training scripts as real projects write them, run unchanged by `python -m linreg watch`
(tests/test_watch.py). Each is correct; its twin is the same file with one line replaced."""
